"""OnlineFilter (nnspam/services/runs/online.py): classify-then-train, persistence, SMS flavour."""

from __future__ import annotations

import pytest

from nnspam.services.runs.online import FREE_PREFIX, OnlineError, OnlineFilter, online_settings

from conftest import make_message

SPAMS = [
    make_message(f"Cheap meds offer {i}", f"Buy cheap viagra now, best price pills {i}. "
                 "Click here to order, limited offer, free shipping",
                 sender=f"deals{i}@pharma-offers.biz")
    for i in range(6)
]
HAMS = [
    make_message(f"Meeting notes {i}", f"Hi Bob, attached the notes from the meeting {i}. "
                 "Let us review the project schedule tomorrow, thanks, Alice")
    for i in range(6)
]
PROBE_SPAM = make_message("Cheap meds offer", "Buy cheap pills now, best price, free shipping",
                          sender="deals@pharma-offers.biz")
PROBE_HAM = make_message("Meeting notes", "Hi Bob, the project meeting notes, thanks, Alice")
SMALL = {"online": {"inputs": 300}}


def _stream(f: OnlineFilter, n: int) -> None:
    for s, h in list(zip(SPAMS, HAMS, strict=True))[:n]:
        f.classify(s)
        f.train(s, "spam")
        f.classify(h)
        f.train(h, "ham")


def test_untrained_start(tmp_path):
    f = OnlineFilter.create(tmp_path / "f", config=SMALL)
    assert f.kind == "email" and f.free_inputs == 300
    assert all(w.startswith(FREE_PREFIX) for w in f.model.words)
    s = f.classify(PROBE_SPAM)
    assert 0.0 <= s <= 1.0 and f.is_spam(s) is False  # untrained: o ~ 0.5, ham bias
    assert online_settings()["inputs"] == 8000
    assert OnlineFilter.create(tmp_path / "g").model.network.n_inputs == 8000


def test_train_moves_score_the_right_way(tmp_path):
    f = OnlineFilter.create(tmp_path / "f", config=SMALL)
    s0, h0 = f.classify(PROBE_SPAM), f.classify(PROBE_HAM)
    # One Adam step per message at the online learning rate: two rounds of
    # the six pairs (after one round the untrained filter is still unsure).
    _stream(f, 6)
    _stream(f, 6)
    s1, h1 = f.classify(PROBE_SPAM), f.classify(PROBE_HAM)
    assert s1 > s0 + 0.05
    assert h1 < h0
    assert s1 > h1 + 0.1
    # Tokens repeated across messages took free inputs; one-off tokens did not.
    assert 0 < 300 - f.free_inputs < 150
    assert "cheap" in f.model.vectorizer.index
    # Training one more spam raises that message's score again.
    before = f.classify(PROBE_SPAM)
    f.train(PROBE_SPAM, "spam")
    assert f.classify(PROBE_SPAM) > before


def test_bad_label(tmp_path):
    f = OnlineFilter.create(tmp_path / "f", config=SMALL)
    for bad in ("Spam", "junk", "", None):
        with pytest.raises(ValueError):
            f.train(PROBE_SPAM, bad)
    assert f.model.summary.get("learned_messages", 0) == 0


def test_save_load_round_trip(tmp_path):
    f = OnlineFilter.create(tmp_path / "f", config=SMALL)
    _stream(f, 3)
    f.save()
    g = OnlineFilter.load(tmp_path / "f")
    for m in (PROBE_SPAM, PROBE_HAM, *SPAMS, *HAMS):
        assert g.classify(m) == f.classify(m)
    assert g.model.words == f.model.words and g.free_inputs == f.free_inputs
    # Only the live state is kept, and CURRENT names it.
    states = sorted(p.name for p in (tmp_path / "f").iterdir() if p.name != "CURRENT")
    assert states == [(tmp_path / "f" / "CURRENT").read_text().strip()]


def test_save_load_between_messages_equals_one_process(tmp_path):
    """The TREC toolkit runs one process per message: reloading the state
    before every message (Adam moments, step, random streams included) gives
    exactly the scores of one run in memory."""
    a = OnlineFilter.create(tmp_path / "a", config=SMALL)
    OnlineFilter.create(tmp_path / "b", config=SMALL)
    seq = [(m, "spam") for m in SPAMS[:4]] + [(m, "ham") for m in HAMS[:4]]
    seq = [x for pair in zip(seq[:4], seq[4:], strict=True) for x in pair]
    for raw, label in seq:
        b = OnlineFilter.load(tmp_path / "b")
        assert b.classify(raw) == a.classify(raw)
        a.train(raw, label)
        b = OnlineFilter.load(tmp_path / "b")
        b.train(raw, label)
        b.save()
    b = OnlineFilter.load(tmp_path / "b")
    assert b.classify(PROBE_SPAM) == a.classify(PROBE_SPAM)
    assert b.model.words == a.model.words


def test_load_errors(tmp_path):
    with pytest.raises(OnlineError, match="initialize"):
        OnlineFilter.load(tmp_path / "none")
    f = OnlineFilter.create(tmp_path / "f", config=SMALL)
    (f.directory / "CURRENT").write_text("../../etc\n")
    with pytest.raises(OnlineError, match="bad content"):
        OnlineFilter.load(tmp_path / "f")


def test_settings_checked():
    with pytest.raises(ValueError):
        online_settings({"online": {"epochs": 0}})
    with pytest.raises(ValueError):
        online_settings(kind="fax")
    assert online_settings(kind="sms")["inputs"] == 2000


def test_from_default_model_is_a_copy(tmp_path):
    from nnspam.model.core import Model, resolve_model_path

    shipped = resolve_model_path("default")
    before = (shipped / "weights.npz").read_bytes()
    f = OnlineFilter.create(tmp_path / "f", "default")
    assert f.free_inputs == 0 and f.kind == "email"
    assert f.is_spam(f.classify(PROBE_SPAM)) or f.classify(PROBE_SPAM) > f.classify(PROBE_HAM)
    f.train(PROBE_HAM, "ham")
    f.save()
    assert (shipped / "weights.npz").read_bytes() == before
    assert Model.load("default").words == Model.load(f.directory / (
        (f.directory / "CURRENT").read_text().strip())).words
    with pytest.raises(ValueError):
        OnlineFilter.create(tmp_path / "g", "default", kind="sms")


def test_sms_flavour(tmp_path):
    spam = "WINNER!! Call 09061701461 to claim your prize. Txt STOP to 87121"
    ham = "ok see you at home later, bring the keys"
    # Untrained SMS: the SMS tokenizer and the SMS default n.
    f = OnlineFilter.create(tmp_path / "u", kind="sms")
    assert f.kind == "sms" and f.model.network.n_inputs == 2000
    assert "sms:shortcode" in f.tokens(spam.encode())
    assert "sms:shortcode" in f.tokens(b"From: +447700900123\nSubject: SMS\n\n" + spam.encode())
    s0 = f.classify(spam)
    for _ in range(3):
        f.train(spam, "spam")
        f.train(ham, "ham")
    assert f.classify(spam) > s0 and f.classify(spam) > f.classify(ham)
    f.save()
    assert OnlineFilter.load(tmp_path / "u").classify(spam) == f.classify(spam)
    # From the shipped SMS model.
    g = OnlineFilter.create(tmp_path / "d", "default-sms")
    assert g.kind == "sms"
    assert g.is_spam(g.classify(spam.encode())) and not g.is_spam(g.classify(ham.encode()))


def test_free_slot_words_are_never_tokens(tmp_path):
    """A message cannot light up a free input slot, even one that holds NULs."""
    f = OnlineFilter.create(tmp_path / "f", config=SMALL)
    raw = (b"From: a\x00free:1@example.org\nSubject: \x00free:2 hi\n\n"
           b"body \x00free:3 \x00free:4 text")
    assert not any(t.startswith(FREE_PREFIX) for t in f.tokens(raw))
    assert f.free_inputs == 300 and not f.model.features([f.tokens(raw)]).any()
    g = OnlineFilter.create(tmp_path / "g", kind="sms")
    assert not any(t.startswith(FREE_PREFIX) for t in g.tokens("hi \x00free:5 there"))
