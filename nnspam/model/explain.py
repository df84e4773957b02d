"""Explaining a verdict: which words of a message moved its spamicity, and how far.

The contribution of an input word is its **occlusion** effect: the message's spamicity
minus the spamicity of the same message with every occurrence of the word removed,
both through the whole model (network and wide path, at the ham bias asked for).
Positive: the word pushed the message towards spam; negative: towards ham.

Why occlusion. The network is nonlinear (ReLU hidden units, a softmax, the ham bias,
the wide path's capped sum), so a word's weight, or gradient times input, says what
a small change would do near this message and can be far off for the removal of a
whole word: a hidden unit that the word keeps above zero can make the same word
look weightless or decisive depending on the others. Occlusion answers one exact
question ("what would this message score without the word?") with no approximation,
and the spamicity without the word is what ``nnspam explain`` lets anyone check: the
tests remove the words from the message and score it again. What it does not do is
add up: two words that each mean "spam" may each change little alone (the other
still carries the message) and much together.

Each word's effect is also given as the change of the **log-odds** (the logit whose
sigmoid is the spamicity), which is the same occlusion in another unit. Most mail
is scored near 0 or 1 (spamicity below 0.001 or above 0.999 for about four messages
in five of the SpamAssassin test part with the shipped model), where removing any one
word changes the spamicity by less than 0.0005 while the log-odds still move by one
or two: words are sorted by the absolute change of the spamicity, and words whose
changes tie (those rounding to no change at all, in float64) by that of the log-odds.

"Removed" is exact for the model's features: the counts of the message are taken once
(:meth:`~nnspam.learning.features.Vectorizer.counts`), one row per input word present
with that word's count set to zero, and each row is then scaled by the model's own
scaling (``lognorm`` and ``tfidf`` normalise each row again, so the other words weigh
a little more without it, as they would in the message without the word). All rows go
through the network at once, over only the rows of W1 of the message's words. With
word pairs (``ngram: 2``, the ``deep`` architecture) a word goes with the pairs it is
in, and an input that is a pair goes alone.
The wide path sees every token and is scored without the word too: its content and
identity parts lose the word's slot unless another token of the message shares it. Its
third part, the digest (one slot named by the message's whole set of tokens, which
carries a correction to the corrected message itself), is held at the message's:
without any one word the set would have another name, so every word would seem to carry
the whole correction alike (a learned ham showed -16.9 log-odds for each of its words).
The digest's term is reported apart (``Explanation.digest``). SMS models with an
embedding see word sequences: the word is removed from the token list.

Also reported: the message's tokens that have no input word (the network does not
see them), those of them that carry weight on the wide path (a correction taught
it; each token's weight and its term in the message's wide logit), and the adaptive
replacements (``model.adaptive`` log: old word -> new word on an input) that
involved the message's words.

Pure computation: no I/O, the model is not changed.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nnspam.learning.features import NGRAM_JOIN, Vectorizer
from nnspam.learning.network import Network
from nnspam.model.slots import token_hash
from nnspam.model.wide import IDENTITY_PREFIXES, Wide

if TYPE_CHECKING:
    from nnspam.model.core import Model

__all__ = ["Explanation", "Replacement", "WideToken", "WordContribution", "explain"]

# wide.py hashes an identity token under this mark, apart from the same token as content
_IDENTITY_MARK = "\x00id:"


@dataclass(frozen=True)
class WordContribution:
    """One input word of the message and its occlusion effect (module docstring)."""

    word: str
    count: int  #: occurrences in the message (of the feature, for a word pair)
    delta: float  #: spamicity minus the spamicity without the word (+ = towards spam)
    logit: float  #: the same in log-odds


@dataclass(frozen=True)
class WideToken:
    """A token without an input word that the wide path weighs."""

    token: str
    weight: float  #: the weight of its hashed slot (content part)
    logit: float  #: its term in the message's wide logit (content and identity parts)


@dataclass(frozen=True)
class Replacement:
    """An adaptive replacement (``model.adaptive`` log) that involved the message's words:
    input ``index`` went from word ``old`` to word ``new``."""

    index: int
    old: str
    new: str
    time: str | None = None


@dataclass(frozen=True)
class Explanation:
    """What :func:`explain` found for one message."""

    spamicity: float  #: the message's spamicity, as the verdict's
    logit: float  #: its log-odds
    words: tuple[WordContribution, ...]  #: input words present, biggest effect first
    no_input: tuple[str, ...]  #: distinct tokens without an input word, in message order
    wide: tuple[WideToken, ...]  #: those of them the wide path weighs, biggest term first
    replacements: tuple[Replacement, ...]  #: adaptive replacements of the message's words
    wide_active: bool = False  #: whether corrections have taught the wide path
    #: the wide path's digest term: non-zero when this message (its set of tokens) was
    #: corrected; held fixed in every word's contribution (module docstring)
    digest: float = 0.0

    def top(self, n: int) -> tuple[WordContribution, ...]:
        """The ``n`` words with the biggest effect."""
        return self.words[:max(int(n), 0)]

    def to_json(self, words: int | None = None) -> dict[str, Any]:
        """Plain data (the first ``words`` words; all when None)."""
        shown = self.words if words is None else self.top(words)
        return {"spamicity": self.spamicity, "logit": self.logit,
                "contribution": "occlusion: spamicity minus spamicity without the word",
                "words": [asdict(w) for w in shown], "input_words": len(self.words),
                "no_input": list(self.no_input), "wide_active": self.wide_active,
                "wide": [asdict(w) for w in self.wide], "digest": self.digest,
                "replacements": [asdict(r) for r in self.replacements]}


def explain(model: Model, tokens: Sequence[str], ham_factor: float | None = None,
            spam_factor: float | None = None) -> Explanation:
    """Explain the spamicity of one tokenized message (``model.tokens(raw)``) at the ham
    bias ``ham_factor``, ``spam_factor`` (the model's own where None): each input word's
    occlusion effect, see the module docstring."""
    h = model.ham_factor if ham_factor is None else float(ham_factor)
    s = model.spam_factor if spam_factor is None else float(spam_factor)
    toks = list(tokens)
    sp, z = model.judge_tokens([toks], h, s)
    index = model.vectorizer.index
    cols, counts, out = _occluded_outputs(model, toks)
    names = [model.words[c] for c in cols]
    wide = model.wide if model.wide is not None and model.wide.active else None
    wide_rows, digest = (None, 0.0) if wide is None else _wide_without(wide, toks, names)
    gm = model.grams_margins([toks])  # the grams part's term: the same with a word left out
    sps, zs = model.judge_outputs(out, wide_rows, h, s,
                                  None if gm is None else np.repeat(gm, len(out)))
    delta, dlogit = sps[0] - sps[1:], zs[0] - zs[1:]
    order = np.lexsort((-np.abs(dlogit), -np.abs(delta))).tolist() if len(cols) else []
    n, d, g = np.asarray(counts).tolist(), delta.tolist(), dlogit.tolist()
    words = tuple(WordContribution(names[i], int(n[i]), d[i], g[i]) for i in order)
    no_input = tuple(t for t in dict.fromkeys(toks) if t not in index and t[:1] != "\x00")
    return Explanation(
        spamicity=float(sp[0]), logit=float(z[0]), words=words, no_input=no_input,
        wide=_wide_tokens(wide, toks, no_input) if wide is not None else (),
        replacements=_replacements(model, toks), wide_active=wide is not None,
        digest=digest)


def _occluded_outputs(model: Model, toks: list[str]) -> tuple[list[int], np.ndarray,
                                                                np.ndarray]:
    """(inputs present, their counts, network outputs): row 0 of the (k+1, 2) outputs
    is the message, row i+1 the message without input ``cols[i]``."""
    vec = model.vectorizer
    net = model.network
    if not isinstance(vec, Vectorizer):  # a word sequence (sms-embedding): drop the word
        present = list(dict.fromkeys(j for j in map(vec.index.get, toks) if j is not None))
        counts = Counter(j for j in map(vec.index.get, toks) if j is not None)
        lists = [toks] + [[t for t in toks if vec.index.get(t) != j] for j in present]
        return present, np.array([counts[j] for j in present]), net.predict_proba(
            vec.transform(lists))
    C = vec.counts([toks])[0]
    cols = np.flatnonzero(C)
    k = len(cols)
    X = np.tile(C[cols], (k + 1, 1))
    X[np.arange(1, k + 1), np.arange(k)] = 0.0
    if vec.ngram > 1:  # a word also goes from the word pairs it is in; a pair goes alone
        for i, j in enumerate(cols, 1):
            if NGRAM_JOIN not in vec.words[j]:
                word = vec.words[j]
                X[i] = vec.counts([[t for t in toks if t != word]])[0][cols]
    # The model's scaling, over the message's columns only: it is row by row (and per
    # column only through idf), so this is exactly the scaled full row restricted.
    sub = Vectorizer([vec.words[j] for j in cols], vec.scaling,
                     idf=None if vec.idf is None else vec.idf[cols])
    S = sub.scale(X)
    if isinstance(net, Network):
        params = net.require_params()
        z1 = _hidden(S, params["W1"][cols], shortcut=vec.ngram == 1) + params["b1"]
        out = net.predict_proba_from_hidden(z1)
    else:
        full = np.zeros((k + 1, len(vec.words)), dtype=np.float32)
        full[:, cols] = S
        out = net.predict_proba(full)
    return [int(c) for c in cols], C[cols], out


def _hidden(S: np.ndarray, W: np.ndarray, shortcut: bool = True) -> np.ndarray:
    """``S @ W`` for the scaled rows ``S`` (row 0 the message, row i+1 without word i)
    and the message's rows ``W`` of W1, in O(k * hidden) instead of O(k^2 * hidden).

    Every scaling of :mod:`nnspam.learning.features` maps a word's count alone and may
    then divide the row by one number (its norm), so row i+1 is row 0 with column i
    zeroed, times a factor ``c_i``: its product is ``c_i * (s0 @ W - s0_i * W_i)``. The
    factors are read off ``S`` and the rule is checked on up to 16 of its rows; a
    scaling that broke it gets the plain product, as do word pairs (``shortcut`` False:
    a word leaves with its pairs). Both avoid BLAS: ``@`` with two threads on a busy
    2-core host measured 20-70 ms instead of 0.5 for these shapes."""
    k = S.shape[1]
    s0 = S[0].astype(np.float64)
    W64 = W.astype(np.float64)
    out = np.empty((k + 1, W.shape[1]))
    out[0] = np.einsum("j,jk->k", s0, W64)
    if k < 2:  # no word, or one (its row is all zero)
        out[1:] = 0.0
        return out
    rows = np.arange(k)
    ref = np.where(rows == 0, 1, 0)  # a column other than the row's own
    with np.errstate(divide="ignore", invalid="ignore"):
        c = S[1:][rows, ref] / s0[ref]
    some = np.unique(np.linspace(0, k - 1, min(k, 16)).astype(np.intp))
    want = c[some, None] * s0[None, :]
    want[np.arange(len(some)), some] = 0.0
    got = S[1:][some]
    if (shortcut and np.isfinite(c).all()
            and np.abs(want - got).max() <= 1e-5 * float(np.abs(got).max())):
        body = out[1:]
        np.multiply(s0[:, None], W64, out=body)
        np.subtract(out[0], body, out=body)
        body *= c[:, None]
        return out
    return np.einsum("ij,jk->ik", S.astype(np.float64), W64)


def _crc(token: str, mask: int) -> int:
    return token_hash(token) & mask


def _part_without(wide: Wide, slot_of: dict[str, int], removed: Sequence[str]) -> np.ndarray:
    """One part of the wide logit (content or identity, ``slot_of``: its tokens -> their
    slots): element 0 for the message, element i+1 without ``removed[i]``. The part is
    ``sum(w*u) / |u|`` over its distinct slots, ``u`` the slots' idf
    (:meth:`Wide._values`), so leaving a token out takes its slot out of both sums
    unless another token of the message shares the slot."""
    out = np.zeros(len(removed) + 1)
    if not slot_of:
        return out
    per_slot = Counter(slot_of.values())
    slots = np.fromiter(per_slot, dtype=np.int64)
    u = np.log((wide.docs + 2.0) / (wide.df[slots].astype(np.float64) + 1.0))
    wu = wide.w[slots].astype(np.float64) * u
    a, b = float(wu.sum()), float(u @ u)
    out[:] = a / math.sqrt(b) if b > 0 else 0.0
    pos = {int(x): i for i, x in enumerate(slots)}
    for r, tok in enumerate(removed, 1):
        slot = slot_of.get(tok)
        if slot is None or per_slot[slot] > 1:
            continue
        i = pos[slot]
        rest = b - u[i] * u[i]
        out[r] = (a - wu[i]) / math.sqrt(rest) if rest > 0 and len(slots) > 1 else 0.0
    return out


def _wide_without(wide: Wide, toks: list[str], removed: Sequence[str]) -> tuple[np.ndarray,
                                                                                  float]:
    """(wide logits, digest term): element 0 the message's wide logit, element i+1 that
    of the message without every occurrence of ``removed[i]``, with the digest part held
    at the message's (module docstring); that term itself. Equal to ``wide.logit`` of the
    shortened token lists with their digest term swapped for the message's
    (tests/test_explain.py checks it), without hashing every token once per word."""
    uniq = set(toks)
    m = wide.mask
    content = {t: _crc(t, m) for t in uniq}
    ident = {t: _crc(_IDENTITY_MARK + t, m) for t in uniq if t.startswith(IDENTITY_PREFIXES)}
    out = _part_without(wide, content, removed) + _part_without(wide, ident, removed)
    # the digest: one slot named by the set of the message's tokens (Wide._slots), its
    # value there 1 (a part of one slot scaled to length 1: the sign of its idf)
    name = "\x00".join(sorted(uniq)).encode("utf-8", "surrogateescape")
    slot = int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "little") & m
    u = math.log((wide.docs + 2.0) / (float(wide.df[slot]) + 1.0))
    digest = float(wide.w[slot]) * (1.0 if u > 0 else -1.0 if u < 0 else 0.0)
    return out + digest, digest


def _wide_tokens(wide: Wide, toks: list[str], no_input: Sequence[str]) -> tuple[WideToken, ...]:
    """The tokens of ``no_input`` with a non-zero term in the message's wide logit."""
    m = wide.mask
    uniq = set(toks)
    content = {t: _crc(t, m) for t in uniq}
    ident = {t: _crc(_IDENTITY_MARK + t, m) for t in uniq if t.startswith(IDENTITY_PREFIXES)}
    terms: dict[str, float] = {}
    weights: dict[str, float] = {}
    for part, slot_of in enumerate((content, ident)):
        if not slot_of:
            continue
        slots = np.unique(np.fromiter(slot_of.values(), dtype=np.int64))
        u = np.log((wide.docs + 2.0) / (wide.df[slots].astype(np.float64) + 1.0))
        norm = float(np.sqrt(u @ u))
        if norm <= 0:
            continue
        term = dict(zip(slots.tolist(), (wide.w[slots].astype(np.float64) * u / norm).tolist(),
                        strict=True))
        for t in no_input:
            slot = slot_of.get(t)
            if slot is None:
                continue
            terms[t] = terms.get(t, 0.0) + term[slot]
            if part == 0:
                weights[t] = float(wide.w[slot])
    out = [WideToken(t, weights.get(t, 0.0), terms[t]) for t in no_input
           if terms.get(t, 0.0) != 0.0]
    return tuple(sorted(out, key=lambda x: -abs(x.logit)))


def _replacements(model: Model, toks: list[str]) -> tuple[Replacement, ...]:
    """The adaptive replacements whose old or new word is in the message."""
    st = model.adaptive
    if st is None or not st.log:
        return ()
    present = set(toks)
    return tuple(Replacement(int(r.get("index", -1)), str(r.get("old")), str(r.get("new")),
                             r.get("time"))
                 for r in st.log if r.get("old") in present or r.get("new") in present)
