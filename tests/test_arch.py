"""The NumPy architectures (nnspam/learning/arch.py), tf-idf n-gram features, DBB
balancing, and model directories of every architecture; none of these tests needs TensorFlow."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from nnspam.config import DEFAULTS, merge
from nnspam.learning.arch import MLP, SequenceEncoder, dbb_oversample
from nnspam.learning.features import NGRAM_JOIN, Vectorizer, idf_weights, with_ngrams
from nnspam.mail.corpus import Sample
from nnspam.model.core import Model, ModelError
from nnspam.services.runs.evaluate import roc_auc
from nnspam.services.runs.training import Recipe, train_model

SMALL_ARCH = {
    "deep": {"ngram": 2, "size": 60, "layers": [16, 8], "dropout": 0.2, "l2": 1e-5},
    "sms_embedding": {"vocabulary": 40, "length_sms": 6, "length_email": 12, "embedding": 4,
                      "layers": [12, 8, 6], "dropout": 0.3, "l2": 0.0},
}


def _sms_samples(n: int = 120, seed: int = 0) -> list[Sample]:
    """Synthetic SMS: spam uses offer words, ham everyday words, both share filler words."""
    rng = np.random.default_rng(seed)
    spam_w = ["free", "win", "prize", "txt", "claim", "cash", "urgent", "call"]
    ham_w = ["home", "dinner", "later", "love", "meeting", "tomorrow", "sorry", "ok"]
    filler = ["the", "you", "to", "and", "a", "is", "me", "now"]
    out = []
    for i in range(n):
        spam = i % 3 == 0
        own = spam_w if spam else ham_w
        words = list(rng.choice(own, 4)) + list(rng.choice(filler, 4))
        rng.shuffle(words)
        out.append(Sample(f"line:{i}", " ".join(words), "spam" if spam else "ham"))
    return out


def _recipe(kind: str = "sms", **choices) -> Recipe:
    """A small recipe: 30 words, 8 hidden units, the SMALL_ARCH architectures."""
    return Recipe.from_config(merge(DEFAULTS, {"arch": SMALL_ARCH}), kind, overrides={
        "wordlist": {"size": 30, "min_df": 1},
        "network": {"hidden": 8, "max_epochs": 30, "patience": 5}}, **choices)


def _gradient_error(net: MLP, X: np.ndarray, y: np.ndarray, eps: float = 1e-3) -> float:
    """Largest relative error between backprop and central differences (no dropout)."""
    net.dropout = [0.0] * len(net.layers)
    net.set_weights(net.initial_weights())
    params = net.require_params()
    for k in params:
        params[k] = params[k].astype(np.float64)

    def objective() -> float:
        out = net._forward(params, X)[-1]
        li = net._loss(out, net._targets(y))
        reg = 0.5 * net.l2 * sum(float((params[w] ** 2).sum()) for w, _ in net.dense_names())
        return float(li.mean()) + reg

    captured: dict[str, np.ndarray] = {}
    net._adam = lambda grads: captured.update({k: g.copy() for k, g in grads.items()})
    net._rng_dropout = None
    net._step_batch(X, y)
    worst = 0.0
    for name, p in params.items():
        flat = p.reshape(-1)
        for i in range(0, flat.size, max(1, flat.size // 25)):
            old = flat[i]
            flat[i] = old + eps
            f1 = objective()
            flat[i] = old - eps
            f2 = objective()
            flat[i] = old
            num = (f1 - f2) / (2 * eps)
            ana = float(captured[name].reshape(-1)[i])
            worst = max(worst, abs(ana - num) / max(abs(ana), abs(num), 1e-6))
    return worst


@pytest.mark.parametrize("kind", ["dense", "embedding"])
def test_mlp_backprop_matches_numeric_gradient(kind):
    rng = np.random.default_rng(3)
    if kind == "dense":
        net = MLP(7, layers=[5, 4], output="softmax", l2=1e-2, seed=2)
        X = rng.standard_normal((6, 7))
    else:
        net = MLP(9, layers=[5, 3], output="sigmoid", embedding=3, length=4, l2=1e-2, seed=2)
        X = rng.integers(0, 10, size=(6, 4))
        assert net.param_shapes()["W1"] == (10, 3) and "b1" not in net.param_shapes()
    y = np.array([0, 1, 1, 0, 1, 0])
    assert _gradient_error(net, X, y) < 1e-3


def test_sigmoid_mlp_outputs_are_p_and_one_minus_p():
    net = MLP(5, layers=[4], output="sigmoid", embedding=2, length=3, seed=1)
    net.set_weights(net.initial_weights())
    out = net.predict_proba(np.array([[1, 2, 0], [5, 5, 5]]))
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-6)


def test_set_weights_rejects_wrong_shapes_and_names():
    net = MLP(5, layers=[4, 3])
    w = net.initial_weights()
    assert sorted(w) == ["W1", "W2", "W3", "b1", "b2", "b3"]
    bad = dict(w, W2=np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="W2"):
        net.set_weights(bad)
    with pytest.raises(ValueError, match="exactly"):
        net.set_weights({k: v for k, v in w.items() if k != "b3"})


def test_sequence_encoder_skips_unknown_words_and_pads_after():
    enc = SequenceEncoder(["free", "win", "txt"], length=4)
    X = enc.transform([["free", "zzz", "txt", "win", "free", "win"], [], ["txt"]])
    assert X.tolist() == [[0, 2, 1, 0], [3, 3, 3, 3], [2, 3, 3, 3]]


def test_tfidf_rows_have_unit_length_and_use_ngrams():
    docs = [["free", "cash", "now"], ["see", "you"], ["free", "free", "cash"]]
    words = ["free", "cash", f"free{NGRAM_JOIN}cash", "you"]
    ng = [with_ngrams(d, 2) for d in docs]
    assert f"cash{NGRAM_JOIN}now" in ng[0] and len(ng[0]) == 5
    idf = idf_weights(words, ng)
    assert idf[3] > idf[0]  # "you" is rarer than "free"
    X = Vectorizer(words, "tfidf", ngram=2, idf=idf).transform(docs).toarray()  # CSR
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-6)
    assert X[0, 2] > 0 and X[1, 0] == 0 and X[1, 3] == pytest.approx(1.0)
    # a word seen twice weighs (1 + log 2) times as much before the row is normalised
    raw = Vectorizer(words, "tfidf", ngram=2,
                     idf=np.ones(4, np.float32)).transform([docs[2]]).toarray()
    assert raw[0, 0] / raw[0, 1] == pytest.approx(1 + np.log(2), rel=1e-5)


def test_dbb_balances_with_the_minority_support_and_unit_rows():
    rng = np.random.default_rng(0)
    X = np.abs(rng.standard_normal((40, 12))).astype(np.float32)
    X[rng.random(X.shape) < 0.6] = 0
    X[:, 0] += 0.1  # no empty rows
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.array([1] * 10 + [0] * 30)
    Xb, yb = dbb_oversample(X, y, np.random.default_rng(1), renormalise=True)
    assert (yb == 1).sum() == (yb == 0).sum() == 30
    np.testing.assert_array_equal(Xb[:40], X)
    new = Xb[40:]
    np.testing.assert_allclose(np.linalg.norm(new, axis=1), 1.0, rtol=1e-5)
    spam_support = (X[y == 1] != 0).any(axis=0)
    assert not (new[:, ~spam_support] != 0).any()
    assert not any((new == row).all(axis=1).any() for row in X[y == 1])  # not mere copies


def test_dbb_on_binary_inputs_duplicates_minority_rows():
    X = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]], dtype=np.float32)
    y = np.array([1, 0, 0, 0])
    Xb, yb = dbb_oversample(X, y, np.random.default_rng(0), renormalise=False)
    np.testing.assert_array_equal(Xb[4:], np.tile(X[0], (2, 1)))
    assert yb.tolist() == [1, 0, 0, 0, 1, 1]


@pytest.mark.parametrize("arch", ["deep", "sms-embedding"])
def test_numpy_training_save_load_and_scores(tmp_path, arch):
    samples = _sms_samples()
    m = train_model(samples, _recipe(arch=arch, balance="dbb" if arch == "deep" else "none"))
    assert m.arch == arch and m.backend == "numpy" and m.libraries["numpy"] == np.__version__
    test = _sms_samples(60, seed=9)
    y = np.array([s.label == "spam" for s in test])
    s1 = m.score([s.payload for s in test])
    assert roc_auc(y, s1) > 0.97
    m.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["arch"] == arch and meta["backend"] == "numpy"
    m2 = Model.load(tmp_path / "m")
    assert m2.arch == arch
    np.testing.assert_array_equal(m2.score([s.payload for s in test]), s1)
    if arch == "deep":
        assert m2.ngram == 2 and m2.idf is not None and m.summary["balance"] == "dbb"
        assert m.summary["trained_on"]["spam"] == m.summary["trained_on"]["ham"]


def test_learn_corrects_deep_and_embedding_models():
    from nnspam.model.correct import Rule, correct

    for arch in ("deep", "sms-embedding"):
        m = train_model(_sms_samples(), _recipe(arch=arch))
        m.adaptive = None
        toks = [m.tokens("win free cash prize now")]
        before = m.outputs(toks)[0, 0]
        from nnspam.model import adaptive

        adaptive.ensure_state(m).settings["enabled"] = False
        correct(m, toks, "ham", Rule(passes=20, max_passes=20, wide=False))
        assert m.outputs(toks)[0, 0] < before


def test_shipped_models_still_load_as_nnspam_arch():
    for name in ("default", "default-sms"):
        m = Model.load(name)
        assert m.arch == "nnspam" and m.backend == "numpy"
        assert m.network.get_weights()["W1"].shape[0] == len(m.words)


def test_unknown_arch_or_missing_arrays_are_model_errors(tmp_path):
    m = train_model(_sms_samples(), _recipe(arch="deep"))
    m.save(tmp_path / "m")
    jpath = tmp_path / "m" / "model.json"
    meta = json.loads(jpath.read_text())
    jpath.write_text(json.dumps({**meta, "arch": "transformer"}))
    with pytest.raises(ModelError, match="unknown architecture"):
        Model.load(tmp_path / "m")
    meta["network"]["layers"] = [16, 9]
    meta.pop("weights_sha256")
    jpath.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="does not fit"):
        Model.load(tmp_path / "m")


def test_numpy_architectures_never_import_tensorflow(tmp_path):
    import subprocess

    m = train_model(_sms_samples(), _recipe(arch="sms-embedding"))
    m.save(tmp_path / "m")
    code = ("import sys\nfrom nnspam.model.core import Model\n"
            f"m = Model.load({str(tmp_path / 'm')!r})\nm.score(['win a prize now'])\n"
            "print([k for k in sys.modules if k.split('.')[0] in ('tensorflow', 'keras')])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"
