"""Adaptive input words: the replacement policy, its persistence, and a stream."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from nnspam import config as C
from nnspam.learning.network import Network
from nnspam.mail.corpus import Sample, iter_messages
from nnspam.model import adaptive
from nnspam.model.core import Model
from nnspam.model.correct import correct, correct_payloads
from nnspam.services.runs.training import Recipe, tokenize_samples, train_model

from conftest import make_message

N = 8


def small_model(settings: dict | None = None) -> Model:
    """An 8-input model whose inputs w0..w7 were all seen in training."""
    net = Network(n_inputs=N, n_hidden=4, seed=1)
    net.partial_fit(np.eye(N, dtype=np.float32), np.arange(N) % 2)
    model = Model(words=[f"w{i}" for i in range(N)], network=net, scaling="binary",
                  wordlist_counts=[10] * N, summary={"messages": {"spam": 50, "ham": 50}})
    adaptive.configure(model, {"half_life": 20, "cadence": 10, "max_replacements": 2,
                               "margin": 2.0, "min_count": 2.0, "init": "zero",
                               "policy": "lfu", **(settings or {})})
    return model


def test_frequent_word_replaces_a_rarely_activated_input():
    model = small_model()
    # w0..w5 stay in use; w6 and w7 never appear again; "newword" is in every message.
    stream = [["w0", "w1", "w2", "w3", "w4", "w5", "newword", f"noise{i}"] for i in range(60)]
    done = adaptive.observe(model, stream)
    assert [d["new"] for d in done] == ["newword"]
    rec = done[0]
    assert rec["old"] in ("w6", "w7") and model.words[rec["index"]] == "newword"
    assert {"old", "new", "index", "old_activity", "new_score", "time"} <= set(rec)
    # inputs in use were not evicted
    assert all(f"w{i}" in model.words for i in range(6))
    assert model.adaptive.log[-1] == rec and model.adaptive.replacements == 1


def test_inputs_in_use_are_not_evicted():
    model = small_model()
    # every input is used in every message; a frequent newcomer is no better than them
    stream = [[f"w{i}" for i in range(N)] + ["newword"] for _ in range(200)]
    assert adaptive.observe(model, stream) == []
    assert model.words == [f"w{i}" for i in range(N)]


def test_candidate_table_stays_bounded():
    model = small_model({"candidates": 50})
    stream = [[f"t{i}-{j}" for j in range(30)] for i in range(100)]  # 3,000 distinct words
    for toks in stream:
        adaptive.observe(model, [toks])
        assert len(model.adaptive.candidates) <= 100
    assert len(model.adaptive.candidates) >= 50


def test_replacement_resets_exactly_that_input_and_feeds_the_vectorizer():
    model = small_model()
    before = model.network.get_weights()
    stream = [["w0", "w1", "w2", "w3", "w4", "w5", "newword"] for _ in range(30)]
    done = adaptive.observe(model, stream)
    assert done
    after = model.network.get_weights()
    changed = [d["index"] for d in done]
    assert np.all(after["W1"][changed] == 0.0)
    keep = [i for i in range(N) if i not in changed]
    assert np.array_equal(after["W1"][keep], before["W1"][keep])
    j = done[0]["index"]
    assert model.vectorizer.index["newword"] == j and done[0]["old"] not in model.vectorizer.index
    x = model.features([["newword"]])
    assert x[0, j] == 1.0 and x.sum() == 1.0
    # the evicted word is a candidate again and can come back later
    assert done[0]["old"] in model.adaptive.candidates


def test_class_init_starts_new_word_like_its_class():
    model = small_model({"init": "class", "policy": "lfu-ig"})
    spam_in = ["w0", "w2", "w4"]
    msgs = [spam_in + ["cheapword"] for _ in range(40)]
    done = adaptive.observe(model, msgs, ["spam"] * 40)
    assert [d["new"] for d in done] == ["cheapword"]
    j = done[0]["index"]
    W1 = model.network.get_weights()["W1"]
    donors = W1[[0, 2, 4]].mean(axis=0)
    assert np.allclose(W1[j], donors * adaptive._info(done[0]["new_spam"], 0.0), atol=0.05)
    assert np.any(W1[j] != 0.0)


def test_lfu_ig_prefers_one_class_words():
    model = small_model({"policy": "lfu-ig", "max_replacements": 1})
    msgs, labels = [], []
    for i in range(30):
        spam = i % 2 == 0
        msgs.append(["w0", "w1", "w2", "w3", "w4", "w5", "both"] + (["spamonly"] if spam else []))
        labels.append("spam" if spam else "ham")
    done = adaptive.observe(model, msgs, labels)
    # "both" is twice as frequent but says nothing about the class
    assert done and done[0]["new"] == "spamonly"


def test_save_load_round_trip_keeps_adaptive_state(tmp_path):
    model = small_model()
    adaptive.observe(model, [["w0", "newword", "other"] for _ in range(30)])
    st = model.adaptive
    model.save(tmp_path / "m")
    loaded = Model.load(tmp_path / "m")
    lt = loaded.adaptive
    assert lt is not None and loaded.words == model.words
    assert lt.settings == st.settings and lt.step == st.step and lt.log == st.log
    assert lt.replacements == st.replacements
    assert np.allclose(lt.aged_activity(), st.aged_activity(), rtol=1e-5)
    assert set(lt.candidates) == set(st.candidates)
    assert loaded.vectorizer.index == model.vectorizer.index
    # observing on the loaded model continues where the saved one stopped
    a = adaptive.observe(model, [["w1", "x"]] * 15)
    b = adaptive.observe(loaded, [["w1", "x"]] * 15)
    assert [(d["old"], d["new"]) for d in a] == [(d["old"], d["new"]) for d in b]


def test_old_model_without_adaptive_state_loads_and_initialises(tmp_path):
    model = Model(words=["a", "b"], network=Network(n_inputs=2, n_hidden=2, seed=1),
                  wordlist_counts=[100, 1], summary={"messages": {"spam": 50, "ham": 50}})
    model.network.partial_fit(np.eye(2, dtype=np.float32), [0, 1])
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert "adaptive" not in meta
    with np.load(tmp_path / "m" / "weights.npz") as npz:
        assert sorted(npz.files) == ["W1", "W2", "b1", "b2"]
    loaded = Model.load(tmp_path / "m")
    assert loaded.adaptive is None
    adaptive.observe(loaded, [["a"]])
    act = loaded.adaptive.aged_activity()
    assert act[0] > act[1] > 0  # initialised from the training word counts


def test_bad_adaptive_object_is_a_model_error(tmp_path):
    from nnspam.model.core import ModelError

    model = small_model()
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["adaptive"]["settings"]["policy"] = "lru-nonsense"
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="adaptive"):
        Model.load(tmp_path / "m")


def test_learn_feeds_the_statistics():
    model = small_model({"cadence": 1000})
    msg = make_message("hello", "freshword freshword")
    for _ in range(3):
        correct_payloads(model, [msg], "spam")
    st = model.adaptive
    assert st.step == 3
    entry = st.candidates["freshword"]
    assert entry[1] > 0 and entry[2] == 0  # counted as spam, three times (aged)
    assert entry[0] / st.gain == pytest.approx(sum(st.decay ** k for k in range(3)))
    assert correct(model, [["w6"]], "ham") == []
    assert st.by_class[1, 6] > 0


def test_disabled_does_nothing():
    model = small_model({"enabled": False})
    assert adaptive.observe(model, [["w0", "newword"]] * 50) == []
    assert model.adaptive.step == 0 and not model.adaptive.candidates


@pytest.mark.slow
def test_stream_on_corpus_slice(sa_corpus):
    """Train on a slice of the older parts, stream a slice of the later ones:
    replacements happen and the model still separates spam from ham."""
    def part(name: str, label: str, k: int) -> list[Sample]:
        s = sorted(iter_messages([str(sa_corpus / name)], label), key=lambda x: x.name)
        return s[:k]

    train = part("spam", "spam", 200) + part("easy_ham", "ham", 300)
    stream = part("spam_2", "spam", 200) + part("easy_ham_2", "ham", 200)
    random.Random(1).shuffle(stream)
    recipe = Recipe.from_config(C.DEFAULTS, "email", overrides={"wordlist": {"size": 1000}})
    toks = tokenize_samples([s.payload for s in train + stream], jobs=1)
    model = train_model(train, recipe, token_lists=toks[:len(train)])
    adaptive.configure(model, {"cadence": 50, "max_replacements": 20})
    done = []
    for s, t in zip(stream, toks[len(train):], strict=True):
        verdict = "spam" if model.spamicity_of_tokens([t])[0] >= model.threshold else "ham"
        done += adaptive.observe(model, [t])
        if verdict != s.label:
            done += correct(model, [t], s.label)
    assert len(done) >= 10
    assert len(set(model.words)) == len(model.words) == 1000
    assert all(model.vectorizer.index[w] == i for i, w in enumerate(model.words))
    new_words = {d["new"] for d in done}
    assert new_words & set(model.words)
    spam_scores = model.spamicity_of_tokens(
        [t for s, t in zip(stream, toks[len(train):], strict=True) if s.label == "spam"])
    ham_scores = model.spamicity_of_tokens(
        [t for s, t in zip(stream, toks[len(train):], strict=True) if s.label == "ham"])
    from nnspam.services.runs.evaluate import roc_auc

    y = np.r_[np.ones(len(spam_scores)), np.zeros(len(ham_scores))]
    assert roc_auc(y, np.r_[spam_scores, ham_scores]) > 0.97
    assert (ham_scores >= model.threshold).mean() < 0.03


def test_inspect_shows_recent_replacements(tmp_path, capsys):
    from nnspam.front.cli import main

    model = small_model()
    adaptive.observe(model, [["w0", "w1", "w2", "w3", "w4", "w5", "newword"]] * 30)
    model.save(tmp_path / "m")
    assert main(["inspect", "-m", str(tmp_path / "m"), "--words", "1"]) == 0
    out = capsys.readouterr().out
    assert "Adaptive inputs: policy lfu, enabled, 30 messages seen, 1 replacements" in out
    assert "-> newword" in out
