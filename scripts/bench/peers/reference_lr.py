"""The reference learner of the TREC spam track, in NumPy: the peer ``reference`` of
``scripts/bench/stream.py`` (issue 23).

Written from the description of Goodman and Yih 2006 ("Online discriminative spam filter
training") and Cormack, TREC 2007, which the track's best runs were built on:

- features: the overlapping 4-byte substrings of the first 3,000 bytes of the raw message,
  headers included, hashed into 2^22 slots, binary (a slot counts once however often it
  occurs);
- logistic regression, weights zero at the start; the score is ``w.x``, the sum of the
  weights of the slots present (a log-odds: spam when above 0);
- learning a message: one gradient step, ``w[slot] += 0.002 * (y - sigmoid(w.x))`` for each
  slot present, ``y`` 1 for spam, 0 for ham.

The hash: the four bytes read as a little-endian 32-bit word, times Knuth's multiplicative
constant 2654435761 (odd, near 2^32 / golden ratio) modulo 2^32, and the top 22 bits kept.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

BITS = 22  # 2^22 weight slots
PREFIX = 3000  # bytes of the message read
RATE = 0.002  # the gradient step
_MULT = np.uint32(2654435761)
_SHIFT = np.uint32(32 - BITS)


def features(raw: bytes) -> np.ndarray:
    """The distinct slots (sorted, int64) of the 4-byte substrings of ``raw[:3000]``."""
    b = np.frombuffer(raw[:PREFIX], dtype=np.uint8).astype(np.uint32)
    if len(b) < 4:
        return np.empty(0, dtype=np.int64)
    words = b[:-3] | (b[1:-2] << 8) | (b[2:-1] << 16) | (b[3:] << 24)
    return np.unique((words * _MULT) >> _SHIFT).astype(np.int64)


def sigmoid(z: float) -> float:
    """1 / (1 + e^-z), without overflow for any z."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class ReferenceLR:
    """The weights and the two operations of the online protocol."""

    def __init__(self, weights: np.ndarray | None = None) -> None:
        self.w = (np.zeros(1 << BITS, dtype=np.float64) if weights is None
                  else np.asarray(weights, dtype=np.float64))

    def score(self, slots: np.ndarray) -> float:
        """``w.x``: the log-odds that the message is spam (spam when > 0)."""
        return float(self.w[slots].sum())

    def learn(self, slots: np.ndarray, spam: bool, score: float | None = None) -> None:
        """One logistic-regression step on a message (``score``: its ``w.x`` if known)."""
        z = self.score(slots) if score is None else score
        self.w[slots] += RATE * ((1.0 if spam else 0.0) - sigmoid(z))

    def save(self, path: str | Path) -> None:
        np.save(path, self.w)

    @classmethod
    def load(cls, path: str | Path) -> ReferenceLR:
        return cls(np.load(path))
