"""The one correction routine: every path that teaches a model a message's class
(``nnspam learn``, the daemon's Junk moves, the server's TELL, the SMS dashboard, the
online/TREC learner and ``nnspam stream``) calls :func:`correct` with a :class:`Rule`
made by :func:`rule_from_config` from the config's ``learn:`` section.

What a correction does, in order:

1. the labelled tokens feed the adaptive input statistics
   (:func:`nnspam.model.adaptive.observe`), so a replacement that is due gives a new word its
   input before the network learns the message;
2. network passes over the message, if the rule asks for any (``passes``, then more
   while it is short of its margin, up to ``max_passes``; plain steps, or the network's
   own optimiser where its state is kept, as in the online learner). By default a
   correction leaves a trained network alone: its steps undid what it knew;
3. the wide path (:mod:`nnspam.model.wide`) takes the smallest change that puts the message
   ``margin`` logits past the threshold (``ham_margin`` for a ham; ``confirm_margin``
   for a message that was already right): the "train until no error" of CRM114 and
   SpamProbe, with a margin as in their TONE, so a message just over the line does not
   fall back at the next update.

Measured, and why each part is there: README "Learning from a stream".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

__all__ = ["FREE_PREFIX", "Rule", "CorrectionError", "correct", "correct_payloads", "observe",
           "rule_from_config", "margin_of"]


class CorrectionError(ValueError):
    """A bad ``learn:`` setting or a bad label."""


@dataclass(frozen=True)
class Rule:
    """How a correction is learned (config ``learn:``).

    ``optimizer``: ``"sgd"`` (plain gradient steps that need no saved optimiser state: a
    model loaded from disk has none) or ``None`` (the network's own optimiser and its
    carried state; only the online learner, which saves that state, uses it).
    ``learning_rate``: step size (None: the network's own). ``passes``: passes always
    taken. ``max_passes``: the most passes taken while the message is not yet on its
    side of the threshold by ``margin`` (in logits of the spamicity: 1.0 means a
    corrected spam ends at spamicity >= 0.73 and a ham at <= 0.27 with threshold 0.5).
    ``max_passes == passes`` turns the "until" part off.
    """

    optimizer: str | None = "sgd"
    learning_rate: float | None = 0.003
    passes: int = 0
    max_passes: int = 0
    margin: float = 4.0
    ham_margin: float | None = 16.0  # a corrected ham's margin; None: ``margin``
    confirm_margin: float = 1.0  # margin asked of a message already on its side
    admit_min: float = 2.0
    wide: bool = True
    wide_max: float = 20.0

    def with_(self, **kw: Any) -> Rule:
        """A copy with some fields changed (e.g. the online learner's optimiser)."""
        return replace(self, **kw)


def _number(sec: dict[str, Any], key: str, default: Any, *, integer: bool = False,
            minimum: float = 0.0, allow_none: bool = False) -> Any:
    v = sec.get(key, default)
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and v != int(v)):
        raise CorrectionError(f"learn.{key} must be a{'n integer' if integer else ' number'}"
                              f"{' or null' if allow_none else ''}, not {v!r}")
    if v < minimum or (minimum == 0.0 and not integer and key == "learning_rate" and v <= 0):
        raise CorrectionError(f"learn.{key} must be at least {minimum}, not {v!r}")
    return int(v) if integer else float(v)


def rule_from_config(cfg: dict[str, Any], untrained: bool = False) -> Rule:
    """The :class:`Rule` of a loaded config's ``learn:`` section (CorrectionError if bad).

    ``untrained``: the rule for a network that starts untrained and learns every message
    of a stream (the online learner, ``nnspam stream --untrained``): the same rule, but
    the network's own optimiser (Adam, whose state that learner keeps) at
    ``online.learning_rate`` for ``online.epochs`` passes. Plain steps at a correction's
    rate barely move a network that has not learned anything yet."""
    from nnspam.config import DEFAULTS

    sec = {**DEFAULTS["learn"], **(cfg.get("learn") or {})}
    opt = sec.get("optimizer", "sgd")
    if opt not in ("sgd", "adam"):
        raise CorrectionError(f"learn.optimizer must be sgd or adam, not {opt!r}")
    rate = _number(sec, "learning_rate", 0.003, allow_none=True)
    if rate is not None and not rate > 0:
        raise CorrectionError(f"learn.learning_rate must be > 0 or null, not {rate!r}")
    passes = _number(sec, "passes", 1, integer=True, minimum=0)
    max_passes = _number(sec, "max_passes", passes, integer=True, minimum=0)
    if max_passes < passes:
        raise CorrectionError(f"learn.max_passes ({max_passes}) is below learn.passes "
                              f"({passes})")
    margin = _number(sec, "margin", 0.0)
    ham_margin = _number(sec, "ham_margin", margin, allow_none=True)
    wide = sec.get("wide", True)
    if not isinstance(wide, bool):
        raise CorrectionError(f"learn.wide must be true or false, not {wide!r}")
    wide_max = _number(sec, "wide_max", 20.0)
    confirm = _number(sec, "confirm_margin", 1.0)
    rule = Rule(optimizer="sgd" if opt == "sgd" else None, learning_rate=rate,
                passes=passes, max_passes=max_passes, margin=margin,
                ham_margin=ham_margin, confirm_margin=confirm, wide=wide,
                wide_max=wide_max)
    if untrained:
        on = {**DEFAULTS["online"], **(cfg.get("online") or {})}
        epochs = _number(on, "epochs", 1, integer=True, minimum=1)
        # Every message it learns is pushed to the full margin of a correction: a network
        # that knows nothing gains from each message's whole evidence (enron1, full
        # feedback: 1-ROCA 0.37% against 0.60% with the confirm_margin of 1).
        rule = rule.with_(optimizer=None, passes=epochs, max_passes=epochs,
                          confirm_margin=max(rule.margin, rule.ham_margin or rule.margin),
                          learning_rate=_number(on, "learning_rate", 0.001),
                          admit_min=_number(on, "admit_min", 2.0, minimum=1.0))
    return rule


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1.0 - 1e-12)
    return math.log(p / (1.0 - p))


def margin_of(model: Any, token_lists: Sequence[Sequence[str]], label: str) -> np.ndarray:
    """How far each message sits on ``label``'s side of the threshold, in logits of the
    spamicity (negative: on the wrong side)."""
    net, wide = model.logits(token_lists)
    z = net + wide - _logit(float(model.threshold))
    return z if label == "spam" else -z


#: Words of input slots that no token holds yet (an untrained network learning its word
#: list from the stream). The tokenizers never emit a NUL.
FREE_PREFIX = "\x00free:"


def free_inputs(model: Any) -> list[int]:
    """Input slots that no word holds yet, lowest first."""
    return [i for i, w in enumerate(model.words) if w.startswith(FREE_PREFIX)]


def admit_free_inputs(model: Any, token_lists: Sequence[Sequence[str]],
                      admit_min: float = 2.0) -> int:
    """Give free input slots (an untrained network's) to the messages' tokens that are not
    inputs and were seen in at least ``admit_min - 1`` earlier learned messages (aged
    counts of the adaptive candidate table; a count decays by half over
    ``adaptive.half_life`` messages, hence the 0.5 slack). The slot keeps the initial
    weights it was given. Returns how many were admitted."""
    st = model.adaptive
    if st is None:
        return 0
    free = getattr(model, "_free_slots", None)
    if free is None:
        free = free_inputs(model)
        free.reverse()  # pop() hands out the lowest slot first
        model._free_slots = free
    if not free:
        return 0
    index = model.vectorizer.index
    need = float(admit_min) - 1.0
    g = st.gain
    cands = st.candidates
    vec = model.vectorizer
    n = 0
    for toks in token_lists:
        for t in dict.fromkeys(toks):
            if not free:
                break
            if t in index:
                continue
            e = cands.get(t)
            seen = e[0] / g if e is not None else 0.0
            if seen + 0.5 <= need:
                continue
            idx = free.pop()
            if not model.words[idx].startswith(FREE_PREFIX):
                continue  # taken by an adaptive replacement meanwhile
            old = model.words[idx]
            model.words[idx] = t
            vec.words[idx] = t
            index.pop(old, None)
            index[t] = idx
            n += 1
            if e is not None:
                del cands[t]
                st.activity[idx] = e[0]
                st.by_class[:, idx] = e[1], e[2]
    return n


def observe(model: Any, token_lists: list[list[str]], labels: list[str] | None = None,
            adaptive_inputs: bool = True) -> list[dict]:
    """Let the model count arriving messages: the adaptive input statistics (with their
    replacement steps) and the wide path's token counts. Every front calls this for a
    message it classifies and does not learn; :func:`correct` calls it for the messages
    it learns. Returns the adaptive replacements made."""
    from nnspam.model import adaptive

    model.ensure_wide().observe(token_lists)
    if not adaptive_inputs:
        return []
    done = adaptive.observe(model, token_lists, labels)
    if done and getattr(model, "_free_slots", None):
        cands = model.adaptive.candidates
        for r in done:  # an evicted free-slot name is not a word to remember
            if str(r["old"]).startswith(FREE_PREFIX):
                cands.pop(r["old"], None)
    return done


def correct(model: Any, token_lists: list[list[str]], label: str, rule: Rule | None = None,
            *, adaptive_inputs: bool = True) -> list[dict]:
    """Teach ``model`` that the tokenized messages are of class ``label`` ('spam' or
    'ham'), by ``rule`` (default :class:`Rule`'s defaults). Returns the adaptive input
    replacements made (see :func:`nnspam.model.adaptive.observe`). The messages are counted
    first (:func:`observe`; ``adaptive_inputs=False`` leaves the adaptive inputs alone)."""
    if label not in ("spam", "ham"):
        raise CorrectionError(f"label must be 'spam' or 'ham', not {label!r}")
    if not token_lists:
        return []
    rule = rule or Rule()
    admit_free_inputs(model, token_lists, rule.admit_min)
    done = observe(model, token_lists, [label] * len(token_lists), adaptive_inputs)
    X = model.features(token_lists)
    y = np.full(len(token_lists), 1 if label == "spam" else 0, dtype=np.int64)
    net = model.network
    if rule.passes:
        net.partial_fit(X, y, epochs=rule.passes, optimizer=rule.optimizer,
                        learning_rate=rule.learning_rate)
    taken = rule.passes
    need = rule.margin if label == "spam" or rule.ham_margin is None else rule.ham_margin
    if rule.max_passes > rule.passes:
        while taken < rule.max_passes:
            m = margin_of(model, token_lists, label)
            wrong = m < need
            if not wrong.any():
                break
            idx = np.flatnonzero(wrong)
            net.partial_fit(X[idx], y[idx], epochs=1, optimizer=rule.optimizer,
                            learning_rate=rule.learning_rate)
            taken += 1
    if rule.wide:
        wide = model.ensure_wide()
        m = margin_of(model, token_lists, label)
        sign = 1.0 if label == "spam" else -1.0
        for toks, mi in zip(token_lists, m, strict=True):
            # A mistake is pushed to the full margin; a message the model already had on
            # the right side (full feedback: a confirmation) only to confirm_margin.
            want = need if mi < 0 else min(need, rule.confirm_margin)
            if mi < want:
                wide.step(toks, sign * (want - float(mi)), rule.wide_max)
    model.summary["learned_messages"] = int(model.summary.get("learned_messages", 0)) + len(y)
    by = dict(model.summary.get("learned") or {})
    by[label] = int(by.get(label, 0)) + len(y)
    model.summary["learned"] = by
    return done


def correct_payloads(model: Any, payloads: Sequence[bytes | str], label: str,
                     rule: Rule | None = None) -> list[dict]:
    """:func:`correct` on raw messages (email bytes or SMS text)."""
    if label not in ("spam", "ham"):
        raise CorrectionError(f"label must be 'spam' or 'ham', not {label!r}")
    return correct(model, [model.tokens(p) for p in payloads], label, rule)
