"""The wide path: every token of a message, hashed, straight to the spam logit.

The network sees only its n input words (8,000 for email), chosen on the training
mail; a user's own mail is full of words it has no input for (names, projects, their
correspondents' addresses and lists). A correction that can only move the network's
weights either fails to stick (small steps: the corrected message keeps its wrong
verdict) or damages what the network knew (steps large enough to flip the message also
flip others). The wide path is a linear layer beside the network, as in "wide & deep"
models (Cheng et al. 2016): each token is hashed (CRC-32, ``bits`` bits) to one weight,
a message's wide logit is the sum of its distinct tokens' weights divided by the square
root of their number (its binary token vector scaled to length 1), and that logit is
added to the network's logit of the spamicity::

    spamicity = sigmoid(log(s*o_spam / (h*o_ham)) + wide_logit)

It starts at zero, so a model without corrections scores exactly as the network alone.
Corrections (:func:`nnspam.model.correct.correct`) change it by the passive-aggressive rule
(Crammer et al. 2006): the smallest change of its weights that puts the corrected message
on its side of the threshold with the margin asked for, capped per correction. Because
the change is spread over the message's own tokens, it moves that message and the mail
that shares its tokens (the next issue of a newsletter, the same sender or list, the
same template) and nothing else. Measured: docs/lab/streams.md "Learning from a stream".

Stored with the model as two arrays (``wide_index``, ``wide_value``: the non-zero
weights), so an unused wide path costs nothing on disk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from nnspam.model.slots import Spread, SpreadSlots, hashes, sorted_unique, word_hashes, words_of

__all__ = ["Wide", "DEFAULT_BITS", "IDENTITY_PREFIXES"]

#: 2**20 weights (4 MB in memory, only non-zero ones on disk): collisions among the few
#: hundred thousand distinct tokens of a large mailbox stay rare.
DEFAULT_BITS = 20

#: Tokens that name who sent a message (its From, Sender and Reply-To addresses, the From
#: domain and the mailing list, nnspam/mail/tokens.py). They also form the wide path's identity
#: part, a second unit-length vector of their own: a long newsletter has a thousand content
#: tokens, and a correction spread over all of them gave its next issue (same sender, new
#: text) a few percent of the change, so one correction of a newsletter the network scored
#: at logit -30 moved none of its other issues (SpamAssassin hard_ham: 5 of 52 later issues
#: flipped). Broad domains (a webmail provider) are in much mail and keep a small share of
#: the identity part through their idf.
IDENTITY_PREFIXES = ("from:addr:", "sender:addr:", "reply-to:addr:", "from:domain:", "list:")
_IDENTITY_MARK = "\x00id:"


class Wide(SpreadSlots):
    """Hashed linear weights over all tokens (see the module docstring)."""

    PART = "wide"
    SPREAD = (Spread("_w", "wide_index", "wide_value", 0.0),
              Spread("_df", "wide_df_index", "wide_df", 0.0))

    def __init__(self, bits: int = DEFAULT_BITS, weights: np.ndarray | None = None) -> None:
        if not 8 <= int(bits) <= 26:
            raise ValueError(f"wide bits must be in 8..26, not {bits!r}")
        self.bits = int(bits)
        self.mask = (1 << self.bits) - 1
        if weights is None:
            weights = np.zeros(1 << self.bits, dtype=np.float32)
        elif weights.shape != (1 << self.bits,):
            raise ValueError(f"wide weights have shape {weights.shape}, want ({1 << self.bits},)")
        self._w: np.ndarray | None = weights
        self.updates = 0
        # messages seen per slot, and messages seen: the inverse document frequency that
        # weights a token's share of a correction (see _values)
        self._df: np.ndarray | None = None
        self.docs = 0
        # arrays read from a model, spread into w and df on first use: a process that only
        # classifies with an untaught wide path (the pipe filter) never allocates them
        self._saved: dict[str, np.ndarray] | None = None
        self._memo: tuple[object, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    @property
    def w(self) -> np.ndarray:
        """The weights, one per hashed slot."""
        return self._dense("_w")

    @property
    def df(self) -> np.ndarray:
        """Messages counted per hashed slot."""
        return self._dense("_df")

    def indices(self, tokens: Sequence[str]) -> np.ndarray:
        """The distinct hashed slots of a message's tokens (every part)."""
        return sorted_unique(np.concatenate(self._slots(tokens)))

    def counted(self, tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(slots, increments): what :meth:`observe` adds to the document counts for
        this message (a slot in two of its parts counts twice), for the correction
        journal (:mod:`nnspam.model.journal`)."""
        idx, counts = np.unique(np.concatenate(self._slots(tokens)), return_counts=True)
        return idx, counts.astype(np.float32)

    def _hash(self, tokens: Sequence[str]) -> np.ndarray:
        return sorted_unique(hashes(tokens) & self.mask)

    def _slots(self, tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The distinct hashed slots of the message's three parts: its content tokens, its
        identity tokens (:data:`IDENTITY_PREFIXES`, hashed apart from the same token as
        content) and its digest (one slot named by the set of its tokens: the same message
        again, or a copy that differs only in headers nnspam ignores).

        The last message's slots are kept: a message is scored, counted and learned in a
        row with the same token list (never changed once made, Model.tokens), and hashing
        its tokens each time took a fifth of a full-feedback replay."""
        memo = self._memo
        if memo is not None and memo[0] is tokens:
            return memo[1]
        out = self._slots_of(tokens)
        self._memo = (tokens, out)
        return out

    def _slots_of(self, tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        uniq = words_of(tokens)  # hashed once for the grams part too (model/slots.py)
        ident = [_IDENTITY_MARK + t for t in uniq if t.startswith(IDENTITY_PREFIXES)]
        digest = hashlib.blake2b("\x00".join(sorted(uniq)).encode("utf-8", "surrogateescape"),
                                 digest_size=8).digest()
        return (sorted_unique(word_hashes(tokens) & self.mask), self._hash(ident),
                np.array([int.from_bytes(digest, "little") & self.mask], dtype=np.int64))

    def observe(self, token_lists: Sequence[Sequence[str]]) -> None:
        """Count the messages' tokens (every message that arrives, learned or not)."""
        for toks in token_lists:
            for idx in self._slots(toks):
                self.df[idx] += 1.0
            self.docs += 1

    def add_counts(self, df: np.ndarray, docs: int) -> None:
        """Add document counts made elsewhere by :meth:`observe` on a path of the same
        size (shards counted on a Dask cluster, summed): the same counts as observing
        their messages here, since counting is a sum."""
        if df.shape != self.df.shape:
            raise ValueError(f"wide counts of shape {df.shape}, want {self.df.shape}")
        self.df[:] += df.astype(self.df.dtype, copy=False)
        self.docs += int(docs)

    def _values(self, idx: np.ndarray) -> np.ndarray:
        """Feature values of one part: each slot's idf, the vector scaled to length 1."""
        if not idx.size:
            return np.zeros(0)
        v = np.log((self.docs + 2.0) / (self.df[idx].astype(np.float64) + 1.0))
        norm = float(np.sqrt(v @ v))
        return v / norm if norm > 0 else v

    def logit(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """The wide logit of each message: its content part plus its identity part."""
        out = np.zeros(len(token_lists), dtype=np.float64)
        if not self.updates:
            return out
        w = self.w
        for i, toks in enumerate(token_lists):
            out[i] = sum(float(w[idx].astype(np.float64) @ self._values(idx))
                         for idx in self._slots(toks) if idx.size)
        return out

    def step(self, tokens: Sequence[str], change: float, content_max: float = 20.0) -> None:
        """Move each part of this message's wide logit by ``change`` (the content part by
        at most ``content_max``), with the smallest change of that part's weights: each
        slot by ``change * x_t`` (x the part's unit-length feature vector), so rare tokens
        take most of it and tokens found in most mail almost none.

        The content part is capped because it is shared with all other mail: a bound on
        how far one correction of a message the network scored at, say, logit -50 moves
        mail that merely shares its words. (On the 50-correction test of
        tests/test_stream.py the cap changed nothing: 15 SpamAssassin test spams missed
        with it and without; what mattered there was the idf of the training mail's token
        counts, without which 63 were missed.) The identity and digest parts belong to
        one sender and one message and carry the
        whole change: the message itself, its next copy and the sender's next message
        get the corrected verdict."""
        if change == 0.0:
            return
        capped = float(np.clip(change, -content_max, content_max))
        for part, idx in enumerate(self._slots(tokens)):
            if idx.size:
                c = capped if part == 0 else change
                self.w[idx] += (c * self._values(idx)).astype(np.float32)
        self.updates += 1

    @property
    def active(self) -> bool:
        """Whether any weight was ever changed (else the logit is 0 and not computed)."""
        return self.updates > 0

    @property
    def used(self) -> bool:
        """Whether there is anything to save (weights or token counts)."""
        return self.updates > 0 or self.docs > 0

    def meta(self) -> dict[str, int]:
        """What model.json records of the wide path."""
        return {"bits": self.bits, "updates": self.updates, "docs": self.docs}

    def arrays(self) -> dict[str, np.ndarray]:
        """The non-zero weights and counts, for the model's weights.npz."""
        nz = np.flatnonzero(self.w).astype(np.int32)
        seen = np.flatnonzero(self.df).astype(np.int32)
        return {"wide_index": nz, "wide_value": self.w[nz].astype(np.float32),
                "wide_df_index": seen, "wide_df": self.df[seen]}

    @classmethod
    def from_arrays(cls, meta: dict, arrays: dict[str, np.ndarray]) -> Wide:
        """A wide path from :meth:`meta` and :meth:`arrays` (ValueError, KeyError or
        TypeError if they do not fit)."""
        out = cls(int(meta["bits"]))
        out._w = None
        out._keep_saved(arrays)
        out.updates = int(meta.get("updates", 0)) if arrays["wide_index"].size else 0
        out.docs = int(meta.get("docs", 0))
        return out
