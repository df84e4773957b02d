"""Hashed feature slots, shared by the parts of a model that learn from every word of a
message rather than from the network's input words: the wide path
(:mod:`nnspam.model.wide`), the grams part (:mod:`nnspam.model.grams`) and the
explanations of both (:mod:`nnspam.model.explain`).

A word's slot is its CRC-32 (UTF-8, undecodable bytes kept by ``surrogateescape``) masked
to the part's size. One function hashes, so a slot means the same word to every part and
to the explanation that names it.

Speed, measured on the first 20,000 messages of the TREC 2007 stream with the tokens made
beforehand (``nnspam stream -m default --feedback errors``: every message scored, counted
and observed, 166 learned): a message's distinct words were hashed twice, once by the wide
path and once by the grams part, and each part deduplicated its slots with ``np.unique``,
whose hash-based path in NumPy 2.4 took 39 us on 600 slots against 4.6 us for sorting and
comparing neighbours. Hashing each message's words once (:func:`word_hashes`) and
:func:`sorted_unique` took the model's side of that stream from 810 to 1,258 messages/s
(full feedback from an untrained start: 472 to 592), with the same figures to the last digit.

Both parts also keep their learning the same way: two dense float32 vectors over the slots
(the weights and a per-slot statistic), saved as sparse (index, value) arrays and spread into
the vectors on first use (:class:`SpreadSlots`), so a process that only classifies with an
untaught part never allocates them.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np

__all__ = ["Spread", "SpreadSlots", "sorted_unique", "token_hash", "word_hashes", "words_of"]


def token_hash(token: str) -> int:
    """The unmasked hash of one token (mask it to a part's size: ``& mask``)."""
    return zlib.crc32(token.encode("utf-8", "surrogateescape"))


def hashes(tokens: Sequence[str]) -> np.ndarray:
    """:func:`token_hash` of each token, in order (int64)."""
    return np.fromiter((zlib.crc32(t.encode("utf-8", "surrogateescape")) for t in tokens),
                       dtype=np.int64, count=len(tokens))


_memo: tuple[Sequence[str], list[str], np.ndarray] | None = None


def _words(tokens: Sequence[str]) -> tuple[list[str], np.ndarray]:
    global _memo
    memo = _memo
    if memo is not None and memo[0] is tokens:
        return memo[1], memo[2]
    # the head token (nnspam.mail.tokens.HEAD_MARK) is the grams part's raw bytes, not a word
    words = [t for t in set(tokens) if t[:1] != "\x00"]
    crcs = hashes(words)
    _memo = (tokens, words, crcs)
    return words, crcs


def words_of(tokens: Sequence[str]) -> list[str]:
    """A message's distinct words (its tokens but the head token), in no set order.

    The last message's words and hashes are kept: a message is scored, counted and learned
    in a row with the same token list (never changed once made, ``Model.tokens``) by
    the wide path and the grams part alike."""
    return _words(tokens)[0]


def word_hashes(tokens: Sequence[str]) -> np.ndarray:
    """:func:`token_hash` of each of :func:`words_of` ``tokens``, in the same order."""
    return _words(tokens)[1]


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique(a)`` of a one-dimensional array, by sorting and comparing neighbours
    (8 times faster than ``np.unique`` on a message's few hundred slots, see above)."""
    s = np.sort(a)
    if s.size < 2:
        return s
    keep = np.empty(s.size, dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


class Spread(NamedTuple):
    """One dense vector of a :class:`SpreadSlots` part: the attribute that holds it (None
    until made), the names of its sparse arrays in a model's weights.npz, and the value of
    a slot they do not list."""

    attr: str
    index_array: str
    value_array: str
    fill: float


class SpreadSlots:
    """What the wide path and the grams part share: dense float32 vectors over ``2**bits``
    hashed slots (:data:`SPREAD`), which a model's files hold sparse and which are made
    from those arrays when first used (see the module docstring).

    A subclass sets ``bits``, its vectors' attributes (None, or a dense vector) and
    ``_saved`` (None) in its ``__init__``, reads each vector by :meth:`_dense` and keeps
    the arrays of a model's files with :meth:`_keep_saved`."""

    #: The part's name: its key in model.json (:mod:`nnspam.model.core`).
    PART: ClassVar[str]
    #: The dense vectors, in the order their arrays are saved.
    SPREAD: ClassVar[tuple[Spread, ...]]

    bits: int
    _saved: dict[str, np.ndarray] | None

    @classmethod
    def saved_names(cls) -> tuple[str, ...]:
        """The names of the part's arrays in weights.npz: each vector's index and values."""
        return tuple(n for s in cls.SPREAD for n in (s.index_array, s.value_array))

    def _dense(self, attr: str) -> Any:
        """The dense vector held by ``attr``, made first if it is not yet."""
        if self._saved is not None or getattr(self, attr) is None:
            self._spread()
        return getattr(self, attr)

    def _spread(self) -> None:
        """Make the vectors not made yet (each of its fill value) and write the saved
        arrays into them (once: they are dropped then)."""
        size = 1 << self.bits
        saved, self._saved = self._saved, None
        for s in self.SPREAD:
            vec = getattr(self, s.attr)
            if vec is None:
                vec = (np.zeros(size, dtype=np.float32) if s.fill == 0.0
                       else np.full(size, s.fill, dtype=np.float32))
                setattr(self, s.attr, vec)
            if saved:
                vec[saved[s.index_array]] = saved[s.value_array]

    def _keep_saved(self, arrays: dict[str, np.ndarray]) -> None:
        """Keep a model's sparse arrays of the part (:meth:`saved_names`), to be spread on
        first use; ValueError or KeyError if they do not fit ``2**bits`` slots."""
        size = 1 << self.bits
        for s in self.SPREAD:
            index, value = arrays[s.index_array], arrays[s.value_array]
            if index.shape != value.shape or index.ndim != 1:
                raise ValueError(f"{s.index_array} and {s.value_array} differ in shape")
            if index.size and (index.min() < 0 or index.max() >= size):
                raise ValueError(f"{s.index_array} out of range")
        self._saved = {k: arrays[k] for k in self.saved_names()}
