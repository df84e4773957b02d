"""Features: token lists -> the input vector of the network.

Input neuron i is fed the number of times word i of the word list occurs in
the message, optionally scaled. Scalings:

``count``    the raw count, as in the original NNSpam.
``log``      log(1 + count): a word seen 40 times is not 40 times the evidence
             of a word seen once, and large raw counts saturate sigmoid units.
``binary``   1 if present, else 0.
``lognorm``  log(1 + count), the row then divided by its Euclidean norm, so
             long and short messages land on the same scale.

The default is chosen by measurement (README "Measurements").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["SCALINGS", "Vectorizer"]

SCALINGS = ("count", "log", "binary", "lognorm")


class Vectorizer:
    """Maps token lists onto a fixed word list (the input layer)."""

    def __init__(self, words: Sequence[str], scaling: str = "log") -> None:
        if scaling not in SCALINGS:
            raise ValueError(f"unknown scaling {scaling!r} (use one of {SCALINGS})")
        self.words = list(words)
        self.scaling = scaling
        self.index = {w: i for i, w in enumerate(self.words)}

    @property
    def n_inputs(self) -> int:
        return len(self.words)

    def counts(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """(m, n) float32 matrix of raw word counts."""
        X = np.zeros((len(token_lists), len(self.words)), dtype=np.float32)
        index = self.index
        for row, toks in enumerate(token_lists):
            hits = [j for j in map(index.get, toks) if j is not None]
            if hits:
                np.add.at(X[row], hits, 1.0)
        return X

    def scale(self, X: np.ndarray) -> np.ndarray:
        """Apply the scaling to a raw count matrix (in place when possible)."""
        if self.scaling == "count":
            return X
        if self.scaling == "binary":
            return (X > 0).astype(np.float32)
        X = np.log1p(X, out=X)
        if self.scaling == "lognorm":
            norms = np.sqrt((X * X).sum(axis=1, keepdims=True))
            np.divide(X, norms, out=X, where=norms > 0)
        return X

    def transform(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """Token lists -> scaled (m, n) float32 feature matrix."""
        return self.scale(self.counts(token_lists))
