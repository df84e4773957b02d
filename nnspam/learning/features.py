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

The default is chosen by measurement (docs/lab/measurements.md "Measurements").

:meth:`Vectorizer.transform` returns a SciPy CSR matrix (float32): a message uses about
1.4 % of the 8000 input words (Enron-Spam's train part), so the dense (m, n) matrix of
earlier versions held 23,478 x 8000 float32 = 750 MB of mostly zeros and every copy of it
(the training part, the validation part) as much again. The sparse rows hold exactly the
values of the dense ones (``transform(..., sparse=False)``, kept for comparisons and for a
few messages). SciPy is imported only when a CSR matrix is built, so scoring one message
(``nnspam.model.core.Model.features``: dense below ``DENSE_ROWS`` messages) never loads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["NGRAM_JOIN", "SCALINGS", "Vectorizer", "idf_weights", "is_sparse", "row_norms",
           "stack_rows", "with_ngrams"]

SCALINGS = ("count", "log", "binary", "lognorm", "tfidf")
# Joins the tokens of an n-gram; email tokens may contain spaces, never this.
NGRAM_JOIN = "\x1f"
# Messages counted per pass when a CSR matrix is built: bounds the temporary arrays of
# column keys (one int64 per known token) to a few MB however many messages there are.
_COUNT_CHUNK_ROWS = 2048
# Row norms of sparse rows are taken over dense blocks of about this many elements (4 MB of
# float32), see row_norms.
_NORM_BLOCK_ELEMENTS = 1 << 20


def is_sparse(X: Any) -> bool:
    """Duck-typed test for a SciPy sparse matrix or array (does not import SciPy)."""
    return hasattr(X, "tocsr") and not isinstance(X, np.ndarray)


def row_norms(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
              n_cols: int) -> np.ndarray:
    """Euclidean norm (float32) of each row of a CSR matrix, equal to the bit to
    ``np.sqrt((X * X).sum(axis=1))`` of the same rows in a dense float32 array.

    Why not a sum over the stored values alone: NumPy sums a row pairwise, in an order set by
    the positions of the values among the row's n entries (the zeros included), and a float32
    sum in another order differs in the last bit for about one row in five (lognorm rows of
    8000 inputs). The rows are therefore laid out dense, a block of rows at a time (about
    ``_NORM_BLOCK_ELEMENTS`` elements, never the whole (m, n) matrix), and summed as the dense
    code sums them: one pass over m x n float32, about 0.1 s for Enron-Spam's train part.
    """
    m = len(indptr) - 1
    out = np.empty(m, dtype=np.float32)
    rows = max(1, _NORM_BLOCK_ELEMENTS // max(1, n_cols))
    block = np.zeros((min(rows, max(m, 1)), n_cols), dtype=np.float32)
    for lo in range(0, m, rows):
        hi = min(m, lo + rows)
        a, b = int(indptr[lo]), int(indptr[hi])
        B = block[: hi - lo]
        r = np.repeat(np.arange(hi - lo), np.diff(indptr[lo : hi + 1]))
        v = data[a:b]
        B[r, indices[a:b]] = v * v
        np.sqrt(B.sum(axis=1), out=out[lo:hi])
        B[r, indices[a:b]] = 0.0
    return out


def stack_rows(blocks: Sequence[Any]) -> Any:
    """The rows of ``blocks`` one after the other: a CSR matrix when any block is sparse
    (SciPy imported then only), else a NumPy array."""
    if any(is_sparse(b) for b in blocks):
        import scipy.sparse as sps

        return sps.vstack([sps.csr_array(b) for b in blocks], format="csr")
    return np.concatenate(blocks)


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

    def transform(self, token_lists: Sequence[Sequence[str]], sparse: bool = True) -> Any:
        """Token lists -> the scaled (m, n) float32 feature matrix: a SciPy ``csr_array``,
        or with ``sparse=False`` a dense NumPy array with the same values (the features of
        earlier versions, for a few messages and to force the dense path for comparisons:
        ``scripts/bench/sparse.py``)."""
        if not sparse:
            return self.scale(self.counts(token_lists))
        import scipy.sparse as sps

        indptr, indices, data = self.sparse_counts(token_lists)
        data = self.scale_values(indptr, indices, data)
        return sps.csr_array((data, indices, indptr), shape=(len(indptr) - 1, self.n_inputs))

    def sparse_counts(self, token_lists: Iterable[Sequence[str]]) -> tuple[
            np.ndarray, np.ndarray, np.ndarray]:
        """The raw word counts in CSR form, ``(indptr, indices, data)``: row i's columns
        ``indices[indptr[i]:indptr[i+1]]`` in increasing order, its counts (float32, never 0)
        in ``data``. NumPy only; the rows of :meth:`counts`, without the zeros."""
        n = len(self.words)
        index, ngram = self.index, self.ngram
        lengths: list[int] = []
        idx_parts: list[np.ndarray] = []
        cnt_parts: list[np.ndarray] = []
        hits: list[int] = []
        chunk: list[int] = []

        def flush() -> None:
            counts = np.asarray(chunk, dtype=np.int64)
            rows = np.repeat(np.arange(len(chunk), dtype=np.int64), counts)
            keys, per_key = np.unique(rows * n + np.asarray(hits, dtype=np.int64),
                                      return_counts=True)
            r = keys // n
            idx_parts.append(keys - r * n)
            cnt_parts.append(per_key)
            lengths.extend(np.bincount(r, minlength=len(chunk)).tolist())
            hits.clear()
            chunk.clear()

        for toks in token_lists:
            if ngram > 1:
                toks = with_ngrams(toks, ngram)
            before = len(hits)
            hits.extend(j for j in map(index.get, toks) if j is not None)
            chunk.append(len(hits) - before)
            if len(chunk) >= _COUNT_CHUNK_ROWS:
                flush()
        if chunk:
            flush()
        indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        small = int(indptr[-1]) < 2**31 and n < 2**31
        itype = np.int32 if small else np.int64
        indices = (np.concatenate(idx_parts) if idx_parts else np.empty(0)).astype(itype)
        data = (np.concatenate(cnt_parts) if cnt_parts else np.empty(0)).astype(np.float32)
        return indptr.astype(itype), indices, data

    def scale_values(self, indptr: np.ndarray, indices: np.ndarray,
                     data: np.ndarray) -> np.ndarray:
        """:meth:`scale` for the stored values of a CSR count matrix (``data`` may be
        overwritten): the same float32 operations on the same values, and for the
        row-normalised scalings the dense rows' norms (:func:`row_norms`)."""
        data = np.asarray(data, dtype=np.float32)
        if self.scaling == "count":
            return data
        if self.scaling == "binary":
            return (data > 0).astype(np.float32)
        if self.scaling == "tfidf":
            assert self.idf is not None
            np.log(data, out=data)
            data += 1.0
            data *= self.idf[indices]
        else:
            np.log1p(data, out=data)
            if self.scaling != "lognorm":
                return data
        norms = row_norms(indptr, indices, data, len(self.words))
        per_value = np.repeat(norms, np.diff(indptr))
        np.divide(data, per_value, out=data, where=per_value > 0)
        return data
