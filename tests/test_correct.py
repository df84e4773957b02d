"""The one correction routine (nnspam/model/correct.py) and the wide path (nnspam/model/wide.py)."""

from __future__ import annotations

import numpy as np
import pytest

from nnspam.config import ConfigError, load_config
from nnspam.model.core import Model
from nnspam.model.correct import (
    CorrectionError,
    Rule,
    correct,
    correct_payloads,
    margin_of,
    rule_from_config,
)
from nnspam.model.wide import Wide

from conftest import make_message
from helpers import train_tiny


@pytest.fixture
def tiny_single_model() -> Model:
    """A tiny model of one network (not an ensemble), trained afresh for each test (the
    tests change it)."""
    return train_tiny(members=1)


def test_wide_logit_is_zero_until_taught_and_moves_by_the_change_asked():
    w = Wide(bits=12)
    toks = ["alpha", "beta", "gamma", "alpha"]
    assert w.logit([toks])[0] == 0.0 and not w.active
    w.observe([toks, ["alpha", "delta"]])
    w.step(toks, 1.5)
    # the content part and the digest part (the message itself) each move by 1.5
    assert w.logit([toks])[0] == pytest.approx(3.0, abs=1e-5)
    assert w.logit([["alpha", "beta", "gamma", "other"]])[0] < 1.5  # content part only
    # a token every message has gets a smaller share than the rare ones
    i_alpha, i_beta = (w._hash([t])[0] for t in ("alpha", "beta"))
    assert 0 < w.w[i_alpha] < w.w[i_beta]
    # mail sharing no token is untouched
    assert w.logit([["unrelated", "words"]])[0] == 0.0


def test_identity_part_carries_a_correction_to_the_sender_s_next_message():
    w = Wide(bits=16)
    issue1 = ["from:addr:news@x.org", "from:domain:x.org"] + [f"a{i}" for i in range(500)]
    issue2 = ["from:addr:news@x.org", "from:domain:x.org"] + [f"b{i}" for i in range(500)]
    w.observe([issue1, issue2, ["from:addr:other@y.org", "c1"]])
    w.step(issue1, -8.0)
    # the identity part moves it all the way; the content part only by the two sender tokens
    assert -8.1 < w.logit([issue2])[0] <= -8.0
    w.step(issue1, -100.0, content_max=5.0)  # the content part's share is capped
    assert w.logit([issue1 + ["new"]])[0] > -5.0 - 108.0 - 13.0 - 1e-3


def test_wide_round_trips_through_its_arrays():
    w = Wide(bits=12)
    w.observe([["a", "b"], ["b", "c"]])
    w.step(["a", "b"], -2.0)
    back = Wide.from_arrays(w.meta(), w.arrays())
    assert np.array_equal(back.w, w.w) and np.array_equal(back.df, w.df)
    assert (back.docs, back.updates) == (2, 1)
    with pytest.raises(ValueError):
        Wide.from_arrays({"bits": 12}, {**w.arrays(), "wide_index": np.array([1 << 13])})


def test_a_correction_reaches_its_margin_and_survives_save_and_load(tiny_single_model, tmp_path):
    msg = make_message("agenda", "cheap offer meeting agenda notes")
    toks = [tiny_single_model.tokens(msg)]
    rule = Rule(passes=1, max_passes=1, margin=1.0)
    for label in ("spam", "ham"):
        correct(tiny_single_model, toks, label, rule)
        assert margin_of(tiny_single_model, toks, label)[0] >= 1.0 - 1e-4
    sp = tiny_single_model.score([msg])[0]
    assert sp < tiny_single_model.threshold
    tiny_single_model.save(tmp_path / "m")
    back = Model.load(tmp_path / "m")
    assert back.score([msg])[0] == pytest.approx(sp, abs=1e-6)
    assert back.wide is not None and back.wide.updates == tiny_single_model.wide.updates


def test_wide_off_leaves_the_score_to_the_network(tiny_single_model):
    msg = make_message("agenda", "cheap offer meeting")
    correct_payloads(tiny_single_model, [msg], "spam", Rule(wide=False, passes=1, max_passes=1))
    assert tiny_single_model.wide is None or not tiny_single_model.wide.active


def test_until_margin_takes_more_network_passes(tiny_single_model):
    msg = make_message("agenda", "cheap offer meeting notes")
    toks = [tiny_single_model.tokens(msg)]
    before = margin_of(tiny_single_model, toks, "spam")[0]
    correct(tiny_single_model, toks, "spam", Rule(passes=1, max_passes=200,
                                                  margin=before + 2.0, wide=False,
                                                  learning_rate=0.05))
    assert margin_of(tiny_single_model, toks, "spam")[0] > before + 1.0


def test_rule_from_config_checks_its_values(tmp_path):
    assert rule_from_config({}) == rule_from_config(load_config(None))
    for bad in ({"passes": -1}, {"optimizer": "rmsprop"}, {"learning_rate": -1},
                {"margin": "big"}, {"wide": "yes"}, {"passes": 4, "max_passes": 2}):
        with pytest.raises(CorrectionError):
            rule_from_config({"learn": bad})
    untrained = rule_from_config({}, untrained=True)
    assert untrained.optimizer is None and untrained.learning_rate == 0.001
    cfg = tmp_path / "c.yaml"
    cfg.write_text("daemon:\n  learn_epochs: 3\n")
    with pytest.raises(ConfigError, match="learn.passes"):
        load_config(str(cfg))


def test_bad_label_is_refused(tiny_single_model):
    with pytest.raises(CorrectionError):
        correct(tiny_single_model, [["a"]], "maybe")
