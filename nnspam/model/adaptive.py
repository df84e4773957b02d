"""Adaptive input words: the NNSpam "automated email gate".

The input layer has a fixed size n. As mail flows, every message's distinct
tokens update

* an **activity** for each input word: how many recent messages contained it,
  with exponential aging (half-life ``half_life`` messages), and
* a bounded **candidate table** of words that are not inputs: their aged
  document frequency, and aged per-class counts (spam/ham) from learned
  messages (true labels) and from confident verdicts (the model's own
  outputs, ``pseudo_label_confidence``).

Every ``cadence`` messages a page-replacement step runs: the weakest inputs
(lowest aged activity) are compared with the best candidates, and a candidate
replaces an input when its score exceeds ``margin`` times the input's activity
plus ``min_count``; at most ``max_replacements`` per step. The replaced input
neuron's outgoing weights (and their Adam moments) are zeroed
(:meth:`Network.reset_inputs`), so the new word starts neutral and gains
influence as the model learns from corrections.

Policies (``policy``):

``lfu``     LFU with aging: candidate score = aged document frequency.
``lfu-ig``  LFU with aging for the inputs; candidates scored by aged frequency
            times their class information ``1 - H(p_spam)`` (smoothed), so a
            frequent word that occurs in both classes (``the``, a common
            header) does not take an input that only rare but telling words
            used. The default: it measured better (docs/guides/adaptive.md;
            ``scripts/bench/adaptive_stream.py``).

Cost per message: one set() of its tokens, one dict update per distinct
non-input token and one NumPy fancy-index add for the input tokens. Aging is
done by inflating the increment (``gain`` grows by 1/decay per message)
instead of decaying every counter; counters are renormalised when the gain
gets large. The candidate table is a lossy frequent-items table: it may grow
to twice ``candidates`` entries, then only the ``candidates`` highest aged
counts are kept, so it stays bounded at amortised O(log C) per insertion.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

__all__ = ["POLICIES", "AdaptiveModel", "AdaptiveState", "configure", "ensure_state", "observe",
           "settings_from"]


class AdaptiveModel(Protocol):
    """What page replacement reads and changes on a model: :class:`nnspam.model.core.Model`
    is one. The model module imports this one (a model carries an
    :class:`AdaptiveState`), so this module names the interface it needs instead of
    importing the model back."""

    words: list[str]
    wordlist_counts: list[int] | None
    summary: dict[str, Any]
    adaptive: AdaptiveState | None
    vectorizer: Any  # .index: word -> input
    network: Any  # its W1 is edited in place by ``init: class``

    def outputs(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray: ...

    def replace_input(self, index: int, word: str, count: int = 0) -> None: ...

POLICIES = ("lfu", "lfu-ig")

# Keys of the ``adaptive:`` config section that belong to the policy (the rest,
# e.g. learn_on_confident, are read by the daemon).
_STATE_KEYS = ("enabled", "policy", "init", "half_life", "candidates", "cadence",
               "max_replacements", "margin", "min_count", "pseudo_label_confidence", "log_size")
INITS = ("zero", "class")
_DONORS = 32  # inputs whose weights are averaged for init: class
_RENORMALISE_AT = 1e12


def settings_from(section: dict[str, Any] | None = None) -> dict[str, Any]:
    """The policy settings: the ``adaptive:`` config defaults overlaid by ``section``."""
    from nnspam.config import DEFAULTS

    base = {k: DEFAULTS["adaptive"][k] for k in _STATE_KEYS}
    for k, v in (section or {}).items():
        if k in base:
            base[k] = v
    if base["policy"] not in POLICIES:
        raise ValueError(f"unknown adaptive.policy {base['policy']!r} (use one of {POLICIES})")
    if base["init"] not in INITS:
        raise ValueError(f"unknown adaptive.init {base['init']!r} (use one of {INITS})")
    for k in ("half_life", "candidates", "cadence", "log_size"):
        if int(base[k]) < 1:
            raise ValueError(f"adaptive.{k} must be at least 1, not {base[k]!r}")
    if int(base["max_replacements"]) < 0 or float(base["margin"]) < 0:
        raise ValueError("adaptive.max_replacements and adaptive.margin must be >= 0")
    return base


def _info(spam: float, ham: float) -> float:
    """1 - binary entropy of the smoothed spam share: 0 for a word equally
    common in both classes (or never labelled), towards 1 for a one-class word."""
    p = (spam + 0.5) / (spam + ham + 1.0)
    return 1.0 + p * math.log2(p) + (1.0 - p) * math.log2(1.0 - p)


class AdaptiveState:
    """Activity of the inputs, the candidate table and the replacement log.

    Counters are stored multiplied by ``gain``; the aged value is
    ``stored / gain``.
    """

    def __init__(self, n_inputs: int, settings: dict[str, Any],
                 activity: np.ndarray | None = None, by_class: np.ndarray | None = None) -> None:
        self.settings = dict(settings)
        self.activity = (np.zeros(n_inputs, dtype=np.float64) if activity is None
                         else np.asarray(activity, dtype=np.float64).copy())
        if self.activity.shape != (n_inputs,):
            raise ValueError(f"activity has shape {self.activity.shape}, expected ({n_inputs},)")
        # Aged activity in messages labelled spam (row 0) and ham (row 1).
        self.by_class = (np.zeros((2, n_inputs), dtype=np.float64) if by_class is None
                         else np.asarray(by_class, dtype=np.float64).copy())
        if self.by_class.shape != (2, n_inputs):
            raise ValueError(f"class activity has shape {self.by_class.shape}, "
                             f"expected (2, {n_inputs})")
        self.gain = 1.0
        self.step = 0  # messages observed
        self.candidates: dict[str, list[float]] = {}  # word -> [total, spam, ham] (x gain)
        self.log: list[dict[str, Any]] = []
        self.replacements = 0

    # -- derived settings --------------------------------------------------
    @property
    def decay(self) -> float:
        return 0.5 ** (1.0 / float(self.settings["half_life"]))

    def aged_activity(self) -> np.ndarray:
        """Aged number of recent messages that contained each input word."""
        return self.activity / self.gain

    def candidate_score(self, entry: Sequence[float]) -> float:
        """The policy's score of a candidate, on the scale of input activity."""
        total = entry[0] / self.gain
        if self.settings["policy"] == "lfu":
            return total
        return total * _info(entry[1] / self.gain, entry[2] / self.gain)

    def _renormalise(self) -> None:
        g = self.gain
        self.activity /= g
        self.by_class /= g
        for e in self.candidates.values():
            e[0] /= g
            e[1] /= g
            e[2] /= g
        self.gain = 1.0

    def _prune(self) -> None:
        cap = int(self.settings["candidates"])
        keep = heapq.nlargest(cap, self.candidates.items(), key=lambda kv: kv[1][0])
        self.candidates = dict(keep)

    # -- persistence -------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Plain data for model.json (the activity array goes to weights.npz)."""
        g = self.gain
        cands = sorted(self.candidates.items(), key=lambda kv: -kv[1][0])
        return {
            "settings": self.settings,
            "step": self.step,
            "replacements": self.replacements,
            "candidates": [[w, round(e[0] / g, 6), round(e[1] / g, 6), round(e[2] / g, 6)]
                           for w, e in cands],
            "log": self.log,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """The per-input arrays for weights.npz (aged, float32)."""
        return {"adaptive_activity": (self.activity / self.gain).astype(np.float32),
                "adaptive_by_class": (self.by_class / self.gain).astype(np.float32)}

    @classmethod
    def from_json(cls, data: dict[str, Any], activity: np.ndarray,
                  by_class: np.ndarray | None = None) -> AdaptiveState:
        """Inverse of :meth:`to_json` and :meth:`arrays` (raises ValueError,
        TypeError or KeyError on bad data)."""
        settings = settings_from(data.get("settings") or {})
        st = cls(activity.shape[0], settings, activity, by_class)
        st.step = int(data.get("step", 0))
        st.replacements = int(data.get("replacements", 0))
        for row in data.get("candidates", []):
            w, tot, sp, hm = row
            if not isinstance(w, str):
                raise TypeError("candidate words must be strings")
            st.candidates[w] = [float(tot), float(sp), float(hm)]
        log = data.get("log", [])
        if not isinstance(log, list):
            raise TypeError("adaptive.log must be a list")
        st.log = [dict(x) for x in log]
        return st


def _initial_activity(model: AdaptiveModel, decay: float) -> np.ndarray:
    """Steady-state aged activity implied by the training word counts: a word
    seen in a fraction r of the training messages has aged activity
    r / (1 - decay). Without counts, every input starts at one recent message."""
    n = len(model.words)
    counts = model.wordlist_counts
    msgs = model.summary.get("messages") if isinstance(model.summary, dict) else None
    n_train = sum(int(v) for v in msgs.values()) if isinstance(msgs, dict) else 0
    if counts and len(counts) == n and n_train > 0:
        rate = np.minimum(np.asarray(counts, dtype=np.float64) / n_train, 1.0)
        return rate / (1.0 - decay)
    return np.ones(n, dtype=np.float64)


def ensure_state(model: AdaptiveModel, settings: dict[str, Any] | None = None) -> AdaptiveState:
    """The model's adaptive state, created on first use (settings from the
    config defaults unless given, activity from the training word counts)."""
    st = getattr(model, "adaptive", None)
    if st is None:
        s = settings_from(settings)
        st = AdaptiveState(len(model.words), s)
        st.activity = _initial_activity(model, st.decay)
        model.adaptive = st
    return st


def configure(model: AdaptiveModel, section: dict[str, Any]) -> AdaptiveState:
    """Apply the ``adaptive:`` config section to a model (creating its state
    if needed); the statistics gathered so far are kept."""
    st = ensure_state(model, section)
    # Counters are kept as they are; a new half-life only changes future aging.
    st.settings = settings_from({**st.settings, **section})
    return st


def _pseudo_labels(model: AdaptiveModel, token_lists: Sequence[Sequence[str]],
                   confidence: float, out: np.ndarray | None = None) -> list[str | None]:
    """Class of each message by the model's own confident verdict, else None (``out``:
    the network's outputs for them, computed here when not given)."""
    if out is None:
        out = model.outputs(token_lists)
    o = out[:, 0] / np.maximum(out[:, 0] + out[:, 1], 1e-12)
    return ["spam" if x >= confidence else "ham" if x <= 1.0 - confidence else None for x in o]


def observe(model: AdaptiveModel, token_lists: list[list[str]],
            labels: Sequence[str | None] | None = None,
            outputs: np.ndarray | None = None) -> list[dict]:
    """Update activation statistics of input words and the bounded candidate table with the
    tokens of messages just classified (labels None) or learned (labels 'spam'/'ham'), and,
    when due, replace rarely activated inputs by candidates that became more frequent.
    Returns the replacements made (dicts with old word, new word, index, scores, time)."""
    st = ensure_state(model)
    if not st.settings["enabled"] or not token_lists:
        return []
    if labels is not None and len(labels) != len(token_lists):
        raise ValueError("labels and token_lists differ in length")
    if labels is None and (st.settings["policy"] == "lfu-ig" or st.settings["init"] == "class"):
        labels = _pseudo_labels(model, token_lists, float(st.settings["pseudo_label_confidence"]),
                                outputs)
    inv_decay = 1.0 / st.decay
    cap2 = 2 * int(st.settings["candidates"])
    cadence = int(st.settings["cadence"])
    index = model.vectorizer.index
    done: list[dict] = []
    for i, toks in enumerate(token_lists):
        lab = labels[i] if labels is not None else None
        st.gain *= inv_decay
        g = st.gain
        gs = g if lab == "spam" else 0.0
        gh = g if lab == "ham" else 0.0
        hits = []
        cands = st.candidates
        # the head token (nnspam.mail.tokens.HEAD_MARK) is the grams part's, not a word
        for t in {t for t in toks if t[:1] != "\x00"}:
            j = index.get(t)
            if j is not None:
                hits.append(j)
                continue
            e = cands.get(t)
            if e is None:
                cands[t] = [g, gs, gh]
            else:
                e[0] += g
                e[1] += gs
                e[2] += gh
        if hits:
            st.activity[hits] += g
            if lab is not None:
                st.by_class[0 if lab == "spam" else 1, hits] += g
        if len(cands) > cap2:
            st._prune()
        if st.gain > _RENORMALISE_AT:
            st._renormalise()
        st.step += 1
        if st.step % cadence == 0:
            done.extend(_replace(model, st))
    return done


def _replace(model: AdaptiveModel, st: AdaptiveState) -> list[dict]:
    """One page-replacement step (see the module docstring)."""
    k = int(st.settings["max_replacements"])
    if k <= 0 or not st.candidates:
        return []
    act = st.aged_activity()
    k = min(k, act.size)
    weakest = np.argpartition(act, k - 1)[:k] if k < act.size else np.arange(act.size)
    weakest = weakest[np.argsort(act[weakest], kind="stable")]
    min_count = float(st.settings["min_count"])
    margin = float(st.settings["margin"])
    g = st.gain
    # A candidate's score is at most its aged count (the information factor is below 1),
    # and the first replacement needs a score above margin * activity + min_count of the
    # weakest input: a word seen in fewer aged messages cannot qualify, and is not scored.
    # (Scoring the whole table of up to 2 * candidates words every cadence messages took a
    # sixth of a corrections-only stream; the replacements are the same.)
    floor = (margin * float(act[weakest[0]]) + min_count) * g * (1.0 - 1e-9) if k else 0.0
    floor = max(floor, min_count * g)
    pool = [(st.candidate_score(e), w) for w, e in st.candidates.items() if e[0] >= floor]
    best = heapq.nlargest(k, pool)
    done = []
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for (score, word), idx in zip(best, weakest, strict=False):
        a = float(act[idx])
        if score <= margin * a + min_count:
            break  # candidates are sorted down, inputs up: no later pair qualifies
        idx = int(idx)
        old = model.words[idx]
        entry = st.candidates.pop(word)
        model.replace_input(idx, word, count=int(round(entry[0] / g)))
        if st.settings["init"] == "class":
            _class_init(model, st, idx, entry[1], entry[2])
        # The evicted word becomes a candidate again, with its aged activity.
        st.candidates[old] = [a * g, 0.0, 0.0]
        # The new input starts with the candidate's aged frequency, so it is not
        # evicted again before it has had a chance to be trained.
        st.activity[idx] = entry[0]
        st.by_class[:, idx] = entry[1], entry[2]
        rec = {"time": now, "step": st.step, "index": idx, "old": old, "new": word,
               "old_activity": round(a, 4), "new_score": round(score, 4),
               "new_spam": round(entry[1] / g, 3), "new_ham": round(entry[2] / g, 3)}
        done.append(rec)
    if done:
        st.replacements += len(done)
        st.log.extend(done)
        del st.log[:-int(st.settings["log_size"])]
    return done


def _class_init(model: AdaptiveModel, st: AdaptiveState, idx: int, spam: float, ham: float) -> None:
    """``init: class``: start a new input's weights from what the network
    already learned about its class, instead of from zero.

    The candidate's class counts (learned labels and confident verdicts) give
    its spam share p. The donors are the inputs most active in that class
    whose own class share is at least as clear; the new row is the mean of
    their W1 rows scaled by the candidate's class information, so a word seen
    in both classes starts near zero and a one-class word starts like the
    words of its class. Training then refines it. Without donors the row stays
    zero (as :meth:`Network.reset_inputs` left it).
    """
    info = _info(spam, ham)
    if info <= 0.0:
        return
    p = (spam + 0.5) / (spam + ham + 1.0)
    row = 0 if p >= 0.5 else 1
    cls_act = st.by_class[row]
    tot = st.by_class.sum(axis=0)
    share = np.divide(cls_act, tot, out=np.zeros_like(cls_act), where=tot > 0)
    ok = (share >= max(p, 1.0 - p)) & (cls_act >= float(st.settings["min_count"]) * st.gain)
    ok[idx] = False
    donors = np.flatnonzero(ok)
    if donors.size == 0:
        return
    if donors.size > _DONORS:
        donors = donors[np.argpartition(-cls_act[donors], _DONORS - 1)[:_DONORS]]
    # In place: set_weights would copy every array and reset the optimiser
    # state of all inputs; reset_inputs already zeroed this row's moments.
    W1 = model.network.require_params()["W1"]
    W1[idx] = W1[donors].mean(axis=0) * info
