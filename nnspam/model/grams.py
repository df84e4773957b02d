"""The grams part: what a user's own mail carries beyond words, learned from that mail.

nnspam's tokenizer keeps words and leaves out the delivery headers (Received, Date,
Return-Path...), because in the SpamAssassin corpus the shipped model is trained on they
are artifacts of how ham and spam were collected. On a user's own server they are the
relays, networks, HELO names, clocks and mailers the mail really came through, and they
carry most of the evidence: on the first 20,000 messages of a real server's stream (TREC
2007, full feedback) the byte 4-gram logistic regression of the literature (Goodman and
Yih 2006) ranks 0.0084% (1-ROCA) where nnspam's network and wide path ranked 0.036%.

So the model has a third part, beside the network and the wide path: a linear learner
over binary hashed features,

* the distinct overlapping 4-byte windows of the message's first :data:`HEAD_BYTES` bytes
  (headers included; for an SMS its text), carried to it by the head token the model's
  tokenizer appends (:data:`nnspam.mail.tokens.HEAD_MARK`), and
* the message's own tokens,

hashed into ``2**bits`` slots and learned by AROW (Crammer, Kulesza and Dredze 2009,
diagonal): a per-slot confidence ``sig`` that shrinks as a slot is seen, and after each
learned message the hinge update at margin 1 scaled by it. It starts at zero in every
model (the shipped ones included: none of the SpamAssassin corpus's collection artifacts
are in it), learns every message a user's model learns (full feedback) or is corrected
on, and enters the score as :func:`combine` says. Measured against the alternatives
(logistic steps at 0.002 and 0.005, AdaGrad; byte 4-grams alone; 2**22 slots):
docs/lab/streams.md and docs/lab/learner-probes.md.

Stored with the model as sparse arrays (the non-zero weights, the confidences below 1),
so an untaught part costs nothing on disk; 2**20 slots are 8 MB in memory once used
(2**22 ranked the same: TREC 0.0079% either way, enron5 0.1131% and 0.1130%).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnspam.mail.tokens import HEAD_MARK
from nnspam.model.slots import Spread, SpreadSlots, sorted_unique, word_hashes

__all__ = ["Grams", "DEFAULT_BITS", "HEAD_BYTES", "NNSPAM_CAP", "GRAMS_WEIGHT", "GRAMS_BIAS",
           "GRAMS_CAP", "combine", "max_logit"]

#: How far past the threshold a correction leaves a message on the whole score, when the
#: grams part has to make up what the other two leave (nnspam.model.correct): enough to
#: stick. Pushing to the full margins instead (16 for a ham) bent the grams part on TREC's
#: mistakes: 1-ROCA 0.0095% against 0.0079% without any push.
STICK_MARGIN = 1.0

#: The kinds of model that have the part. Not SMS: a text message has no headers, and its
#: text's 4-grams beside the SMS network ranked the SMS collection worse (full feedback
#: from an untrained start, file order: 1-ROCA 1.083% with them, 0.724% without; hams lost
#: 1 and 3, spams missed 115 and 108).
KINDS = ("email",)

#: Slots of the hashed features (see the module docstring for the measurement).
DEFAULT_BITS = 20

#: Bytes of the message the 4-grams are taken from: the reference's 3,000, which hold the
#: delivery headers of nearly all mail and the start of the body.
HEAD_BYTES = 3000

#: AROW's regularizer r: how far one message moves a fresh slot (1 as in the paper's
#: experiments; with r = 1 a message with many new slots is learned to about its margin).
AROW_R = 1.0

#: How the parts add up once the grams part has learned (:func:`combine`): the network
#: and wide path's logit, taken without the ham bias, is bounded to +-NNSPAM_CAP, and the
#: grams part enters as GRAMS_WEIGHT * (its margin - GRAMS_BIAS). Chosen on the full-feedback
#: streams from an untrained start (lazy network steps), 1-ROCA %, TREC 1-20,000 / SA by
#: date / enron1-6: neither part alone 0.0387 / 0.120 / 0.285 0.131 0.160 0.117 0.104 0.296
#: (nnspam) and 0.0056 / 0.187 / 0.708 ... (grams alone, 0.24-0.71 on Enron); bound 10,
#: weight 2: 0.0079 / 0.110 / 0.251 0.103 0.108 0.100 0.113 0.259. Bound 8 ranked TREC
#: better and SA worse, 12-16 the reverse; weight 1 left TREC at 0.0093%, 3-4 cost enron5
#: (0.124-0.137%); a learned combiner of the two (logistic or hinge, online) ranked worse
#: than the fixed one on six of eight. The bias of 1 (in units of the grams margin, 0.5)
#: keeps the hams lost where nnspam alone had them: TREC 7 instead of 12, SA 14 (16),
#: enron1 11 (10), enron3 1 (1), enron6 16 (19), with fewer spams missed on all.
#: The grams margin counts up to +-GRAMS_CAP (a hinge learner's margins rarely pass 3: the
#: figures above are the same with the bound to the last digit), so the score of a message is
#: at most NNSPAM_CAP + GRAMS_WEIGHT * (GRAMS_CAP - GRAMS_BIAS) + log(s/h) = 12.8 at the
#: default ham bias: spamicity 0.999997, never the 1.000000 of certainty, however long the
#: message and however much spam shares its words.
NNSPAM_CAP = 10.0
GRAMS_WEIGHT = 2.0
GRAMS_BIAS = 0.5
GRAMS_CAP = 3.0

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def combine(nnspam_logit: np.ndarray, grams_margin: np.ndarray | None,
            ham_bias: float) -> np.ndarray:
    """The spamicity's logit from the network and wide path's logit (``nnspam_logit``, at
    the ham bias ``ham_bias`` = log(s/h)) and the grams part's margin (None while that part
    has learned nothing: the score is then ``nnspam_logit`` unchanged). No part alone can
    make a message certain, and together they are bounded (:data:`GRAMS_CAP`)."""
    if grams_margin is None:
        return nnspam_logit
    body = np.clip(np.asarray(nnspam_logit, dtype=np.float64) - ham_bias, -NNSPAM_CAP, NNSPAM_CAP)
    g = np.clip(np.asarray(grams_margin, np.float64), -GRAMS_CAP, GRAMS_CAP)
    return body + ham_bias + GRAMS_WEIGHT * (g - GRAMS_BIAS)


def max_logit(ham_bias: float) -> float:
    """The highest score :func:`combine` can give once the grams part has learned."""
    return NNSPAM_CAP + GRAMS_WEIGHT * (GRAMS_CAP - GRAMS_BIAS) + ham_bias


def head_of(tokens: Sequence[str]) -> bytes:
    """The raw head a token list carries (its last token, when the model's tokenizer put
    one there), or b""."""
    if tokens and tokens[-1].startswith(HEAD_MARK):
        return tokens[-1][len(HEAD_MARK):].encode("latin-1")
    return b""


class Grams(SpreadSlots):
    """Hashed byte 4-grams and tokens, learned by AROW (see the module docstring)."""

    PART = "grams"
    SPREAD = (Spread("_w", "grams_index", "grams_value", 0.0),
              Spread("_sig", "grams_sig_index", "grams_sig", 1.0))

    def __init__(self, bits: int = DEFAULT_BITS) -> None:
        if not 8 <= int(bits) <= 26:
            raise ValueError(f"grams bits must be in 8..26, not {bits!r}")
        self.bits = int(bits)
        self.mask = (1 << self.bits) - 1
        self.updates = 0  # messages learned
        self._w: np.ndarray | None = None
        self._sig: np.ndarray | None = None
        self._saved: dict[str, np.ndarray] | None = None
        self._memo: tuple[object, np.ndarray] | None = None

    # -- the arrays, made on first use (SpreadSlots) ------------------------------
    @property
    def w(self) -> np.ndarray:
        """The weights, one per hashed slot."""
        return self._dense("_w")

    @property
    def sig(self) -> np.ndarray:
        """AROW's per-slot variance (1 for a slot never learned)."""
        return self._dense("_sig")

    @property
    def active(self) -> bool:
        """Whether any message was learned (else the part is left out of the score)."""
        return self.updates > 0

    # -- features -----------------------------------------------------------------
    def slots(self, tokens: Sequence[str]) -> np.ndarray:
        """The distinct hashed slots of a message: its head's 4-byte windows and its
        tokens (the head token itself excluded)."""
        memo = self._memo
        if memo is not None and memo[0] is tokens:  # the same message again (Wide._slots)
            return memo[1]
        raw = head_of(tokens)
        parts = []
        if len(raw) >= 4:
            b = np.frombuffer(raw[:HEAD_BYTES], dtype=np.uint8).astype(np.uint64)
            g = (b[:-3] << np.uint64(24)) | (b[1:-2] << np.uint64(16)) | (
                b[2:-1] << np.uint64(8)) | b[3:]
            parts.append(((g * _GOLDEN) >> np.uint64(64 - self.bits)).astype(np.int64))
        parts.append(word_hashes(tokens) & self.mask)  # hashed once for the wide path too
        out = sorted_unique(np.concatenate(parts))
        self._memo = (tokens, out)
        return out

    def margins(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray | None:
        """Each message's margin w.x (None while nothing was learned)."""
        if not self.active:
            return None
        w = self.w
        return np.array([float(w[self.slots(t)].sum(dtype=np.float64)) for t in token_lists])

    # -- learning -----------------------------------------------------------------
    def learn(self, tokens: Sequence[str], label: str, min_margin: float = 1.0
              ) -> tuple[float, float]:
        """One AROW step on a message of class ``label`` if its margin is below
        ``min_margin`` on that side: ``w += a * sig``, ``sig -= beta * sig**2`` on the
        message's slots. Returns (a, beta), (0, 0) if nothing changed: with the message
        they are all :meth:`unlearn` needs (the correction journal keeps two numbers, not
        the thousands of slots)."""
        idx = self.slots(tokens)
        self.updates += 1
        ys = 1.0 if label == "spam" else -1.0
        w, sig = self.w, self.sig
        m = float(w[idx].sum(dtype=np.float64))
        if ys * m >= min_margin or not idx.size:
            return 0.0, 0.0
        s = sig[idx].astype(np.float64)
        beta = 1.0 / (float(s.sum()) + AROW_R)
        a = (min_margin - ys * m) * beta * ys
        w[idx] += (a * s).astype(np.float32)
        sig[idx] = (s - beta * s * s).astype(np.float32)
        return a, beta

    def unlearn(self, tokens: Sequence[str], a: float, beta: float, push: float) -> None:
        """Undo :meth:`learn`'s step (a, beta) and :meth:`push`'s (push) on this message,
        the latest change of its slots: the variances before the step are the smaller root
        of ``s - beta * s**2 = sig``."""
        idx = self.slots(tokens)
        if not idx.size:
            return
        if push:
            self.w[idx] -= np.float32(push / idx.size)
        if beta:
            after = self.sig[idx].astype(np.float64)
            disc = np.maximum(1.0 - 4.0 * beta * after, 0.0)
            s = (1.0 - np.sqrt(disc)) / (2.0 * beta)
            self.w[idx] -= (a * s).astype(np.float32)
            self.sig[idx] = s.astype(np.float32)

    def push(self, tokens: Sequence[str], change: float) -> None:
        """Move this message's margin by ``change`` with the smallest change of its
        weights (every slot alike): what a correction adds when the sum of the parts is
        still short of its margin."""
        idx = self.slots(tokens)
        if idx.size and change:
            self.w[idx] += np.float32(change / idx.size)

    # -- storage ------------------------------------------------------------------
    def meta(self) -> dict[str, int]:
        """What model.json records of the part."""
        return {"bits": self.bits, "updates": self.updates}

    def arrays(self) -> dict[str, np.ndarray]:
        """The non-zero weights and the variances below 1, for weights.npz."""
        nz = np.flatnonzero(self.w).astype(np.int32)
        seen = np.flatnonzero(self.sig != 1.0).astype(np.int32)
        return {"grams_index": nz, "grams_value": self.w[nz].astype(np.float32),
                "grams_sig_index": seen, "grams_sig": self.sig[seen].astype(np.float32)}

    @classmethod
    def from_arrays(cls, meta: dict, arrays: dict[str, np.ndarray]) -> Grams:
        """The part from :meth:`meta` and :meth:`arrays` (ValueError, KeyError or
        TypeError if they do not fit)."""
        out = cls(int(meta["bits"]))
        out._keep_saved(arrays)
        out.updates = int(meta.get("updates", 0))
        return out

    @classmethod
    def from_dense(cls, bits: int, w: np.ndarray, sig: np.ndarray, updates: int) -> Grams:
        """The part from its two dense vectors (a per-user model's delta overlay)."""
        out = cls(bits)
        size = 1 << out.bits
        if w.shape != (size,) or sig.shape != (size,):
            raise ValueError(f"the grams arrays are not of length 2**{bits}")
        out._w, out._sig = np.asarray(w, np.float32), np.asarray(sig, np.float32)
        out.updates = max(int(updates), 0)
        return out
