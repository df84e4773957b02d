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

Measured, and why each part is there: docs/lab/streams.md "Learning from a stream".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from nnspam.config import DEFAULTS
from nnspam.model import journal as journal_mod
from nnspam.model.core import FREE_PREFIX, Model  # FREE_PREFIX re-exported (runs.online)
from nnspam.model.grams import GRAMS_WEIGHT, STICK_MARGIN
from nnspam.model.grams import KINDS as GRAMS_KINDS
from nnspam.model.journal import Entry, message_key, subject_of

__all__ = ["FREE_PREFIX", "Rule", "CorrectionError", "correct", "correct_payloads", "observe",
           "rule_from_config", "margin_of", "forget", "learn", "SOURCES", "LEARNED",
           "ALREADY", "REPLACED"]

#: What :func:`learn` did with a message: learned it, found it already learned as that
#: class (nothing done), or replaced its lesson of the other class.
LEARNED, ALREADY, REPLACED = "learned", "already", "replaced"

#: The paths a correction comes by, as the journal names them.
SOURCES = ("learn", "daemon", "tell", "dashboard", "sms", "stream", "online", "")


class CorrectionError(ValueError):
    """A bad ``learn:`` setting or a bad label."""


_LEARN = DEFAULTS["learn"]


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

    # Each default is the config's (config.DEFAULTS["learn"], the one place a setting's
    # default is written): Rule() is the rule of the built-in settings, at the model's own
    # operating point (threshold etc. None, below).
    optimizer: str | None = "sgd" if _LEARN["optimizer"] == "sgd" else None
    learning_rate: float | None = _LEARN["learning_rate"]
    passes: int = _LEARN["passes"]
    max_passes: int = _LEARN["max_passes"]
    margin: float = _LEARN["margin"]
    ham_margin: float | None = _LEARN["ham_margin"]  # a corrected ham's margin; None: margin
    confirm_margin: float = _LEARN["confirm_margin"]  # asked of a message on its side
    # a correction's token gets a free input once seen this often (no setting: the online
    # learner's is online.admit_min)
    admit_min: float = 2.0
    wide: bool = _LEARN["wide"]
    wide_max: float = _LEARN["wide_max"]
    grams: bool = _LEARN["grams"]  # teach the grams part (nnspam/model/grams.py)
    # The operating point the verdicts are made at, which the margins are measured from:
    # the config's (rule_from_config), as every front scores with it; None: the model's own.
    # (A correction measured against the model's 0.5 while the daemon filed at 0.8 could
    # leave a message corrected as spam still below 0.8: issue 25.)
    threshold: float | None = None
    ham_factor: float | None = None
    spam_factor: float | None = None
    journal: int = _LEARN["journal"]  # corrections kept in the journal, to be forgotten

    def with_(self, **kw: Any) -> Rule:
        """A copy with some fields changed (e.g. the online learner's optimiser)."""
        return replace(self, **kw)

    def point(self, model: Model) -> tuple[float, float, float]:
        """(threshold, ham factor, spam factor) of the verdicts: the rule's, else the
        model's own."""
        return (float(model.threshold if self.threshold is None else self.threshold),
                float(model.ham_factor if self.ham_factor is None else self.ham_factor),
                float(model.spam_factor if self.spam_factor is None else self.spam_factor))


def _number(sec: dict[str, Any], key: str, *, integer: bool = False,
            minimum: float = 0.0, allow_none: bool = False) -> Any:
    """``sec[key]`` checked (``sec`` holds the built-in defaults under the user's
    settings, so every key is there: a setting's one default is config.DEFAULTS)."""
    v = sec[key]
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
    sec = {**DEFAULTS["learn"], **(cfg.get("learn") or {})}
    opt = sec["optimizer"]
    if opt not in ("sgd", "adam"):
        raise CorrectionError(f"learn.optimizer must be sgd or adam, not {opt!r}")
    rate = _number(sec, "learning_rate", allow_none=True)
    if rate is not None and not rate > 0:
        raise CorrectionError(f"learn.learning_rate must be > 0 or null, not {rate!r}")
    passes = _number(sec, "passes", integer=True, minimum=0)
    max_passes = _number(sec, "max_passes", integer=True, minimum=0)
    if max_passes < passes:
        raise CorrectionError(f"learn.max_passes ({max_passes}) is below learn.passes "
                              f"({passes})")
    margin = _number(sec, "margin")
    ham_margin = _number(sec, "ham_margin", allow_none=True)
    wide = sec["wide"]
    if not isinstance(wide, bool):
        raise CorrectionError(f"learn.wide must be true or false, not {wide!r}")
    wide_max = _number(sec, "wide_max")
    grams = sec["grams"]
    if not isinstance(grams, bool):
        raise CorrectionError(f"learn.grams must be true or false, not {grams!r}")
    confirm = _number(sec, "confirm_margin")
    journal = _number(sec, "journal", integer=True, minimum=0)
    top = {**DEFAULTS, **cfg}  # the operating point: the config's top-level settings
    rule = Rule(optimizer="sgd" if opt == "sgd" else None, learning_rate=rate,
                passes=passes, max_passes=max_passes, margin=margin,
                ham_margin=ham_margin, confirm_margin=confirm, wide=wide,
                wide_max=wide_max, grams=grams, journal=journal,
                threshold=float(top["threshold"]), ham_factor=float(top["ham_factor"]),
                spam_factor=float(top["spam_factor"]))
    if untrained:
        on = {**DEFAULTS["online"], **(cfg.get("online") or {})}
        epochs = _number(on, "epochs", integer=True, minimum=1)
        # Every message it learns is pushed to the full margin of a correction: a network
        # that knows nothing gains from each message's whole evidence (enron1, full
        # feedback: 1-ROCA 0.37% against 0.60% with the confirm_margin of 1).
        rule = rule.with_(optimizer=None, passes=epochs, max_passes=epochs,
                          confirm_margin=max(rule.margin, rule.ham_margin or rule.margin),
                          learning_rate=_number(on, "learning_rate"),
                          admit_min=_number(on, "admit_min", minimum=1.0))
    return rule


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1.0 - 1e-12)
    return math.log(p / (1.0 - p))


def margin_of(model: Model, token_lists: Sequence[Sequence[str]], label: str,
              rule: Rule | None = None) -> np.ndarray:
    """How far each message sits on ``label``'s side of the threshold, in logits of the
    spamicity of the network and wide path (negative: on the wrong side), at the rule's
    operating point (:meth:`Rule.point`; the model's own without a rule)."""
    t, h, s = (rule or Rule()).point(model)
    net, wide = model.logits(token_lists, h, s)
    z = net + wide - _logit(t)
    return z if label == "spam" else -z


def free_inputs(model: Model) -> list[int]:
    """Input slots that no word holds yet (:data:`FREE_PREFIX`), lowest first."""
    return model.free_inputs()


def admit_free_inputs(model: Model, token_lists: Sequence[Sequence[str]],
                      admit_min: float = 2.0) -> int:
    """Give free input slots (an untrained network's) to the messages' tokens that are not
    inputs and were seen in at least ``admit_min - 1`` earlier learned messages (aged
    counts of the adaptive candidate table; a count decays by half over
    ``adaptive.half_life`` messages, hence the 0.5 slack). The slot keeps the initial
    weights it was given. Returns how many were admitted."""
    st = model.adaptive
    if st is None or not model.free_slot_left():
        return 0
    index = model.vectorizer.index
    need = float(admit_min) - 1.0
    g = st.gain
    cands = st.candidates
    n = 0
    left = True  # a slot is left (only taking one can change that)
    for toks in token_lists:
        for t in dict.fromkeys(toks):
            if not left:
                break
            if t in index or t.startswith("\x00"):  # an input, or the grams part's head
                continue
            e = cands.get(t)
            seen = e[0] / g if e is not None else 0.0
            if seen + 0.5 <= need:
                continue
            idx = model.fill_free_slot(t)
            left = model.free_slot_left()
            if idx is None:
                continue  # taken by an adaptive replacement meanwhile
            n += 1
            if e is not None:
                del cands[t]
                st.activity[idx] = e[0]
                st.by_class[:, idx] = e[1], e[2]
    return n


def observe(model: Model, token_lists: list[list[str]], labels: list[str] | None = None,
            adaptive_inputs: bool = True, outputs: Any = None) -> list[dict]:
    """Let the model count arriving messages: the adaptive input statistics (with their
    replacement steps) and the wide path's token counts. Every front calls this for a
    message it classifies and does not learn; :func:`correct` calls it for the messages
    it learns. ``outputs``: the network's outputs for the messages when the caller scored
    them just before, nothing learned since (the adaptive inputs' own verdicts need them;
    computing them again took a sixth of a corrections-only stream). Returns the adaptive
    replacements made."""
    from nnspam.model import adaptive

    model.ensure_wide().observe(token_lists)
    if not adaptive_inputs:
        return []
    done = adaptive.observe(model, token_lists, labels, outputs=outputs)
    if done and model.handing_out_free_slots():
        assert model.adaptive is not None  # it made the replacements
        cands = model.adaptive.candidates
        for r in done:  # an evicted free-slot name is not a word to remember
            if str(r["old"]).startswith(FREE_PREFIX):
                cands.pop(r["old"], None)
    return done


def correct(model: Model, token_lists: list[list[str]], label: str, rule: Rule | None = None,
            *, adaptive_inputs: bool = True, source: str = "") -> list[dict]:
    """Teach ``model`` that the tokenized messages are of class ``label`` ('spam' or
    'ham'), by ``rule`` (default :class:`Rule`'s defaults). Returns the adaptive input
    replacements made (see :func:`nnspam.model.adaptive.observe`). The messages are counted
    first (:func:`observe`; ``adaptive_inputs=False`` leaves the adaptive inputs alone).
    With ``rule.journal`` > 0 what each message changed is recorded in the model's
    journal (:mod:`nnspam.model.journal`), named by ``source`` (one of :data:`SOURCES`),
    so that :func:`forget` can undo it."""
    if label not in ("spam", "ham"):
        raise CorrectionError(f"label must be 'spam' or 'ham', not {label!r}")
    if not token_lists:
        return []
    rule = rule or Rule()
    net = model.network
    rec = _Recorder(model, token_lists, label, rule, source) if rule.journal > 0 else None
    admit_free_inputs(model, token_lists, rule.admit_min)
    done = observe(model, token_lists, [label] * len(token_lists), adaptive_inputs)
    X = model.features(token_lists)
    y = np.full(len(token_lists), 1 if label == "spam" else 0, dtype=np.int64)
    if rule.passes:
        net.partial_fit(X, y, epochs=rule.passes, optimizer=rule.optimizer,
                        learning_rate=rule.learning_rate)
    taken = rule.passes
    need = rule.margin if label == "spam" or rule.ham_margin is None else rule.ham_margin
    if rule.max_passes > rule.passes:
        while taken < rule.max_passes:
            m = margin_of(model, token_lists, label, rule)
            wrong = m < need
            if not wrong.any():
                break
            idx = np.flatnonzero(wrong)
            net.partial_fit(X[idx], y[idx], epochs=1, optimizer=rule.optimizer,
                            learning_rate=rule.learning_rate)
            taken += 1
    # the verdicts as they were (the sum of all parts): which messages were mistakes
    grams = rule.grams and model.kind in GRAMS_KINDS
    m0 = whole_margin_of(model, token_lists, label, rule) if grams else None
    if rule.wide:
        wide = model.ensure_wide()
        m = margin_of(model, token_lists, label, rule)
        sign = 1.0 if label == "spam" else -1.0
        for i, (toks, mi) in enumerate(zip(token_lists, m, strict=True)):
            # A mistake is pushed to the full margin; a message the model already had on
            # the right side (full feedback: a confirmation) only to confirm_margin.
            want = need if mi < 0 else min(need, rule.confirm_margin)
            if mi < want:
                before = rec.wide_before(i) if rec is not None else None
                wide.step(toks, sign * (want - float(mi)), rule.wide_max)
                if rec is not None:
                    rec.wide_after(i, before)
    if grams:
        _learn_grams(model, token_lists, label, m0, need, rec, rule)
    _count_learned(model, label, len(y))
    if rec is not None:
        rec.finish(X, len(done))
    return done


def whole_margin_of(model: Model, token_lists: Sequence[Sequence[str]], label: str,
                    rule: Rule | None = None) -> np.ndarray:
    """As :func:`margin_of`, on the whole score (the grams part included)."""
    t, h, s = (rule or Rule()).point(model)
    _, z = model.judge_tokens(token_lists, h, s)
    z = z - _logit(t)
    return z if label == "spam" else -z


def _learn_grams(model: Model, token_lists: Sequence[Sequence[str]], label: str,
                 before: np.ndarray | None, need: float, rec: _Recorder | None,
                 rule: Rule) -> None:
    """The grams part learns each message (its own AROW step, whatever the other parts
    did: measured so, docs/lab/learner-probes.md), then a message that was a mistake and
    is still short of STICK_MARGIN (or ``need``, if smaller) on the whole score takes the
    rest as a plain step of the grams part: a correction sticks, whichever part was
    wrong."""
    grams = model.ensure_grams()
    sign = 1.0 if label == "spam" else -1.0
    for i, toks in enumerate(token_lists):
        a, beta = grams.learn(toks, label)
        push = 0.0
        if before is not None and before[i] < 0:
            short = min(need, STICK_MARGIN) - float(
                whole_margin_of(model, [toks], label, rule)[0])
            if short > 0:
                push = sign * short / GRAMS_WEIGHT  # the part enters the score times that
                grams.push(toks, push)
        if rec is not None:
            rec.grams[i] = (a, beta, push)


def _count_learned(model: Model, label: str, n: int) -> None:
    """The model's tally of messages learned since training (``n`` < 0: forgotten)."""
    model.summary["learned_messages"] = max(
        int(model.summary.get("learned_messages", 0)) + n, 0)
    by = dict(model.summary.get("learned") or {})
    by[label] = max(int(by.get(label, 0)) + n, 0)
    model.summary["learned"] = by


class _Recorder:
    """What one call of :func:`correct` changed, message by message, for the journal.

    Made before the call changes anything: it notes each message's document counts
    (exactly what :func:`observe` adds), and, when the rule may take network passes,
    a copy of the network's weights (the only costly part, and only then)."""

    def __init__(self, model: Model, token_lists: Sequence[Sequence[str]], label: str,
                 rule: Rule, source: str) -> None:
        self.model, self.label, self.source = model, label, source
        self.tokens = [list(t) for t in token_lists]
        self.wide = model.ensure_wide()
        self.counted = [self.wide.counted(t) for t in self.tokens]
        self.steps: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.grams: dict[int, tuple[float, float, float]] = {}  # learn's (a, beta), push
        self.net_before = (model.network.get_weights()
                           if (rule.passes or rule.max_passes)
                           and model.codec.journal_network
                           else None)
        model.journal.limit = rule.journal

    def wide_before(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self.counted[i][0]  # every slot of the message: all a wide step can move
        return idx, self.wide.w[idx].copy()

    def wide_after(self, i: int, before: Any) -> None:
        idx, old = before
        self.steps[i] = (idx, self.wide.w[idx] - old)

    def finish(self, X: Any, replacements: int) -> None:
        net_delta = None
        m = len(self.tokens)
        if self.net_before is not None:
            after = self.model.network.get_weights()
            net_delta = {k: (after[k] - self.net_before[k]) / m for k in after}
        when = journal_mod.now()
        for i, toks in enumerate(self.tokens):
            df_index, df_delta = self.counted[i]
            w_index, w_delta = self.steps.get(i, (np.zeros(0, np.int64),
                                                  np.zeros(0, np.float32)))
            rows = net = None
            if net_delta is not None:
                row = X[i]
                rows = np.flatnonzero(row.toarray().ravel() if hasattr(row, "toarray")
                                      else np.asarray(row).ravel())
                net = {"W1": net_delta["W1"][rows], "b1": net_delta["b1"],
                       "W2": net_delta["W2"], "b2": net_delta["b2"]}
            self.model.journal.add(Entry(
                key=message_key(toks), label=self.label, source=self.source, time=when,
                subject=subject_of(toks), tokens=sum(t[:1] != "\x00" for t in toks),
                wide_index=w_index,
                wide_delta=w_delta.astype(np.float32), df_index=df_index, df_delta=df_delta,
                wide_step=i in self.steps, replacements=replacements if i == 0 else 0,
                grams=self.grams.get(i),
                rows=rows, net=net, token_list=toks))


def _undo(model: Model, e: Entry) -> None:
    """Subtract what the journal entry ``e`` changed (see :func:`forget`)."""
    wide = model.ensure_wide()
    if e.wide_index.size:
        wide.w[e.wide_index] -= e.wide_delta
    if e.df_index.size:
        wide.df[e.df_index] = np.maximum(wide.df[e.df_index] - e.df_delta, 0.0)
        wide.docs = max(wide.docs - 1, 0)
    if e.wide_step:
        wide.updates = max(wide.updates - 1, 0)
    if e.grams is not None and model.grams is not None:
        model.grams.unlearn(e.token_list, *e.grams)
        model.grams.updates = max(model.grams.updates - 1, 0)
    if e.net is not None and e.rows is not None:
        params = model.network.require_params()
        params["W1"][e.rows] -= e.net["W1"].astype(params["W1"].dtype)
        for part in ("b1", "W2", "b2"):
            params[part] -= e.net[part].astype(params[part].dtype)
    _count_learned(model, e.label, -1)


def forget(model: Model, token_lists: Sequence[Sequence[str]], rule: Rule | None = None
           ) -> list[Entry | None]:
    """Undo the latest journalled correction of each tokenized message, as if it had
    never been learned. Returns each message's entry, None for a message the journal
    does not hold (never learned, or learned before the journal's last
    ``learn.journal`` corrections).

    How: the corrections since it are undone newest first, then it, each by
    subtracting what it changed (the wide path's weights and counts and its update
    count, the network deltas of a rule with network passes, the tally of learned
    messages); then the later ones are learned again, in their order, by ``rule``
    (the config's ``learn:``; their adaptive input counts are not counted twice). A
    later correction was sized to what the model knew then, the forgotten lesson
    included, so subtracting only the forgotten one would leave the later ones too
    weak (measured on 100 SpamAssassin corrections, forgetting every other one: 15 of
    300 held-back verdicts differed from a model that never learned them; with the
    replay, none). What is exact and what is not: :mod:`nnspam.model.journal`."""
    rule = rule or Rule()
    journal = model.journal
    if rule.journal <= 0:
        rule = rule.with_(journal=max(journal.limit, 1))
    out: list[Entry | None] = []
    for toks in token_lists:
        i = journal.find(message_key(toks))
        if i is None:
            out.append(None)
            continue
        tail = journal.entries[i:]
        for e in reversed(tail):
            _undo(model, e)
        del journal.entries[i:]
        for e in tail[1:]:
            correct(model, [e.token_list], e.label, rule, adaptive_inputs=False,
                    source=e.source)
            journal.entries[-1].time = e.time
        out.append(tail[0])
    return out


def learn(model: Model, token_lists: Sequence[Sequence[str]], label: str,
          rule: Rule | None = None, *, adaptive_inputs: bool = True, source: str = ""
          ) -> tuple[list[str], list[dict]]:
    """A user's lesson, with sa-learn's and bogofilter's habits: a message the journal holds
    as ``label`` already is not learned again (:data:`ALREADY`; spamc then says "already
    learned"); one it holds as the other class has that lesson forgotten first and is
    learned anew (:data:`REPLACED`, as ``sa-learn`` replaces the old class and bogofilter's
    ``-Sn``/``-Ns`` undo one and do the other); else :func:`correct` (:data:`LEARNED`).
    Every front that learns a user's lesson (the daemon, ``nnspam learn``, the server's TELL,
    the dashboard) comes through here. Without a journal (``learn.journal: 0``) nothing is
    remembered and every lesson is learned. Returns each message's status and the adaptive
    input replacements made."""
    rule = rule or Rule()
    statuses: list[str] = []
    done: list[dict] = []
    for toks in token_lists:
        toks = list(toks)
        i = model.journal.find(message_key(toks)) if rule.journal > 0 else None
        status = LEARNED
        if i is not None:
            if model.journal.entries[i].label == label:
                statuses.append(ALREADY)
                continue
            forget(model, [toks], rule)
            status = REPLACED
        done += correct(model, [toks], label, rule, adaptive_inputs=adaptive_inputs,
                        source=source)
        statuses.append(status)
    return statuses, done


def correct_payloads(model: Model, payloads: Sequence[bytes | str], label: str,
                     rule: Rule | None = None, *, source: str = "") -> list[dict]:
    """:func:`correct` on raw messages (email bytes or SMS text)."""
    if label not in ("spam", "ham"):
        raise CorrectionError(f"label must be 'spam' or 'ham', not {label!r}")
    return correct(model, [model.tokens(p) for p in payloads], label, rule, source=source)
