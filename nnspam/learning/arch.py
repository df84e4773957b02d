"""The architectures beyond nnspam's n-h-2 network, in NumPy: forward pass and training.

nnspam's own network (``arch: nnspam``) is
:class:`nnspam.learning.network.Network`. This module holds the two other
architectures that ``nnspam train --arch`` offers:

``deep``
    a regularised deep ReLU network in the spirit of DBB-RDNN-ReL (Barushka & Hajek 2018):
    tf-idf inputs over word and word-pair (n-gram) features, several ReLU layers, dropout after
    each of them, L2 on the weights, two softmax outputs (o_spam, o_ham).
``sms-embedding``
    the Keras SMS tutorial's model: each message becomes a fixed-length sequence of word
    indices, looked up in a learned embedding (24 numbers per word), flattened, then Dense
    500/200/100 ReLU, dropout, one sigmoid unit.  Its outputs are ``(p, 1 - p)``.

Both are one class, :class:`MLP`: an optional embedding lookup, then dense layers.  It does
the forward pass with which every model is served (whatever trained it: NumPy or Keras) and
its own mini-batch Adam training with early stopping, so both architectures train without
TensorFlow too and ``nnspam learn`` / the daemon can correct them (``partial_fit``).

Weights: ``W1, b1, ..., Wk, bk`` for the k dense layers, the last being the output layer;
with an embedding, ``W1`` is the embedding (vocabulary + 1 rows, the last one padding; no
bias) and the dense layers are ``W2, b2, ...``.  Row ``i`` of ``W1`` always belongs to input
``i``.  The
objective is the mean loss plus ``l2/2 * sum |W_i|^2`` over the dense kernels, as in
:class:`nnspam.learning.network.Network`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nnspam.learning.features import is_sparse, row_norms, stack_rows
from nnspam.learning.network import (
    Learner,
    adam_block,
    early_stopping_loop,
    sigmoid,
    stratified_split,
)

__all__ = ["ARCHS", "BALANCES", "MLP", "SequenceEncoder", "dbb_oversample"]

ARCHS = ("nnspam", "deep", "sms-embedding")
_OUTPUTS = ("softmax", "sigmoid")
_ADAM = (0.9, 0.999, 1e-8)
# Adam updates run in row blocks of about this many elements (cache-sized, as in Network).
_UPDATE_BLOCK_ELEMENTS = 1 << 17
_PREDICT_BLOCK_ROWS = 4096

ProgressFn = Callable[[int, float, float, float], Any]


class SequenceEncoder:
    """Token lists -> fixed-length rows of word indices (the embedding model's input).

    Word ``i`` of ``words`` has index ``i``; ``len(words)`` is padding (the last row of the
    embedding, so that row ``i`` of the input weights ``W1`` belongs to word ``i`` in every
    architecture, as the adaptive input words expect).  Tokens not in the vocabulary are
    skipped, the first ``length`` known tokens are kept and the row is padded at the end,
    as Keras' ``Tokenizer`` + ``pad_sequences(padding="post", truncating="post")`` do.
    """

    def __init__(self, words: Sequence[str], length: int) -> None:
        if int(length) < 1:
            raise ValueError(f"sequence length must be >= 1, got {length}")
        self.words = list(words)
        self.length = int(length)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.scaling = "index"

    @property
    def n_inputs(self) -> int:
        return len(self.words)

    def transform(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """(m, length) int32 matrix of word indices (``len(words)`` = padding)."""
        X = np.full((len(token_lists), self.length), len(self.words), dtype=np.int32)
        index, n = self.index, self.length
        for row, toks in enumerate(token_lists):
            ids = [j for j in map(index.get, toks) if j is not None][:n]
            if ids:
                X[row, : len(ids)] = ids
        return X


class MLP(Learner):
    """Optional embedding lookup, dense ReLU layers with dropout, a softmax-2 or sigmoid output.

    Args:
        n_inputs: input features, or the vocabulary size when ``embedding`` is set.
        layers: widths of the hidden ReLU layers.
        output: ``"softmax"`` (two units, o_spam and o_ham) or ``"sigmoid"`` (one unit p;
            the outputs are reported as ``(p, 1 - p)``).
        dropout: dropout probability after each hidden layer (a list, one per layer).
        embedding: embedding width, or None for dense (e.g. tf-idf) inputs.
        length: sequence length (embedding models only).
        l2, learning_rate, batch_size, max_epochs, patience, validation_fraction,
        class_weight, seed: as in :class:`nnspam.learning.network.Network`.
    """

    def __init__(
        self,
        n_inputs: int,
        layers: Sequence[int] = (256, 128, 64),
        output: str = "softmax",
        dropout: Sequence[float] | float = 0.5,
        embedding: int | None = None,
        length: int | None = None,
        l2: float = 1e-5,
        learning_rate: float = 1e-3,
        batch_size: int = 32,
        max_epochs: int = 60,
        patience: int = 8,
        validation_fraction: float = 0.1,
        class_weight: Sequence[float] | None = None,
        seed: int = 0,
    ) -> None:
        if int(n_inputs) < 1:
            raise ValueError(f"n_inputs must be >= 1, got {n_inputs}")
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}, got {output!r}")
        layers = [int(h) for h in layers]
        if not layers or min(layers) < 1:
            raise ValueError(f"layers must be a non-empty list of widths >= 1, got {layers}")
        if isinstance(dropout, int | float):
            dropout = [float(dropout)] * len(layers)
        dropout = [float(d) for d in dropout]
        if len(dropout) != len(layers) or not all(0.0 <= d < 1.0 for d in dropout):
            raise ValueError(f"dropout must be one value in [0, 1) per layer, got {dropout}")
        if (embedding is None) != (length is None):
            raise ValueError("embedding and length go together")
        self.n_inputs = int(n_inputs)
        self.layers = layers
        self.output = output
        self.dropout = dropout
        self.embedding = int(embedding) if embedding is not None else None
        self.length = int(length) if length is not None else None
        self.l2 = float(l2)
        self.learning_rate = float(learning_rate)
        self.batch_size = int(batch_size)
        self.max_epochs = int(max_epochs)
        self.patience = int(patience)
        self.validation_fraction = float(validation_fraction)
        self.class_weight = (
            (float(class_weight[0]), float(class_weight[1])) if class_weight is not None else None
        )
        self.seed = int(seed)
        self._init_learner()

    # ------------------------------------------------------------------ description

    @property
    def hidden_size(self) -> int:
        """Width of the first hidden layer (what ``nnspam inspect`` shows)."""
        return self.layers[0]

    @property
    def n_out(self) -> int:
        return 2 if self.output == "softmax" else 1

    def get_config(self) -> dict[str, Any]:
        """All constructor arguments, JSON-serialisable: ``MLP(**cfg)`` rebuilds it."""
        return {
            "n_inputs": self.n_inputs, "layers": list(self.layers), "output": self.output,
            "dropout": list(self.dropout), "embedding": self.embedding, "length": self.length,
            "l2": self.l2, "learning_rate": self.learning_rate, "batch_size": self.batch_size,
            "max_epochs": self.max_epochs, "patience": self.patience,
            "validation_fraction": self.validation_fraction,
            "class_weight": list(self.class_weight) if self.class_weight else None,
            "seed": self.seed,
        }

    def dense_names(self) -> list[tuple[str, str]]:
        """(kernel, bias) names of the dense layers, output layer last."""
        first = 2 if self.embedding is not None else 1
        return [(f"W{i}", f"b{i}") for i in range(first, first + len(self.layers) + 1)]

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every weight array, in layer order."""
        shapes: dict[str, tuple[int, ...]] = {}
        if self.embedding is not None:
            shapes["W1"] = (self.n_inputs + 1, self.embedding)
            assert self.length is not None  # set with embedding (__init__)
            width = self.length * self.embedding
        else:
            width = self.n_inputs
        for (w, b), h in zip(self.dense_names(), [*self.layers, self.n_out], strict=True):
            shapes[w] = (width, h)
            shapes[b] = (h,)
            width = h
        return shapes

    # ------------------------------------------------------------------ weights

    def get_weights(self) -> dict[str, np.ndarray]:
        params = self.require_params()
        return {k: v.copy() for k, v in params.items()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Install weights (float32 copies); names and shapes must match exactly."""
        shapes = self.param_shapes()
        if set(weights) != set(shapes):
            raise ValueError(f"weights must be exactly {sorted(shapes)}, got {sorted(weights)}")
        new = {}
        for k, shape in shapes.items():
            arr = np.asarray(weights[k])
            if arr.shape != shape:
                raise ValueError(f"weight {k!r} has shape {arr.shape}, expected {shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"weight {k!r} contains NaN or infinite values")
            new[k] = np.array(arr, dtype=np.float32, copy=True)
        self._params = new
        self._reset_optimizer()

    def initial_weights(self) -> dict[str, np.ndarray]:
        """Seeded initial weights: He-normal for ReLU layers, Glorot-uniform for the output,
        uniform(-0.05, 0.05) for the embedding (Keras' default), zero biases.  The Keras
        backend starts from exactly these arrays."""
        rng = np.random.default_rng(np.random.SeedSequence(self.seed).spawn(4)[0])
        shapes = self.param_shapes()
        out: dict[str, np.ndarray] = {}
        if self.embedding is not None:
            out["W1"] = rng.uniform(-0.05, 0.05, size=shapes["W1"])
        dense = self.dense_names()
        for i, (w, b) in enumerate(dense, start=1):
            fan_in, fan_out = shapes[w]
            if i < len(dense):
                out[w] = rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / fan_in)
            else:
                a = math.sqrt(6.0 / (fan_in + fan_out))
                out[w] = rng.uniform(-a, a, size=(fan_in, fan_out))
            out[b] = np.zeros(fan_out)
        return {key: v.astype(np.float32) for key, v in out.items()}

    def reset_inputs(self, indices: Any) -> None:
        """Make inputs neutral (adaptive input words): zero their input weights
        (the embedding row of a word, or its row of W1) and their optimiser moments."""
        params = self.require_params()
        idx = np.asarray(indices, dtype=np.intp).ravel()
        params["W1"][idx] = 0.0
        for state in self._opt.values():
            state["W1"][idx] = 0.0

    # ------------------------------------------------------------------ inference

    def predict_proba(self, X: Any) -> np.ndarray:
        """(m, 2) outputs: column 0 = o_spam, column 1 = o_ham (``1 - p`` for sigmoid)."""
        params = self.require_params()
        X = self._as_input(X)
        out = np.empty((X.shape[0], 2), dtype=np.float32)
        for lo in range(0, X.shape[0], _PREDICT_BLOCK_ROWS):
            p = self._forward(params, X[lo : lo + _PREDICT_BLOCK_ROWS])[-1]
            if self.output == "sigmoid":
                out[lo : lo + p.shape[0], 0] = p[:, 0]
                out[lo : lo + p.shape[0], 1] = 1.0 - p[:, 0]
            else:
                out[lo : lo + p.shape[0]] = p
        return out

    def predict_spam(self, X: Any) -> np.ndarray:
        """The raw spam output: p of the sigmoid unit, or o_spam of the softmax."""
        return self.predict_proba(X)[:, 0]

    # ------------------------------------------------------------------ training

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None,
            progress: ProgressFn | None = None) -> MLP:
        """Mini-batch Adam from the seeded initial weights, early stopping on a stratified
        validation part (``validation_fraction`` of the data unless ``X_val`` is given),
        the best epoch's weights restored.  ``history_``/``best_epoch_`` as in Network."""
        X = self._as_input(X)
        y = np.asarray(y).astype(np.int64).ravel()
        self.set_weights(self.initial_weights())
        self._make_rngs()
        if X_val is None:
            rng_split = np.random.default_rng(np.random.SeedSequence(self.seed).spawn(4)[1])
            tr, va = stratified_split(y, self.validation_fraction, rng_split)
            Xt, yt = X[tr], y[tr]
            Xv, yv = (X[va], y[va]) if va.size else (None, None)
        else:
            Xt, yt, Xv, yv = X, y, self._as_input(X_val), np.asarray(y_val).astype(np.int64)
        return self.fit_split(Xt, yt, Xv, yv, progress)

    def fit_split(self, Xt: Any, yt: np.ndarray, Xv: Any, yv: np.ndarray | None,
                  progress: ProgressFn | None = None) -> MLP:
        """The epoch loop of :meth:`fit` on an explicit train/validation split (used after
        balancing, which must only touch the training part)."""
        if self._params is None:
            self.set_weights(self.initial_weights())
        if self._rng_shuffle is None:
            self._make_rngs()
        early_stopping_loop(self, Xt, yt, Xv, yv, progress)
        return self

    def partial_fit(self, X: Any, y: Any, epochs: int = 1, optimizer: str | None = None,
                    learning_rate: float | None = None) -> MLP:
        """A few passes over just these examples (corrections). ``optimizer=None``: Adam,
        keeping its state; ``"sgd"``: plain gradient steps at ``learning_rate`` (default the
        network's) that leave the Adam state alone, as :meth:`Network.partial_fit`."""
        X = self._as_input(X)
        y = np.asarray(y).astype(np.int64).ravel()
        if self._params is None:
            self.set_weights(self.initial_weights())
        self._partial_passes(X, y, epochs, optimizer, learning_rate)
        return self

    # ------------------------------------------------------------------ internals

    def _as_input(self, X: Any) -> Any:
        """Index rows (embedding) as intp; feature rows as float32, a SciPy sparse matrix
        kept sparse (CSR: the first layer multiplies it in sparse form, batch by batch)."""
        if self.embedding is not None:
            X = np.asarray(X)
            if X.ndim != 2 or X.shape[1] != self.length:
                raise ValueError(f"X must have shape (m, {self.length}), got {X.shape}")
            if X.size and (X.min() < 0 or X.max() > self.n_inputs):
                raise ValueError(f"word indices must lie in [0, {self.n_inputs}]")
            return X.astype(np.intp, copy=False)
        if is_sparse(X):
            X = X.tocsr()
            if X.dtype != np.float32:
                X = X.astype(np.float32)
            if len(X.shape) != 2 or X.shape[1] != self.n_inputs:
                raise ValueError(f"X must have shape (m, {self.n_inputs}), got {X.shape}")
            return X
        X = np.asarray(X, dtype=np.float32)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if X.ndim != 2 or X.shape[1] != self.n_inputs:
            raise ValueError(f"X must have shape (m, {self.n_inputs}), got {X.shape}")
        return X

    def _forward(self, params: dict[str, np.ndarray], X: Any,
                 rng: np.random.Generator | None = None) -> list[Any]:
        """Activations of every layer: [input, h1, ..., hk, output]; dropout masks (when
        training) are applied to the hidden activations in place and kept in ``_masks``."""
        a = params["W1"][X].reshape(X.shape[0], -1) if self.embedding is not None else X
        acts = [a]
        self._masks: list[np.ndarray | None] = []
        dense = self.dense_names()
        k = len(dense)
        for i, (w, b) in enumerate(dense, start=1):
            z = acts[-1] @ params[w]
            z += params[b]
            if i < k:
                h = np.maximum(z, 0)
                d = self.dropout[i - 1]
                mask = None
                if rng is not None and d > 0:
                    mask = (rng.random(h.shape, dtype=np.float32) < 1.0 - d).astype(np.float32)
                    mask *= np.float32(1.0 / (1.0 - d))
                    h *= mask
                self._masks.append(mask)
                acts.append(h)
            elif self.output == "softmax":
                e = np.exp(z - z.max(axis=1, keepdims=True))
                acts.append(e / e.sum(axis=1, keepdims=True))
            else:
                acts.append(sigmoid(z))
        return acts

    def _targets(self, y: np.ndarray) -> np.ndarray:
        if self.output == "softmax":
            return np.stack([y, 1 - y], axis=1).astype(np.float32)
        return y.reshape(-1, 1).astype(np.float32)

    def _loss(self, out: np.ndarray, T: np.ndarray) -> np.ndarray:
        eps = 1e-7
        p = np.clip(out, eps, 1 - eps)
        if self.output == "softmax":
            return -(T * np.log(p)).sum(axis=1)
        return -(T * np.log(p) + (1 - T) * np.log(1 - p)).sum(axis=1)

    def _weights_of(self, y: np.ndarray) -> np.ndarray | None:
        if self.class_weight is None:
            return None
        return np.asarray(self.class_weight, dtype=np.float32)[y]

    def _run_epoch(self, X: Any, y: np.ndarray) -> float:
        assert self._rng_shuffle is not None
        order = self._rng_shuffle.permutation(X.shape[0])
        total = 0.0
        for lo in range(0, X.shape[0], self.batch_size):
            idx = order[lo : lo + self.batch_size]
            total += self._step_batch(X[idx], y[idx]) * idx.size
        return total / max(1, X.shape[0])

    def _step_batch(self, X: Any, y: np.ndarray) -> float:
        """Forward with dropout, backpropagation, one Adam step; returns the batch loss."""
        params = self.require_params()
        acts = self._forward(params, X, self._rng_dropout)
        masks = self._masks
        T = self._targets(y)
        w = self._weights_of(y)
        m = X.shape[0]
        li = self._loss(acts[-1], T)
        loss = float(li.mean() if w is None else (li * w).mean())
        dz = (acts[-1] - T) / m  # softmax+xent and sigmoid+bce share this gradient
        if w is not None:
            dz *= w[:, None]
        grads: dict[str, np.ndarray] = {}
        dense = self.dense_names()
        for i in range(len(dense), 0, -1):
            kernel, bias = dense[i - 1]
            gW = acts[i - 1].T @ dz
            if self.l2:
                gW += self.l2 * params[kernel]
            grads[kernel] = gW
            grads[bias] = dz.sum(axis=0)
            if i == 1 and self.embedding is None:
                break  # the inputs themselves: no gradient to pass on
            da = dz @ params[kernel].T
            if i > 1:
                mask = masks[i - 2]
                if mask is not None:
                    da *= mask
                dz = da * (acts[i - 1] > 0)
            elif self.embedding is not None:
                # Scatter-add of the rows looked up (bincount per column: np.add.at is
                # about 20x slower).
                flat, rows = X.ravel(), da.reshape(-1, self.embedding)
                n_rows = params["W1"].shape[0]
                grads["W1"] = np.stack([np.bincount(flat, weights=rows[:, c], minlength=n_rows)
                                        for c in range(self.embedding)], axis=1)
        if self._plain_rate is not None:
            params = self.require_params()
            for k, g in grads.items():
                params[k] -= (self._plain_rate * g).astype(params[k].dtype, copy=False)
        else:
            self._adam(grads)
        return loss

    def _adam(self, grads: dict[str, np.ndarray]) -> None:
        """One Adam step, in place and in cache-sized row blocks (as Network does it)."""
        b1, b2, eps = _ADAM
        self._step += 1
        bc1, bc2 = 1 - b1**self._step, 1 - b2**self._step
        lr_t = self.learning_rate * math.sqrt(bc2) / bc1
        eps_t = eps * math.sqrt(bc2)
        params, m, v = self.require_params(), self._opt["m"], self._opt["v"]
        for k, g in grads.items():
            g = g.astype(np.float32, copy=False)
            p = params[k]
            rows = max(1, _UPDATE_BLOCK_ELEMENTS // max(1, int(np.prod(p.shape[1:]))))
            tmp = np.empty((min(rows, p.shape[0]),) + p.shape[1:], dtype=np.float32)
            for a in range(0, p.shape[0], rows):
                sl = slice(a, a + rows)
                adam_block(p[sl], g[sl], m[k][sl], v[k][sl], tmp[: p[sl].shape[0]], lr_t,
                            eps_t)

    def _evaluate(self, X: Any, y: np.ndarray) -> tuple[float, float]:
        params = self.require_params()
        total, wrong = 0.0, 0
        for lo in range(0, X.shape[0], _PREDICT_BLOCK_ROWS):
            Xb, yb = X[lo : lo + _PREDICT_BLOCK_ROWS], y[lo : lo + _PREDICT_BLOCK_ROWS]
            out = self._forward(params, Xb)[-1]
            li = self._loss(out, self._targets(yb))
            w = self._weights_of(yb)
            total += float(li.sum() if w is None else (li * w).sum())
            spam = out[:, 0] > (out[:, 1] if self.output == "softmax" else 0.5)
            wrong += int(np.count_nonzero(spam != (yb == 1)))
        return total / len(y), wrong / len(y)


BALANCES = ("none", "dbb")


def dbb_oversample(X: np.ndarray, y: np.ndarray, rng: np.random.Generator,
                   renormalise: bool) -> tuple[np.ndarray, np.ndarray]:
    """Distribution-based balancing (``--balance dbb``): synthetic examples of the minority
    class until both classes are equally large.

    Each synthetic example starts from a minority example drawn at random (with
    replacement).  It keeps that example's support (the features that are non-zero), and each
    of those values is drawn again from a normal distribution with the mean and standard
    deviation of that feature over the minority examples in which it is non-zero, clipped to
    the smallest and largest such value.  Features that are zero stay zero, so a synthetic
    message uses words a real one used, with weights typical of the class.  With
    ``renormalise`` (tf-idf rows) each row is scaled back to unit length.  For binary inputs
    the standard deviation is 0, and DBB reduces to duplicating minority examples.

    Only the training part may be balanced: the validation part and the test data keep
    their real class mix.  Returns the enlarged (X, y), synthetic rows appended.

    A sparse X (CSR) gives a CSR result with the values of the dense computation, to the
    bit, from the same random draws, without a dense copy of the minority rows.
    """
    y = np.asarray(y).astype(np.int64)
    n_spam = int(y.sum())
    n_ham = y.size - n_spam
    minority = 1 if n_spam < n_ham else 0
    need = abs(n_ham - n_spam)
    if need == 0 or min(n_ham, n_spam) == 0:
        return X, y
    if is_sparse(X):
        X_out = _dbb_sparse(X, y == minority, need, rng, renormalise)
        return X_out, np.concatenate([y, np.full(need, minority, dtype=np.int64)])
    Xm = np.asarray(X[y == minority], dtype=np.float32)
    nz = Xm != 0
    cnt = nz.sum(axis=0)
    safe = np.maximum(cnt, 1)
    mean = (Xm * nz).sum(axis=0) / safe
    var = ((Xm - mean) ** 2 * nz).sum(axis=0) / safe
    std = np.sqrt(np.maximum(var, 0.0)).astype(np.float32)
    big = np.finfo(np.float32).max
    lo = np.where(nz, Xm, big).min(axis=0)
    hi = np.where(nz, Xm, -big).max(axis=0)
    base = Xm[rng.integers(0, Xm.shape[0], size=need)]
    mask = base != 0
    draw = mean + std * rng.standard_normal(base.shape, dtype=np.float32)
    new = np.where(mask, np.clip(draw, lo, hi), 0.0).astype(np.float32)
    if renormalise:
        norms = np.sqrt((new * new).sum(axis=1, keepdims=True))
        np.divide(new, norms, out=new, where=norms > 0)
    X_out = np.concatenate([np.asarray(X, dtype=np.float32), new])
    y_out = np.concatenate([y, np.full(need, minority, dtype=np.int64)])
    return X_out, y_out


def _dbb_sparse(X: Any, is_minority: np.ndarray, need: int, rng: np.random.Generator,
                renormalise: bool) -> Any:
    """:func:`dbb_oversample` on a CSR matrix: ``need`` synthetic minority rows appended.

    Every statistic is taken over the stored (non-zero) values in the order of the dense
    code (column sums accumulate row after row, as NumPy sums a dense array down its
    columns), and the normal draws are taken for the full (need, n) shape, a block of rows at
    a time, so that the random stream and thus every synthetic value are those of the dense
    version; only the draws at the chosen rows' non-zero columns are kept.
    """
    Xm = X.tocsr()[np.flatnonzero(is_minority)]
    Xm = Xm.astype(np.float32) if Xm.dtype != np.float32 else Xm
    Xm.sum_duplicates()
    keep = Xm.data != 0
    cols, vals = Xm.indices[keep], Xm.data[keep]
    n = Xm.shape[1]
    safe = np.maximum(np.bincount(cols, minlength=n), 1)
    total = np.zeros(n, dtype=np.float32)
    np.add.at(total, cols, vals)
    mean = total / safe
    sq = np.zeros(n, dtype=np.float64)
    np.add.at(sq, cols, (vals - mean[cols]) ** 2)
    std = np.sqrt(np.maximum(sq / safe, 0.0)).astype(np.float32)
    big = np.finfo(np.float32).max
    lo = np.full(n, big, dtype=np.float32)
    np.minimum.at(lo, cols, vals)
    hi = np.full(n, -big, dtype=np.float32)
    np.maximum.at(hi, cols, vals)
    base = Xm[rng.integers(0, Xm.shape[0], size=need)]
    base.sum_duplicates()
    row_of = np.repeat(np.arange(need), np.diff(base.indptr))
    at = np.flatnonzero(base.data != 0)
    row_at = row_of[at]  # ascending: CSR order
    new_vals = np.empty(len(at), dtype=np.float32)
    rows = max(1, (1 << 20) // max(1, n))  # draws of about 4 MB at a time
    for a in range(0, need, rows):
        b = min(need, a + rows)
        z = rng.standard_normal((b - a, n), dtype=np.float32)
        s0, s1 = np.searchsorted(row_at, [a, b])
        c = base.indices[at[s0:s1]]
        draw = mean[c] + std[c] * z[row_at[s0:s1] - a, c]
        new_vals[s0:s1] = np.clip(draw, lo[c], hi[c])
    indptr = np.zeros(need + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_at, minlength=need), out=indptr[1:])
    indices = base.indices[at]
    if renormalise:
        norms = row_norms(indptr, indices, new_vals, n)
        per_value = np.repeat(norms, np.diff(indptr))
        np.divide(new_vals, per_value, out=new_vals, where=per_value > 0)
    import scipy.sparse as sps

    new = sps.csr_array((new_vals, indices, indptr), shape=(need, n))
    return stack_rows([X.astype(np.float32) if X.dtype != np.float32 else X, new])
