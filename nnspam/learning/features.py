"""Features: token lists -> the input vector of the network.

Input neuron i is fed the number of times word i of the word list occurs in
the message, optionally scaled. Scalings:

``count``    the raw count, as in the original NNSpam.
``log``      log(1 + count): a word seen 40 times is not 40 times the evidence
             of a word seen once, and large raw counts saturate sigmoid units.
``binary``   1 if present, else 0.
``lognorm``  log(1 + count), the row then divided by its Euclidean norm, so
             long and short messages land on the same scale.
``tfidf``    (1 + log count) * idf, the row then divided by its Euclidean norm:
             the inputs of the ``deep`` architecture (``nnspam.learning.arch``). The idf of
             each word comes from the training messages, log((1 + N) / (1 + df)) + 1.

With ``ngram=2`` the tokens of a message are extended by the pairs of adjacent
tokens (joined by ``NGRAM_JOIN``), so a word list may hold word pairs too.

The default is chosen by measurement (README "Measurements").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["NGRAM_JOIN", "SCALINGS", "Vectorizer", "idf_weights", "with_ngrams"]

SCALINGS = ("count", "log", "binary", "lognorm", "tfidf")
# Joins the tokens of an n-gram; email tokens may contain spaces, never this.
NGRAM_JOIN = "\x1f"


def with_ngrams(toks: Sequence[str], ngram: int) -> list[str]:
    """The tokens followed by every run of 2..ngram adjacent tokens (joined)."""
    out = list(toks)
    for n in range(2, int(ngram) + 1):
        out.extend(NGRAM_JOIN.join(toks[i:i + n]) for i in range(len(toks) - n + 1))
    return out


def idf_weights(words: Sequence[str], docs: Sequence[Sequence[str]]) -> np.ndarray:
    """Smoothed inverse document frequency of each word over ``docs`` (token lists that
    already include their n-grams): ``log((1 + N) / (1 + df)) + 1``, as scikit-learn."""
    index = {w: i for i, w in enumerate(words)}
    df = np.zeros(len(words), dtype=np.float64)
    for toks in docs:
        hits = {j for j in map(index.get, toks) if j is not None}
        if hits:
            df[list(hits)] += 1.0
    return (np.log((1.0 + len(docs)) / (1.0 + df)) + 1.0).astype(np.float32)


class Vectorizer:
    """Maps token lists onto a fixed word list (the input layer)."""

    def __init__(self, words: Sequence[str], scaling: str = "log", ngram: int = 1,
                 idf: np.ndarray | None = None) -> None:
        if scaling not in SCALINGS:
            raise ValueError(f"unknown scaling {scaling!r} (use one of {SCALINGS})")
        if scaling == "tfidf" and (idf is None or len(idf) != len(words)):
            raise ValueError("tfidf scaling needs one idf weight per word")
        self.words = list(words)
        self.scaling = scaling
        self.ngram = int(ngram)
        self.idf = None if idf is None else np.asarray(idf, dtype=np.float32)
        self.index = {w: i for i, w in enumerate(self.words)}

    @property
    def n_inputs(self) -> int:
        return len(self.words)

    def counts(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """(m, n) float32 matrix of raw word counts."""
        X = np.zeros((len(token_lists), len(self.words)), dtype=np.float32)
        index = self.index
        for row, toks in enumerate(token_lists):
            if self.ngram > 1:
                toks = with_ngrams(toks, self.ngram)
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
        if self.scaling == "tfidf":
            present = X > 0
            np.log(X, out=X, where=present)
            X[present] += 1.0
            X *= self.idf
            norms = np.sqrt((X * X).sum(axis=1, keepdims=True))
            np.divide(X, norms, out=X, where=norms > 0)
            return X
        X = np.log1p(X, out=X)
        if self.scaling == "lognorm":
            norms = np.sqrt((X * X).sum(axis=1, keepdims=True))
            np.divide(X, norms, out=X, where=norms > 0)
        return X

    def transform(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """Token lists -> scaled (m, n) float32 feature matrix."""
        return self.scale(self.counts(token_lists))
