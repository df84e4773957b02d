"""The model directory: save/load round trip, and clear one-line errors for bad models."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from nnspam import config as C
from nnspam.model.core import Model, ModelError, spamicity
from nnspam.model.correct import Rule, correct_payloads
from nnspam.services.runs.training import Recipe, train_model

from conftest import make_message, needs_corpora
from helpers import tiny_samples, train_tiny


@pytest.fixture(scope="module")
def tiny_model() -> Model:
    """A tiny model of the default network settings (an ensemble), shared by the module."""
    return train_tiny()


def test_spamicity_formula():
    out = np.array([[0.9, 0.1], [0.5, 0.5], [0.0, 0.0]])
    s = spamicity(out, 0.9, 0.1)
    assert s[0] == pytest.approx(0.09 / (0.09 + 0.09))
    assert s[1] == pytest.approx(0.1)
    assert s[2] == 0.5  # no output at all: undecided, never a crash


def test_trained_model_separates_and_round_trips(tiny_model, tmp_path):
    msgs = [make_message("offer", "cheap viagra free money", "deals@spam.biz"),
            make_message("notes", "agenda for the meeting tomorrow")]
    before = tiny_model.score(msgs)
    assert before[0] > before[1]
    tiny_model.save(tmp_path / "m")
    loaded = Model.load(tmp_path / "m")
    assert np.array_equal(loaded.score(msgs), before)
    assert loaded.words == tiny_model.words
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["format_version"] == 1 and meta["n_inputs"] == len(tiny_model.words)
    # saving over an existing model replaces it and leaves no temp dirs behind
    tiny_model.save(tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_learn_moves_the_score(tiny_model, tmp_path):
    tiny_model.save(tmp_path / "m")
    m = Model.load(tmp_path / "m")
    msg = make_message("notes", "agenda cheap offer meeting")
    before = m.score([msg])[0]
    correct_payloads(m, [msg], "spam", Rule(passes=5, max_passes=5, wide=False))
    assert m.score([msg])[0] > before
    assert m.summary["learned_messages"] == 1


def _break(path, how):
    j, w = path / "model.json", path / "weights.npz"
    if how == "missing-dir":
        import shutil

        shutil.rmtree(path)
    elif how == "missing-json":
        j.unlink()
    elif how == "bad-json":
        j.write_text("{not json")
    elif how == "truncated-weights":
        w.write_bytes(w.read_bytes()[:100])
    elif how == "missing-weights":
        w.unlink()
    elif how == "version":
        meta = json.loads(j.read_text())
        meta["format_version"] = 99
        j.write_text(json.dumps(meta))
    elif how == "mismatch":
        meta = json.loads(j.read_text())
        meta["words"] = meta["words"][:-1]
        meta.pop("weights_sha256")
        j.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "how, file, problem",
    [
        ("missing-dir", "m", "no such model"),
        ("missing-json", "model.json", "missing"),
        ("bad-json", "model.json", "not valid JSON"),
        ("truncated-weights", "weights.npz", "checksum"),
        ("missing-weights", "weights.npz", "missing"),
        ("version", "model.json", "format version 99"),
        ("mismatch", "weights.npz", "lists"),
    ],
)
def test_bad_models_fail_with_one_line(tiny_model, tmp_path, how, file, problem):
    tiny_model.save(tmp_path / "m")
    _break(tmp_path / "m", how)
    with pytest.raises(ModelError) as err:
        Model.load(tmp_path / "m")
    assert file in str(err.value) and problem in str(err.value)
    proc = subprocess.run(
        [sys.executable, "-m", "nnspam", "inspect", "-m", str(tmp_path / "m")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert problem in proc.stderr


def test_truncated_weights_without_checksum(tiny_model, tmp_path):
    tiny_model.save(tmp_path / "m")
    j = tmp_path / "m" / "model.json"
    meta = json.loads(j.read_text())
    meta.pop("weights_sha256")
    meta.pop("weights_crc32")
    j.write_text(json.dumps(meta))
    w = tmp_path / "m" / "weights.npz"
    w.write_bytes(w.read_bytes()[:-200])
    with pytest.raises(ModelError, match="weights.npz: unreadable"):
        Model.load(tmp_path / "m")


def test_weights_checks_catch_a_flipped_bit_and_another_models_weights(tiny_model, tmp_path):
    """model.json records each array's CRC-32 (weights_crc32): a weights.npz of another
    model fails the check before anything is read, and a bit flipped inside an array
    fails the zip's own CRC as the array is read. Neither needs the old SHA-256 of the
    whole file, which is not consulted when the CRCs are there."""
    tiny_model.save(tmp_path / "a")
    meta = json.loads((tmp_path / "a" / "model.json").read_text())
    assert set(meta["weights_crc32"]) >= {"W1", "b1", "W2", "b2"}
    other = Model.load(tmp_path / "a")
    weights = other.network.get_weights()
    weights["b1"] = weights["b1"] + 1.0
    other.network.set_weights(weights)
    other.save(tmp_path / "b")
    (tmp_path / "a" / "weights.npz").write_bytes((tmp_path / "b" / "weights.npz").read_bytes())
    with pytest.raises(ModelError, match="weights.npz: checksum does not match"):
        Model.load(tmp_path / "a")

    tiny_model.save(tmp_path / "c")
    j = tmp_path / "c" / "model.json"
    meta = json.loads(j.read_text())
    meta.pop("weights_sha256")
    j.write_text(json.dumps(meta))
    w = tmp_path / "c" / "weights.npz"
    data = bytearray(w.read_bytes())
    at = data.index(b"W1.npy") + 300  # inside the first array's data
    data[at] ^= 0x01
    w.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="weights.npz: unreadable.*CRC"):
        Model.load(tmp_path / "c")


def test_shipped_models_load():
    for name, kind in (("default", "email"), ("default-sms", "sms")):
        m = Model.load(name)
        assert m.kind == kind
        assert m.summary.get("provenance", {}).get("trained_on")


def test_only_the_bundled_models_are_read_only(tmp_path, monkeypatch):
    """One rule (model.is_shipped) for the daemon, the SMS store, nnspam learn and the
    server's TELL. The server once took every name starting with "default" for the
    shipped model and refused to learn into a directory of one's own called so."""
    from nnspam.model.core import is_shipped, resolve_model_path

    for name in ("default", "default-email", "default-sms"):
        assert is_shipped(name)
        assert is_shipped(resolve_model_path(name))  # the same directory by its path
    monkeypatch.chdir(tmp_path)
    for name in ("defaults-mine", "default-x", "default.bak"):
        (tmp_path / name).mkdir()
        assert not is_shipped(name) and not is_shipped(tmp_path / name)
    assert not is_shipped(tmp_path / "not-there-yet")
    (tmp_path / "link").symlink_to(resolve_model_path("default-sms"))
    assert is_shipped(tmp_path / "link")  # a symlink to the package's model is the model


def test_the_one_verdict_rule():
    """nnspam.services.verdict: at the threshold is spam (as X-NNSpam-Status always said), just
    below is ham, NaN is never spam; the unsure band is low <= s < high."""
    from nnspam.services.verdict import is_spam, verdict

    below = float(np.nextafter(0.5, 0.0))
    assert verdict(0.5, 0.5) == "spam" and verdict(below, 0.5) == "ham"
    assert verdict(1.0, 0.5) == "spam" and verdict(0.0, 0.5) == "ham"
    assert verdict(0.7, 0.7) == "spam" and verdict(0.69, 0.7) == "ham"
    assert verdict(float("nan"), 0.5) == "ham"
    band = (0.3, 0.7)
    assert [verdict(x, 0.5, band) for x in (0.29, 0.3, 0.5, 0.69, 0.7)] == [
        "ham", "unsure", "unsure", "unsure", "spam"]
    assert is_spam(np.array([below, 0.5, 0.51]), 0.5).tolist() == [False, True, True]
    sms = Model.load("default-sms")
    assert is_spam(np.array([below, 0.5]), sms.threshold).tolist() == [False, True]


def test_score_tokens_is_the_models_spamicity_and_the_verdict(tiny_model):
    from nnspam.services.verdict import score_tokens

    toks = [tiny_model.tokens(m) for m in (
        make_message("offer", "cheap viagra free money", "deals@spam.biz"),
        make_message("notes", "agenda for the meeting tomorrow"))]
    want = tiny_model.spamicity_of_tokens(toks, 0.8, 0.2)
    got = score_tokens(tiny_model, toks, float(want[0]), 0.8, 0.2)
    assert [sp for sp, _ in got] == [float(x) for x in want]
    assert [v for _, v in got] == ["spam", "ham"]  # the first is exactly at the threshold
    assert score_tokens(tiny_model, toks, 0.5)[0][0] == float(
        tiny_model.spamicity_of_tokens(toks)[0])  # None: the model's own ham bias


def test_swa_refit_keeps_the_shape_and_records_itself():
    overrides = {"wordlist": {"size": 40, "min_df": 2}, "network": {
        "max_epochs": 30, "validation_fraction": 0.25, "refit": "swa", "members": 1}}
    m = train_model(tiny_samples(), Recipe.from_config(C.DEFAULTS, "email", overrides=overrides))
    info = m.summary["refit"]
    assert info["method"] == "swa" and info["epochs"] == 2 * m.summary["best_epoch"]
    w = m.network.get_weights()
    assert w["W1"].shape == (len(m.words), 128)
    msgs = [make_message("offer", "cheap viagra free money", "deals@spam.biz"),
            make_message("notes", "agenda for the meeting tomorrow")]
    s = m.score(msgs)
    assert s[0] > s[1]
    overrides["network"]["refit"] = "magic"
    with pytest.raises(ValueError, match="refit"):
        Recipe.from_config(C.DEFAULTS, "email", overrides=overrides)


def test_members_train_with_consecutive_seeds_and_merge_into_one_network():
    def recipe(**network: object) -> Recipe:
        return Recipe.from_config(C.DEFAULTS, "email", overrides={
            "wordlist": {"size": 40, "min_df": 2},
            "network": {"max_epochs": 6, "validation_fraction": 0.25, "hidden": 8,
                        "members": 1, "seed": 4, **network}})

    single = {s: train_model(tiny_samples(), recipe(seed=s)) for s in (4, 5)}
    m = train_model(tiny_samples(), recipe(members=2))
    w = m.network.get_weights()
    assert w["W1"].shape == (len(m.words), 16)
    assert [r["seed"] for r in m.summary["members"]] == [4, 5]
    # member k is exactly the single network of seed 4 + k, side by side
    for k, s in enumerate((4, 5)):
        ws = single[s].network.get_weights()
        assert np.array_equal(w["W1"][:, 8 * k:8 * (k + 1)], ws["W1"])
        assert np.allclose(w["W2"][8 * k:8 * (k + 1)], ws["W2"] / 2)
    msgs = [make_message("offer", "cheap viagra free money", "deals@spam.biz"),
            make_message("notes", "agenda for the meeting tomorrow")]
    s2 = m.score(msgs)
    assert s2[0] > s2[1]
    for bad in (0, -1, 1.5, "3", True):
        with pytest.raises(ValueError, match="members"):
            recipe(members=bad)


def test_a_recipe_reads_the_training_view_of_the_config_and_names_its_path():
    sms = Recipe.from_config(C.DEFAULTS, "sms")  # the sms: sections over the top-level ones
    assert sms.settings.wordlist.size == C.DEFAULTS["sms"]["wordlist"]["size"]
    assert (sms.settings.network.refit, sms.settings.network.members) == ("swa", 1)
    assert sms.settings.network.hidden == C.DEFAULTS["network"]["hidden"]
    faithful = Recipe.from_config(C.DEFAULTS, "email", faithful=True, overrides={
        "network": {"hidden": 7}, "threshold": 0.6})  # the command line's, over FAITHFUL
    assert faithful.settings.wordlist.method == C.FAITHFUL["wordlist"]["method"]
    assert faithful.settings.network.hidden == 7 and faithful.settings.point.threshold == 0.6
    assert (faithful.path, faithful.is_plain) == ("plain", True)
    assert Recipe.from_config(C.DEFAULTS, "email", backend="keras").path == "keras"
    assert Recipe.from_config(C.DEFAULTS, "email", balance="dbb").path == "architectures"
    assert Recipe.from_config(C.DEFAULTS, "sms", arch="deep").path == "architectures"
    # plain, but not countable apart: a given word list, or text-only copies of email
    given = Recipe.from_config(C.DEFAULTS, "email", wordlist=[(3, "free")])
    assert given.path == "plain" and not given.is_plain
    copies = {"features": {"augment": "text-only"}}
    assert not Recipe.from_config(C.DEFAULTS, "email", overrides=copies).is_plain
    assert Recipe.from_config(C.DEFAULTS, "sms", overrides=copies).is_plain  # no SMS copies
    with pytest.raises(ValueError, match="sms-embedding"):
        Recipe.from_config(C.DEFAULTS, "sms", arch="sms-embedding", balance="dbb")
    with pytest.raises(ValueError, match="architecture"):
        Recipe.from_config(C.DEFAULTS, "sms", arch="transformer")


def test_the_training_settings_cover_every_setting_of_their_sections():
    """A setting added to the schema's wordlist/features/network/arch sections reaches
    the recipe (and the network's constructor: NetworkSettings.as_dict)."""
    from nnspam import settings as S
    from nnspam.config import SCHEMA, _dotted

    read = set(S.keys_of(S.TrainingSettings))
    for name in ("wordlist", "features", "network", "arch"):
        assert {f"{name}.{k}" for k in _dotted(SCHEMA[name])} <= read
    assert S.defaults(S.NetworkSettings).as_dict() == C.DEFAULTS["network"]


@needs_corpora
def test_a_correction_moves_its_message_and_barely_the_others(sa_corpus):
    """The correction path (plain gradient steps, config learn:) on the shipped model as
    loaded from disk: the corrected message moves towards its label while other mail keeps
    its scores, far better than Adam from the fresh moments a loaded model has."""
    ham = sorted((sa_corpus / "easy_ham_2").iterdir())[:60]
    spam = sorted((sa_corpus / "spam_2").iterdir())[:60]
    others = [p.read_bytes() for p in ham + spam]
    msg = (sa_corpus / "hard_ham" / "00168.f8f56df10d37e1b1a50747cf9708e8b4").read_bytes()
    moved = {}
    for name, rule in (("sgd", Rule(passes=3, max_passes=3, wide=False)),
                       ("adam", Rule(optimizer=None, passes=3, max_passes=3, wide=False))):
        m = Model.load("default")
        base, base_msg = m.score(others), m.score([msg])[0]
        correct_payloads(m, [msg], "ham", rule)
        assert m.score([msg])[0] < base_msg
        moved[name] = float(np.abs(m.score(others) - base).mean())
        assert m.network._step == (0 if name == "sgd" else 3)
    # measured: the corrected ham 0.52 -> 0.078 (sgd) and 0.017 (adam); the mean change of
    # the other 120 spamicities 0.0007 (sgd) against 0.0015 (adam). Over many corrections
    # that difference adds up (adaptive_stream.py: 120 errors against 231).
    assert moved["sgd"] * 1.5 < moved["adam"]
