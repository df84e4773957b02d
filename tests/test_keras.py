"""The Keras backend (nnspam/learning/keras_backend.py): same networks, NumPy serves
what Keras trained.

Skipped only where TensorFlow is not installed and CI is unset (CI installs the keras extra).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nnspam.config import DEFAULTS, merge
from nnspam.learning import keras_backend
from nnspam.learning.arch import MLP
from nnspam.learning.network import Network
from nnspam.mail.corpus import load_split_samples
from nnspam.services.runs.training import Recipe, tokenize_samples, train_model

from conftest import ROOT, SMS_FILE, SMS_SPLIT, make_message, needs_corpora

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not keras_backend.available() and not os.environ.get("CI"),
    reason="TensorFlow/Keras not installed (pip install -e '.[keras]'; CI installs it)",
)]

SMALL_ARCH = {
    "deep": {"ngram": 2, "size": 500, "layers": [32, 16], "dropout": 0.3, "l2": 1e-5},
    "sms_embedding": {"vocabulary": 800, "length_sms": 8, "length_email": 40, "embedding": 24,
                      "layers": [64, 32, 16], "dropout": 0.5, "l2": 0.0},
}


@pytest.fixture(scope="module")
def sms_parts():
    train = load_split_samples(str(SMS_SPLIT), part="train", sms_file=str(SMS_FILE))
    test = load_split_samples(str(SMS_SPLIT), part="test", sms_file=str(SMS_FILE))
    return train[:900], test


def _recipe(network: dict | None = None, **choices) -> Recipe:
    """A small SMS recipe trained by Keras: 400 words, 32 hidden units, SMALL_ARCH."""
    return Recipe.from_config(merge(DEFAULTS, {"arch": SMALL_ARCH}), "sms", overrides={
        "wordlist": {"size": 400},
        "network": {"hidden": 32, "max_epochs": 4, "patience": 2, **(network or {})}},
        backend="keras", **choices)


def test_keras_starts_from_the_numpy_initial_weights():
    for net in (Network(20, 6, seed=4), MLP(20, layers=[7, 5], seed=4),
                MLP(30, layers=[9, 4, 3], output="sigmoid", embedding=5, length=6, seed=4)):
        model = keras_backend.build(net)
        init = net.initial_weights() if isinstance(net, MLP) else net._initial_params()
        got = keras_backend.get_weights(model, net)
        assert set(got) == set(init)
        for k in init:
            np.testing.assert_array_equal(got[k], init[k])


@needs_corpora
@pytest.mark.parametrize("arch", ["nnspam", "deep", "sms-embedding"])
def test_numpy_forward_matches_keras_predict_on_every_test_message(monkeypatch, sms_parts, arch):
    train, test = sms_parts
    captured = {}
    real_fit = keras_backend.fit

    def spy(net, *args, **kw):
        captured["model"] = real_fit(net, *args, **kw)
        return captured["model"]

    monkeypatch.setattr(keras_backend, "fit", spy)
    m = train_model(train, _recipe(arch=arch))
    assert m.backend == "keras" and m.arch == arch
    assert set(m.libraries) == {"tensorflow", "keras", "numpy"}
    X = m.features(tokenize_samples([s.payload for s in test], "sms"))
    ours = m.network.predict_proba(X)
    theirs = keras_backend.predict(captured["model"], X)
    if arch == "sms-embedding":
        assert theirs.shape == (len(test), 1)
        theirs = np.concatenate([theirs, 1 - theirs], axis=1)
    assert ours.shape == theirs.shape == (len(test), 2)
    assert np.max(np.abs(ours - theirs)) < 1e-5
    # the model learned something: spam ranks above ham
    from nnspam.services.runs.evaluate import roc_auc

    y = np.array([s.label == "spam" for s in test])
    assert roc_auc(y, ours[:, 0]) > 0.9


def test_keras_members_merge_into_the_mean_of_the_keras_models(monkeypatch, sms_parts):
    train, test = sms_parts
    models = []
    real_fit = keras_backend.fit

    def spy(net, *args, **kw):
        models.append(real_fit(net, *args, **kw))
        return models[-1]

    monkeypatch.setattr(keras_backend, "fit", spy)
    m = train_model(train, _recipe({"members": 2, "refit": "none", "hidden": 16,
                                    "max_epochs": 2}))
    assert len(models) == 2 and m.network.hidden_size == 32
    assert [r["seed"] for r in m.summary["members"]] == [1, 2]
    X = m.features(tokenize_samples([s.payload for s in test], "sms"))
    # softmax of the mean logits = what the merged NumPy network serves
    logit = np.mean([np.log(p[:, 0]) - np.log(p[:, 1])
                     for p in (keras_backend.predict(k, X).astype(np.float64) for k in models)],
                    axis=0)
    want = 1 / (1 + np.exp(-logit))
    assert np.max(np.abs(m.network.predict_proba(X)[:, 0] - want)) < 1e-5


@needs_corpora
def test_cli_trains_with_keras_and_the_mail_paths_never_import_tensorflow(tmp_path):
    out = tmp_path / "model"
    env = dict(os.environ, HOME=str(tmp_path))
    env.pop("NNSPAM_CONFIG", None)
    r = subprocess.run(
        [sys.executable, "-m", "nnspam", "train", "--backend", "keras", "--sms", str(SMS_FILE),
         "--split", str(SMS_SPLIT), "-m", str(out), "-n", "300", "--hidden", "16",
         "--epochs", "2", "--no-progress"],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    meta = json.loads((out / "model.json").read_text())
    assert meta["arch"] == "nnspam" and meta["backend"] == "keras"
    assert meta["libraries"]["tensorflow"] and meta["libraries"]["keras"].startswith("3.")
    raw = make_message("win a free prize", "claim your cash prize now, txt WIN to 80082")
    (tmp_path / "msg.eml").write_bytes(raw)
    code = f"""
import io, sys
from pathlib import Path
from nnspam.front.cli import main
from nnspam.config import load_config
from nnspam.model.core import Model
sys.stdin = io.TextIOWrapper(io.BytesIO(Path({str(tmp_path / 'msg.eml')!r}).read_bytes()))
main(['filter', '-m', {str(out)!r}])
main(['classify', '-m', {str(out)!r}, {str(tmp_path / 'msg.eml')!r}])
from nnspam.services.models.registry import ModelRegistry
from nnspam.services.models.serve_settings import serve_settings
reg = ModelRegistry(serve_settings(load_config(None), model={str(out)!r}))
reg.classify(Path({str(tmp_path / 'msg.eml')!r}).read_bytes())
from nnspam.services.delivery.sorter import Sorter
from nnspam.services.delivery.state import State
md = Path({str(tmp_path / 'Maildir')!r})
for d in ('new', 'cur', 'tmp'):
    (md / d).mkdir(parents=True, exist_ok=True)
p = md / 'new' / '1.M1P1.host'
p.write_bytes(Path({str(tmp_path / 'msg.eml')!r}).read_bytes())
Sorter(Model.load({str(out)!r}), State(md.parent / 's.sqlite3')).handle_new(md, p)
print('HEAVY', sorted(k for k in sys.modules if k.split('.')[0] in ('tensorflow', 'keras')),
      file=sys.stderr)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "X-NNSpam" in r.stdout
    assert r.stderr.strip().splitlines()[-1] == "HEAVY []"
