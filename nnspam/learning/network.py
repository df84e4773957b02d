"""The NNSpam neural network: one hidden layer, two output neurons, backpropagation.

Architecture (after the 2003 NNSpam design): ``n_inputs`` input neurons, one per word of the
word list, fed that word's (possibly scaled) count; one hidden layer (as wide as the input by
default); two output neurons ``o_spam`` and ``o_ham``.  The class below is a small NumPy
multi-layer perceptron with a scikit-learn-like estimator API.  It does no I/O at all: reading
messages, building features and saving models belong to other modules.

Two flavours are supported:

* the modern default -- ReLU hidden layer, 2-unit softmax output with cross-entropy, Adam;
* the faithful mode -- sigmoid hidden and output units as in JavaNNS, mean squared error (or
  cross-entropy) loss, plain backpropagation with momentum (``optimizer="sgd"``).

Inputs may be dense NumPy arrays or SciPy sparse matrices (anything with ``tocsr``); SciPy is
never imported here, sparse inputs are recognised by duck typing.  Sparse mini-batches are
multiplied in sparse form, which measured ~4x faster than densifying each batch for
bag-of-words data at 1-3 % density; the training features are CSR
(:meth:`nnspam.learning.features.Vectorizer.transform`), so no step holds the dense (m, n)
matrix. A few rows (up to ``_GATHER_MAX_ROWS``) take the gathered first layer in either form,
with the same result to the bit.

Conventions used throughout:

* ``y`` holds class labels, 1 = spam, 0 = ham;
* output column 0 is ``o_spam`` and column 1 is ``o_ham``; the target row for spam is
  ``(1, 0)`` and for ham ``(0, 1)``;
* the training objective is ``mean_i(w_i * L_i) + l2/2 * (|W1|^2 + |W2|^2)``, where ``L_i``
  is the loss of example ``i`` summed over the two output units and ``w_i`` its class weight.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["Learner", "Network", "adam_block", "early_stopping_loop", "gradient_check",
           "merge_networks", "network_from_settings", "sigmoid", "stratified_split"]

ProgressFn = Callable[[int, float, float, float], Any]

_HIDDEN_ACTIVATIONS = ("relu", "tanh", "sigmoid")
_OUTPUTS = ("softmax", "sigmoid")
_LOSSES = ("xent", "mse")
_OPTIMIZERS = ("adam", "sgd")
_DTYPES = ("float32", "float64")
_PARAM_NAMES = ("W1", "b1", "W2", "b2")
#: Whether ``partial_fit`` (corrections, the online learner, full-feedback streams) takes
#: lazy steps: only the ``W1`` rows of the inputs a message has (Network._touched_rows).
#: 6x faster full-feedback replays (24.8 -> 4.1 ms a message). Alone the figures moved
#: both ways (enron4 1-ROCA 0.099 -> 0.117%, enron3 0.163 -> 0.160%; docs/lab/
#: learner-probes.md); with the grams part (nnspam/model/grams.py), which was chosen
#: with lazy steps, every stream ranks better than the full steps did without it but
#: enron5 (docs/lab/streams.md "Learning from a stream").
LAZY_PARTIAL_FIT = True

# Adam constants (Kingma & Ba 2015 defaults).  ``momentum`` is only used by plain SGD.
_ADAM_BETA1 = 0.9
_ADAM_BETA2 = 0.999
_ADAM_EPS = 1e-8

# Optimiser updates of large weight matrices are done in row blocks of about this many
# elements, so that the ~10 element-wise passes of an Adam step stay in cache.  Measured on a
# 2000 x 2000 float32 matrix: 6.2 ms per step in blocks versus 9.2 ms in whole-array passes.
_UPDATE_BLOCK_ELEMENTS = 1 << 17
# Inference is done in row blocks so that huge inputs do not need a huge hidden activation.
_PREDICT_BLOCK_ROWS = 4096
# A few messages at a time (the pipe filter, the daemon, the server) touch only the rows of
# W1 of the words they contain: X[:, nz] @ W1[nz] instead of X @ W1. Measured on 400
# SpamAssassin messages one at a time (shipped model: n = 8000, hidden 128, 124 words present
# on average): 0.10 ms per message as a full product (4 MB of weights read; 2.6 ms when
# OpenBLAS's two threads compete with other load), 0.02 ms gathered; the outputs differ by at
# most 1.2e-7 (float32 rounding). Used up to this many rows, when under a quarter of the
# columns are used.
_GATHER_MAX_ROWS = 32


def _is_sparse(X: Any) -> bool:
    """Duck-typed test for a SciPy sparse matrix/array (avoids importing SciPy)."""
    return hasattr(X, "tocsr") and not isinstance(X, np.ndarray)


def _present_columns(X: Any) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
    """(the columns of X that hold a non-zero value, a function that returns X restricted to
    them as a dense (m, k) array) for the gathered first layer of a few rows.

    For a CSR matrix the dense block is built from its stored values, equal to ``X[:, nz]``
    of the same rows in a dense array, so a few rows score to the bit alike in either form.
    """
    if not _is_sparse(X):
        nz = np.flatnonzero(X.any(axis=0))
        # C order, as the CSR block below: ``X[:, nz]`` of several rows comes out in
        # Fortran order, and OpenBLAS's AVX-512 kernels (an Intel Xeon) round a product
        # of the two layouts differently in the last bit (one row alone is both)
        return nz, lambda: np.ascontiguousarray(X[:, nz])
    keep = X.data != 0
    cols = X.indices[keep]
    nz = np.unique(cols)

    def present() -> np.ndarray:
        rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))[keep]
        out = np.zeros((X.shape[0], len(nz)), dtype=X.dtype)
        np.add.at(out, (rows, np.searchsorted(nz, cols)), X.data[keep])
        return out
    return nz, present


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function, stable for any ``z``: exp is only ever taken of ``-|z|``."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype, copy=False)


class Learner(ABC):
    """Training bookkeeping shared by :class:`Network` and :class:`nnspam.learning.arch.MLP`: the
    seeded random streams, the optimiser state, and how ``partial_fit`` chooses between the
    network's own optimiser and plain gradient steps.  Subclasses provide ``_run_epoch``
    (and ``_evaluate`` for :func:`early_stopping_loop`)."""

    seed: int
    learning_rate: float
    _dt = np.dtype(np.float32)  # of the weights and optimiser state (Network: its dtype)

    def _init_learner(self) -> None:
        self._params: dict[str, np.ndarray] | None = None
        self._opt: dict[str, dict[str, np.ndarray]] = {}
        self._step = 0
        self._plain_rate: float | None = None  # set by partial_fit(optimizer="sgd")
        self._lazy = False  # set by partial_fit: lazy steps (LAZY_PARTIAL_FIT)
        self._rng_shuffle: np.random.Generator | None = None
        self._rng_dropout: np.random.Generator | None = None
        self.history_: list[dict[str, float]] = []
        self.best_epoch_: int | None = None

    def require_params(self) -> dict[str, np.ndarray]:
        """The weight arrays (RuntimeError if the network has none yet)."""
        if self._params is None:
            raise RuntimeError(
                "the network has no weights yet: call fit(), partial_fit() or set_weights()"
            )
        return self._params

    def _seed_streams(self) -> list[np.random.SeedSequence]:
        """Independent random streams derived from ``seed``: init, split, shuffle, dropout.

        Separate streams keep e.g. the validation split unchanged when the layer sizes change.
        """
        return np.random.SeedSequence(self.seed).spawn(4)

    def _make_rngs(self) -> None:
        """(Re)create the shuffle and dropout generators from ``seed``."""
        streams = self._seed_streams()
        self._rng_shuffle = np.random.default_rng(streams[2])
        self._rng_dropout = np.random.default_rng(streams[3])

    def _own_optimizer(self) -> str:
        return "adam"

    def _reset_optimizer(self) -> None:
        params = self.require_params()
        slots = ("m", "v") if self._own_optimizer() == "adam" else ("velocity",)
        # np.zeros, not zeros_like: calloc'd pages stay unmapped until training writes them, so
        # a process that only classifies (filter, server worker) does not fill 2 x 12 MB of
        # Adam moments for the shipped model (measured: peak RSS after Model.load 93 -> 70 MB)
        self._opt = {slot: {k: np.zeros(p.shape, dtype=p.dtype) for k, p in params.items()}
                     for slot in slots}
        self._step = 0

    def get_training_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The optimiser state that ``partial_fit`` carries between calls, for saving:
        arrays ``{"<slot>.<param>": array}`` (Adam's ``m``/``v`` or SGD's ``velocity``)
        and JSON-able metadata (the step count and the shuffle/dropout generator states).
        With :meth:`set_training_state`, a learner restarted in another process continues
        exactly where it stopped."""
        arrays = {f"{slot}.{name}": arr for slot, params in self._opt.items()
                  for name, arr in params.items()}
        meta: dict[str, Any] = {"step": int(self._step)}
        if self._rng_shuffle is not None and self._rng_dropout is not None:
            meta["rng"] = {"shuffle": self._rng_shuffle.bit_generator.state,
                           "dropout": self._rng_dropout.bit_generator.state}
        return arrays, meta

    def set_training_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Restore what :meth:`get_training_state` returned (empty ``arrays``: keep the
        current optimiser moments; no ``rng`` in ``meta``: fresh seeded streams)."""
        if arrays:
            opt: dict[str, dict[str, np.ndarray]] = {}
            for key, arr in arrays.items():
                slot, _, name = key.partition(".")
                opt.setdefault(slot, {})[name] = np.asarray(arr, dtype=self._dt)
            self._opt = opt
        self._step = int(meta.get("step", 0))
        self._make_rngs()
        rng = meta.get("rng")
        if rng:
            assert self._rng_shuffle is not None and self._rng_dropout is not None
            self._rng_shuffle.bit_generator.state = rng["shuffle"]
            self._rng_dropout.bit_generator.state = rng["dropout"]

    @abstractmethod
    def _run_epoch(self, X: Any, y: np.ndarray) -> float:
        """One shuffled pass of mini-batch updates; the mean data loss (each subclass's)."""

    def _partial_passes(self, X: Any, y: np.ndarray, epochs: int, optimizer: str | None,
                        learning_rate: float | None) -> None:
        """``epochs`` passes of ``_run_epoch`` over (X, y) for ``partial_fit``: with the
        network's own optimiser (``optimizer=None``) or plain gradient steps (``"sgd"``), at
        ``learning_rate`` (default the network's) for these passes only."""
        if int(epochs) < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        own = self._own_optimizer()
        if optimizer not in (None, "sgd", own):
            raise ValueError(f"optimizer must be None, 'sgd' or {own!r}, not {optimizer!r}")
        rate = self.learning_rate if learning_rate is None else float(learning_rate)
        if not rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        if self._rng_shuffle is None:
            self._make_rngs()
        saved_rate = self.learning_rate
        self._plain_rate = rate if optimizer == "sgd" else None
        self.learning_rate = rate
        self._lazy = LAZY_PARTIAL_FIT
        try:
            for _ in range(int(epochs)):
                self._run_epoch(X, y)
        finally:
            self._plain_rate = None
            self.learning_rate = saved_rate
            self._lazy = False


class Network(Learner):
    """A one-hidden-layer perceptron with two output neurons (``o_spam``, ``o_ham``).

    Parameters are stored as ``W1 (n_inputs, n_hidden)``, ``b1 (n_hidden,)``,
    ``W2 (n_hidden, 2)``, ``b2 (2,)``.  All randomness (initialisation, validation split,
    shuffling, dropout) derives from ``seed``, so equal seeds and data give identical weights.

    Args:
        n_inputs: number of input neurons (size of the word list).
        n_hidden: hidden layer width; ``None`` means ``n_inputs`` as in NNSpam.
        hidden_activation: ``"relu"``, ``"tanh"`` or ``"sigmoid"``.
        output: ``"softmax"`` (two units that sum to one, cross-entropy loss) or
            ``"sigmoid"`` (two independent logistic units, as in the original NNSpam).
        loss: ``"xent"`` (cross-entropy) or ``"mse"``; ``"mse"`` requires sigmoid outputs.
        optimizer: ``"adam"`` or ``"sgd"`` (backpropagation with classic momentum).
        learning_rate: step size for either optimiser.
        momentum: momentum coefficient for ``"sgd"`` (Adam uses beta1 = 0.9, beta2 = 0.999).
        l2: L2 penalty coefficient on the weight matrices (never on biases).
        dropout: probability of dropping a hidden unit during training (inverted dropout).
        input_dropout: probability of dropping an input value during training.
        batch_size: mini-batch size.
        max_epochs: upper bound on the number of passes over the training data in ``fit``.
        patience: ``fit`` stops after this many epochs without a new best validation loss;
            ``patience <= 0`` disables early stopping (best weights are still restored).
        validation_fraction: fraction of the training data held back (stratified) for early
            stopping when ``fit`` gets no explicit validation set; 0 disables validation.
        class_weight: ``(ham weight, spam weight)`` multiplying each example's loss, or None.
        seed: seed of every random choice the network makes.
        dtype: ``"float32"`` (fast, default) or ``"float64"``.
    """

    def __init__(
        self,
        n_inputs: int,
        n_hidden: int | None = None,
        hidden_activation: str = "relu",
        output: str = "softmax",
        loss: str = "xent",
        optimizer: str = "adam",
        learning_rate: float = 1e-3,
        momentum: float = 0.9,
        l2: float = 1e-4,
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        batch_size: int = 64,
        max_epochs: int = 100,
        patience: int = 8,
        validation_fraction: float = 0.1,
        class_weight: Sequence[float] | None = None,
        seed: int = 0,
        dtype: str = "float32",
    ) -> None:
        if int(n_inputs) < 1:
            raise ValueError(f"n_inputs must be >= 1, got {n_inputs}")
        if n_hidden is not None and int(n_hidden) < 1:
            raise ValueError(f"n_hidden must be >= 1 or None, got {n_hidden}")
        _check_choice("hidden_activation", hidden_activation, _HIDDEN_ACTIVATIONS)
        _check_choice("output", output, _OUTPUTS)
        _check_choice("loss", loss, _LOSSES)
        _check_choice("optimizer", optimizer, _OPTIMIZERS)
        _check_choice("dtype", dtype, _DTYPES)
        if loss == "mse" and output != "sigmoid":
            raise ValueError('loss="mse" is only supported with output="sigmoid"')
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not 0.0 <= input_dropout < 1.0:
            raise ValueError(f"input_dropout must be in [0, 1), got {input_dropout}")
        if not 0.0 <= validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int(max_epochs) < 1:
            raise ValueError(f"max_epochs must be >= 1, got {max_epochs}")
        if learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2}")
        if class_weight is not None:
            if len(class_weight) != 2 or min(class_weight) < 0:
                raise ValueError(
                    "class_weight must be a pair (ham weight, spam weight) of non-negative "
                    f"numbers, got {class_weight!r}"
                )
            class_weight = (float(class_weight[0]), float(class_weight[1]))

        self.n_inputs = int(n_inputs)
        self.n_hidden = int(n_hidden) if n_hidden is not None else None
        self.hidden_activation = hidden_activation
        self.output = output
        self.loss = loss
        self.optimizer = optimizer
        self.learning_rate = float(learning_rate)
        self.momentum = float(momentum)
        self.l2 = float(l2)
        self.dropout = float(dropout)
        self.input_dropout = float(input_dropout)
        self.batch_size = int(batch_size)
        self.max_epochs = int(max_epochs)
        self.patience = int(patience)
        self.validation_fraction = float(validation_fraction)
        self.class_weight: tuple[float, float] | None = class_weight
        self.seed = int(seed)
        self.dtype = dtype

        self._dt = np.dtype(dtype)
        self._init_learner()

    # ------------------------------------------------------------------ configuration

    @property
    def hidden_size(self) -> int:
        """Effective hidden layer width (``n_hidden`` or, if None, ``n_inputs``)."""
        return self.n_hidden if self.n_hidden is not None else self.n_inputs

    def get_config(self) -> dict[str, Any]:
        """All constructor arguments, JSON-serialisable, so ``Network(**cfg)`` rebuilds it."""
        return {
            "n_inputs": self.n_inputs,
            "n_hidden": self.n_hidden,
            "hidden_activation": self.hidden_activation,
            "output": self.output,
            "loss": self.loss,
            "optimizer": self.optimizer,
            "learning_rate": self.learning_rate,
            "momentum": self.momentum,
            "l2": self.l2,
            "dropout": self.dropout,
            "input_dropout": self.input_dropout,
            "batch_size": self.batch_size,
            "max_epochs": self.max_epochs,
            "patience": self.patience,
            "validation_fraction": self.validation_fraction,
            "class_weight": list(self.class_weight) if self.class_weight is not None else None,
            "seed": self.seed,
            "dtype": self.dtype,
        }

    def __repr__(self) -> str:
        return f"Network(n_inputs={self.n_inputs}, n_hidden={self.hidden_size}, ...)"

    # ------------------------------------------------------------------ weights

    @property
    def is_initialized(self) -> bool:
        """True once weights exist (after fit, partial_fit or set_weights)."""
        return self._params is not None

    def get_weights(self) -> dict[str, np.ndarray]:
        """Return copies of the parameters: ``W1``, ``b1``, ``W2``, ``b2``."""
        params = self.require_params()
        return {k: params[k].copy() for k in _PARAM_NAMES}

    def set_weights(self, weights: dict[str, np.ndarray], copy: bool = True) -> None:
        """Install parameters (copied and cast to the network dtype).

        ``copy=False`` adopts arrays that already have the network dtype instead of copying
        them: for a caller that hands over arrays it owns (the model loader), which saves a
        second copy of the weights in memory.

        The shapes must match this network exactly; otherwise a ValueError says which array is
        wrong and what was expected.  The optimiser state is reset, because moments collected
        for other weights would not belong to these.
        """
        expected = self._param_shapes()
        missing = [k for k in _PARAM_NAMES if k not in weights]
        extra = sorted(set(weights) - set(_PARAM_NAMES))
        if missing or extra:
            raise ValueError(
                f"set_weights needs exactly the keys {list(_PARAM_NAMES)}; "
                f"missing {missing}, unexpected {extra}"
            )
        new: dict[str, np.ndarray] = {}
        for k in _PARAM_NAMES:
            arr = np.asarray(weights[k])
            if arr.shape != expected[k]:
                raise ValueError(
                    f"weight {k!r} has shape {arr.shape}, expected {expected[k]} "
                    f"(n_inputs={self.n_inputs}, n_hidden={self.hidden_size}, 2 outputs)"
                )
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"weight {k!r} contains NaN or infinite values")
            new[k] = (np.array(arr, dtype=self._dt, copy=True) if copy
                      else np.asarray(arr, dtype=self._dt))
        self._params = new
        self._reset_optimizer()
        # Random generators are made when training starts (_run_epoch), not here: building
        # them imports numpy.random, about 10 ms that a pipe filter start-up cannot spare.

    def reset_inputs(self, indices: Any) -> None:
        """Make input neurons neutral again: zero ``W1[indices, :]`` and their optimiser state.

        Used by adaptive inputs: when a rarely active word is replaced by a new word, the input
        neuron's outgoing weights restart from zero so the new word has no influence until
        training gives it one.  ``indices`` is an int, a sequence of ints or a boolean mask.
        """
        params = self.require_params()
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (self.n_inputs,):
                raise ValueError(
                    f"boolean mask must have shape ({self.n_inputs},), got {idx.shape}"
                )
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.intp, copy=False).ravel()
        if idx.size and (idx.min() < -self.n_inputs or idx.max() >= self.n_inputs):
            raise ValueError(f"input indices out of range for n_inputs={self.n_inputs}")
        params["W1"][idx, :] = 0.0
        for state in self._opt.values():
            if "W1" in state:
                state["W1"][idx, :] = 0.0

    # ------------------------------------------------------------------ inference

    def forward(self, X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Inference pass (no dropout) returning ``(z1, h, z2, out)``.

        ``z1``/``h`` are the hidden pre-activations/activations, ``z2`` the output
        pre-activations and ``out`` the output activations (column 0 = o_spam).
        """
        params = self.require_params()
        X = self._as_input(X)
        return self._forward(params, X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Output activations, shape ``(m, 2)``: column 0 = o_spam, column 1 = o_ham.

        Values lie in [0, 1]; with softmax outputs the two columns sum to one, with sigmoid
        outputs they are independent.  No dropout is applied.
        """
        params = self.require_params()
        X = self._as_input(X)
        m = X.shape[0]
        if m <= _GATHER_MAX_ROWS:
            nz, present = _present_columns(X)
            if 4 * len(nz) < X.shape[1]:
                z1 = present() @ params["W1"][nz]
                z1 += params["b1"]
                return self._from_hidden(params, z1)[3]
        out = np.empty((m, 2), dtype=self._dt)
        for lo in range(0, m, _PREDICT_BLOCK_ROWS):
            out[lo : lo + _PREDICT_BLOCK_ROWS] = self._forward(
                params, X[lo : lo + _PREDICT_BLOCK_ROWS]
            )[3]
        return out

    def predict_proba_from_hidden(self, z1: np.ndarray) -> np.ndarray:
        """The (m, 2) outputs of :meth:`predict_proba` from the hidden pre-activations
        ``z1 = X @ W1 + b1``, computed by the caller: ``nnspam explain`` scores a message
        once per word left out, over only the rows of W1 of the words it has."""
        return self._from_hidden(self.require_params(), np.asarray(z1, dtype=self._dt))[3]

    def predict(self, X: Any) -> np.ndarray:
        """Class labels (1 = spam, 0 = ham): spam where o_spam > o_ham."""
        proba = self.predict_proba(X)
        return (proba[:, 0] > proba[:, 1]).astype(np.int64)

    # ------------------------------------------------------------------ training

    def fit(
        self,
        X: Any,
        y: Any,
        X_val: Any = None,
        y_val: Any = None,
        progress: ProgressFn | None = None,
    ) -> Network:
        """Train from scratch with mini-batch backpropagation and early stopping.

        Weights and optimiser state are re-initialised from ``seed``.  Unless ``X_val``/``y_val``
        are given, ``validation_fraction`` of the data is held back (stratified by class) to
        watch the validation loss; training stops after ``patience`` epochs without
        improvement and the weights of the best epoch are restored.  After each epoch
        ``progress(epoch, train_loss, val_loss, val_error)`` is called if given (epochs count
        from 1; without validation data val_loss and val_error are NaN).

        Records ``history_`` (one dict per epoch with keys epoch, train_loss, val_loss,
        val_error; train_loss is the mean mini-batch data loss, with dropout, without the L2
        term) and ``best_epoch_`` (the epoch whose weights were kept).
        """
        X = self._as_input(X)
        y = self._as_labels(y, X.shape[0])
        if (X_val is None) != (y_val is None):
            raise ValueError("pass both X_val and y_val, or neither")

        self._start_fresh()
        rng_split = np.random.default_rng(self._seed_streams()[1])

        Xv: Any
        yv: np.ndarray | None
        if X_val is not None:
            Xv = self._as_input(X_val)
            yv = self._as_labels(y_val, Xv.shape[0])
            Xt, yt = X, y
        else:
            train_idx, val_idx = stratified_split(y, self.validation_fraction, rng_split)
            Xt, yt = X[train_idx], y[train_idx]
            Xv, yv = (X[val_idx], y[val_idx]) if val_idx.size else (None, None)
        if Xt.shape[0] == 0:
            raise ValueError("no training examples left after the validation split")

        early_stopping_loop(self, Xt, yt, Xv, yv, progress)
        return self

    def partial_fit(self, X: Any, y: Any, epochs: int = 1, optimizer: str | None = None,
                    learning_rate: float | None = None) -> Network:
        """Online learning: ``epochs`` passes of mini-batch steps over just the given examples.

        Meant for one or a few messages (e.g. user feedback).  No re-initialisation (except if
        the network has no weights yet), no validation, no history.

        ``optimizer=None`` uses the network's own optimiser and carries its state (the online
        learner saves and restores that state).  ``optimizer="sgd"`` takes plain gradient
        steps ``w -= learning_rate * (grad + l2 * w)`` that neither read nor change the
        optimiser state: the correction path of a model loaded from disk, whose Adam moments
        were not saved.  Adam from fresh moments moves every weight a message touches by the
        full step size on its first step, and that undid trained models: over the drifting
        SpamAssassin stream of ``scripts/bench/adaptive_stream.py``, learning each error with
        fresh Adam (3 passes) made 216 errors for one network and 231 for the merged default,
        plain steps at 0.003 made 120 (docs/guides/adaptive.md "Adaptive input words").
        ``learning_rate`` defaults to the network's.
        """
        X = self._as_input(X)
        y = self._as_labels(y, X.shape[0])
        if self._params is None:
            self._start_fresh()
        self._partial_passes(X, y, epochs, optimizer, learning_rate)
        return self

    # ------------------------------------------------------------------ internals: setup

    def _param_shapes(self) -> dict[str, tuple[int, ...]]:
        h = self.hidden_size
        return {"W1": (self.n_inputs, h), "b1": (h,), "W2": (h, 2), "b2": (2,)}

    def initialize(self) -> Network:
        """Seeded initial weights, zero optimiser state and fresh random streams: the state
        ``partial_fit`` starts from on its first call, so that an untrained network can
        score at once (the online learner starts here)."""
        self._start_fresh()
        return self

    def _start_fresh(self) -> None:
        """Seeded initial weights, zero optimiser state, fresh training random streams."""
        self._params = self._initial_params()
        self._reset_optimizer()
        self._make_rngs()

    def _initial_params(self) -> dict[str, np.ndarray]:
        """He-normal init for a ReLU hidden layer, Glorot-uniform otherwise; zero biases.

        The output layer (softmax/sigmoid units) always gets Glorot-uniform.
        """
        rng = np.random.default_rng(self._seed_streams()[0])
        n, h = self.n_inputs, self.hidden_size
        if self.hidden_activation == "relu":
            W1 = rng.standard_normal((n, h)) * np.sqrt(2.0 / n)
        else:
            a = np.sqrt(6.0 / (n + h))
            W1 = rng.uniform(-a, a, size=(n, h))
        a2 = np.sqrt(6.0 / (h + 2))
        W2 = rng.uniform(-a2, a2, size=(h, 2))
        return {
            "W1": W1.astype(self._dt),
            "b1": np.zeros(h, dtype=self._dt),
            "W2": W2.astype(self._dt),
            "b2": np.zeros(2, dtype=self._dt),
        }

    def _own_optimizer(self) -> str:
        return self.optimizer

    def _as_input(self, X: Any) -> Any:
        """Validate and cast X to the network dtype: CSR for sparse input, ndarray otherwise."""
        if _is_sparse(X):
            X = X.tocsr()
            if X.dtype != self._dt:
                X = X.astype(self._dt)
        else:
            X = np.asarray(X, dtype=self._dt)
            if X.ndim == 1:
                X = X.reshape(1, -1)
        if len(X.shape) != 2 or X.shape[1] != self.n_inputs:
            raise ValueError(f"X must have shape (m, {self.n_inputs}), got {tuple(X.shape)}")
        return X

    def _as_labels(self, y: Any, m: int) -> np.ndarray:
        y = np.asarray(y).ravel()
        if y.shape[0] != m:
            raise ValueError(f"y has {y.shape[0]} labels but X has {m} rows")
        if y.size and not np.all((y == 0) | (y == 1)):
            raise ValueError("y must contain only 0 (ham) and 1 (spam)")
        return y.astype(np.int64)

    # ------------------------------------------------------------------ internals: maths

    def _targets(self, y: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray | None]:
        """Target matrix (column 0 = spam) and per-example weights (None = all ones)."""
        T = np.empty((y.shape[0], 2), dtype=dtype)
        T[:, 0] = y
        T[:, 1] = 1 - y
        w = None
        if self.class_weight is not None:
            w = np.asarray(self.class_weight, dtype=dtype)[y]
        return T, w

    def _activate(self, z: np.ndarray) -> np.ndarray:
        if self.hidden_activation == "relu":
            return np.maximum(z, 0)
        if self.hidden_activation == "tanh":
            return np.tanh(z)
        return sigmoid(z)

    def _activation_grad(self, z: np.ndarray, h: np.ndarray) -> np.ndarray:
        """Derivative of the hidden activation, from pre-activation z and activation h."""
        if self.hidden_activation == "relu":
            return (z > 0).astype(z.dtype)
        if self.hidden_activation == "tanh":
            return 1 - h * h
        return h * (1 - h)

    def _forward(
        self, params: dict[str, np.ndarray], X: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        z1 = X @ params["W1"]
        z1 += params["b1"]
        return self._from_hidden(params, z1)

    def _from_hidden(
        self, params: dict[str, np.ndarray], z1: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The rest of the forward pass from the hidden pre-activations."""
        h = self._activate(z1)
        z2 = h @ params["W2"] + params["b2"]
        if self.output == "softmax":
            e = np.exp(z2 - z2.max(axis=1, keepdims=True))
            out = e / e.sum(axis=1, keepdims=True)
        else:
            out = sigmoid(z2)
        return z1, h, z2, out

    def _output_loss(
        self, z2: np.ndarray, T: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-example loss, output activations and dLoss_i/dz2 (unweighted).

        Cross-entropy is computed from the logits (log-sum-exp for softmax, softplus for
        sigmoid), so it never takes the log of a rounded-to-zero probability.
        """
        if self.output == "softmax":
            shifted = z2 - z2.max(axis=1, keepdims=True)
            e = np.exp(shifted)
            s = e.sum(axis=1, keepdims=True)
            out = e / s
            log_p = shifted - np.log(s)
            return -(T * log_p).sum(axis=1), out, out - T
        out = sigmoid(z2)
        if self.loss == "xent":
            # -[t log s(z) + (1-t) log(1-s(z))] == softplus(z) - t z
            return (np.logaddexp(0, z2) - T * z2).sum(axis=1), out, out - T
        diff = out - T
        return 0.5 * (diff * diff).sum(axis=1), out, diff * out * (1 - out)

    def _loss_and_grads(
        self,
        params: dict[str, np.ndarray],
        X: Any,
        y: np.ndarray,
        rng: np.random.Generator | None = None,
        rows: np.ndarray | None = None,
    ) -> tuple[float, dict[str, np.ndarray]]:
        """Weighted mean data loss of a batch and the gradients of that data loss.

        The L2 term is *not* included (the optimiser adds ``l2 * W`` to the weight gradients
        itself, fused with its update).  Dropout is applied only if ``rng`` is given.  The
        returned gradient arrays are freshly allocated and may be modified in place.
        ``rows``: the ``W1`` gradient of those input rows only (the rows the batch's inputs
        touch; every other row's data gradient is zero), shape ``(len(rows), n_hidden)``.
        """
        dt = params["W1"].dtype
        m = X.shape[0]
        T, w = self._targets(y, dt)
        if rng is not None and self.input_dropout > 0:
            X = self._drop_inputs(X, rng, dt)
        z1 = X @ params["W1"]
        z1 += params["b1"]
        h = self._activate(z1)
        mask = None
        if rng is not None and self.dropout > 0:
            keep = 1.0 - self.dropout
            mask = (rng.random(h.shape, dtype=dt) < keep).astype(dt)
            mask *= dt.type(1.0 / keep)
            h_used = h * mask
        else:
            h_used = h
        z2 = h_used @ params["W2"]
        z2 += params["b2"]
        loss_i, _, dz2 = self._output_loss(z2, T)
        if w is None:
            loss = float(loss_i.sum()) / m
            dz2 *= dt.type(1.0 / m)
        else:
            loss = float(loss_i @ w) / m
            dz2 *= (w / m)[:, None]
        grads = {"W2": h_used.T @ dz2, "b2": dz2.sum(axis=0)}
        dh = dz2 @ params["W2"].T
        if mask is not None:
            dh *= mask
        dz1 = dh * self._activation_grad(z1, h)
        grads["b1"] = dz1.sum(axis=0)
        gW1 = (X.T @ dz1) if rows is None else (X[:, rows].T @ dz1)
        grads["W1"] = np.asarray(gW1, dtype=dt)
        return loss, grads

    def _drop_inputs(self, X: Any, rng: np.random.Generator, dt: np.dtype) -> Any:
        """Inverted dropout on the input values.

        The mask is drawn for the full (batch, n_inputs) shape for sparse and dense input
        alike, so both formats consume the random stream identically and train identically.
        """
        keep = 1.0 - self.input_dropout
        mask = (rng.random(X.shape, dtype=dt) < keep).astype(dt)
        mask *= dt.type(1.0 / keep)
        if _is_sparse(X):
            X = X.copy()
            rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
            X.data *= mask[rows, X.indices]
            return X
        return X * mask

    def _evaluate(self, X: Any, y: np.ndarray) -> tuple[float, float]:
        """Weighted mean data loss (no L2) and error rate on a data set, without dropout."""
        params = self.require_params()
        m = X.shape[0]
        total = 0.0
        wrong = 0
        for lo in range(0, m, _PREDICT_BLOCK_ROWS):
            Xb, yb = X[lo : lo + _PREDICT_BLOCK_ROWS], y[lo : lo + _PREDICT_BLOCK_ROWS]
            T, w = self._targets(yb, self._dt)
            z1 = Xb @ params["W1"]
            z1 += params["b1"]
            z2 = self._activate(z1) @ params["W2"] + params["b2"]
            loss_i, out, _ = self._output_loss(z2, T)
            total += float(loss_i.sum() if w is None else loss_i @ w)
            wrong += int(np.count_nonzero((out[:, 0] > out[:, 1]) != (yb == 1)))
        return total / m, wrong / m

    # ------------------------------------------------------------------ internals: optimiser

    def _run_epoch(self, X: Any, y: np.ndarray) -> float:
        """One shuffled pass of mini-batch updates; returns the mean data loss of the batches."""
        if self._rng_shuffle is None or self._rng_dropout is None:
            self._make_rngs()
        assert self._rng_shuffle is not None and self._rng_dropout is not None
        m = X.shape[0]
        order = self._rng_shuffle.permutation(m)
        use_rng = self._rng_dropout if (self.dropout > 0 or self.input_dropout > 0) else None
        total = 0.0
        for lo in range(0, m, self.batch_size):
            idx = order[lo : lo + self.batch_size]
            Xb = X[idx]
            rows = self._touched_rows(Xb)
            loss, grads = self._loss_and_grads(self.require_params(), Xb, y[idx], use_rng, rows)
            total += loss * idx.size
            self._apply_gradients(grads, rows)
        return total / m

    def _touched_rows(self, X: Any) -> np.ndarray | None:
        """The input rows a ``partial_fit`` batch touches, when the step is to be lazy
        (``self._lazy``) and they are few (under a quarter of the inputs); else None.

        Lazy steps (as TensorFlow's LazyAdam): only the ``W1`` rows of the inputs present
        in the batch, and their optimiser moments, are updated; the other rows' moments do
        not decay and their weights take no L2 shrink that step. One message touches a
        hundred or so of 8,000 rows, and the full update of ``W1`` and its moments was 20
        of the 30 ms a full-feedback stream spent on a message (cProfile, 600 TREC
        messages)."""
        if not self._lazy:
            return None
        if _is_sparse(X):
            rows = np.unique(X.indices)
        else:
            rows = np.flatnonzero(np.any(np.asarray(X) != 0, axis=0))
        return rows if rows.size * 4 < self.n_inputs else None

    def _apply_gradients(self, grads: dict[str, np.ndarray],
                         rows: np.ndarray | None = None) -> None:
        """One optimiser step; ``grads`` hold data-loss gradients and are overwritten.

        The update is element-wise and memory-bound, so it is done in place, in row blocks
        that fit in cache.  (Splitting the blocks between two threads measured slower on a
        busy 2-core machine, so it is not done.) ``rows``: a lazy step, ``grads["W1"]``
        holding those rows of ``W1`` only (:meth:`_touched_rows`).
        """
        params = self.require_params()
        if rows is not None:
            full = params
            params = {**params, "W1": params["W1"][rows]}
        if self._plain_rate is not None:
            # plain gradient steps (partial_fit(optimizer="sgd")): no optimiser state
            for name in _PARAM_NAMES:
                p, g = params[name], grads[name]
                if self.l2 and name.startswith("W"):
                    g += self.l2 * p
                g *= self._plain_rate
                p -= g
            if rows is not None:
                full["W1"][rows] = params["W1"]
            return
        self._step += 1
        if self.optimizer == "adam":
            bc1 = 1.0 - _ADAM_BETA1**self._step
            bc2 = 1.0 - _ADAM_BETA2**self._step
            # Bias correction folded into the step size (Kingma & Ba, sec. 2): exactly
            # m_hat / (sqrt(v_hat) + eps) with m_hat = m / bc1 and v_hat = v / bc2.
            coefs = (self.learning_rate * math.sqrt(bc2) / bc1, _ADAM_EPS * math.sqrt(bc2))
            states: tuple[dict[str, np.ndarray], ...] = (self._opt["m"], self._opt["v"])
        else:
            coefs = (self.learning_rate, self.momentum)
            states = (self._opt["velocity"],)
        for name in _PARAM_NAMES:
            p, g = params[name], grads[name]
            l2 = self.l2 if name.startswith("W") else 0.0
            if rows is not None and name == "W1":
                state = tuple(s[name][rows] for s in states)
                self._update_blocks(p, g, state, l2, coefs)
                full["W1"][rows] = p
                for s, part in zip(states, state, strict=True):
                    s[name][rows] = part
                continue
            state = tuple(s[name] for s in states)
            self._update_blocks(p, g, state, l2, coefs)

    def _update_blocks(
        self,
        p: np.ndarray,
        g: np.ndarray,
        state: tuple[np.ndarray, ...],
        l2: float,
        coefs: tuple[float, float],
    ) -> None:
        """Update parameter ``p`` (and its optimiser ``state``) in place, in row blocks."""
        n_rows = p.shape[0]
        row_size = int(np.prod(p.shape[1:], dtype=np.int64))
        rows = max(1, _UPDATE_BLOCK_ELEMENTS // max(1, row_size))
        tmp_full = np.empty((min(rows, n_rows),) + p.shape[1:], dtype=p.dtype)
        adam = self.optimizer == "adam"
        for a in range(0, n_rows, rows):
            sl = slice(a, a + rows)
            pb, gb = p[sl], g[sl]
            tmp = tmp_full[: pb.shape[0]]
            if l2:
                np.multiply(pb, l2, out=tmp)
                gb += tmp
            if adam:
                adam_block(pb, gb, state[0][sl], state[1][sl], tmp, *coefs)
            else:
                _momentum_block(pb, gb, state[0][sl], *coefs)


def network_from_settings(n_inputs: int, net: dict[str, Any]) -> Network:
    """Build an untrained network from the ``network:`` settings (``refit`` and
    ``members`` are training procedures, not part of the network): for the batch
    trainer and for the online learner, which starts from an untrained network."""
    cfg = dict(net)
    hidden = cfg.pop("hidden", None)
    cfg.pop("refit", None)
    cfg.pop("members", None)
    return Network(n_inputs=n_inputs, n_hidden=hidden, **cfg)


def early_stopping_loop(net: Any, Xt: Any, yt: np.ndarray, Xv: Any, yv: Any,
                        progress: ProgressFn | None = None) -> None:
    """The epoch loop of ``fit``, shared by :class:`Network` and :class:`nnspam.learning.arch.MLP`.

    Runs up to ``net.max_epochs`` epochs of ``net._run_epoch(Xt, yt)``; after each it measures
    ``net._evaluate(Xv, yv)`` (loss, error) when there is validation data, records
    ``net.history_`` and calls ``progress(epoch, train_loss, val_loss, val_error)``. It stops
    after ``net.patience`` epochs without a lower validation loss (``patience <= 0``: never)
    and leaves ``net._params`` at the best epoch's weights, recorded in ``net.best_epoch_``.
    Without validation data every epoch counts as the best and training runs to the end.
    """
    net.history_ = []
    net.best_epoch_ = None
    best_loss = np.inf
    best_params: dict[str, np.ndarray] | None = None
    since_best = 0
    has_val = Xv is not None and Xv.shape[0] > 0
    for epoch in range(1, net.max_epochs + 1):
        train_loss = net._run_epoch(Xt, yt)
        val_loss, val_error = net._evaluate(Xv, yv) if has_val else (float("nan"), float("nan"))
        net.history_.append(
            {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
             "val_error": val_error}
        )
        if progress is not None:
            progress(epoch, train_loss, val_loss, val_error)
        if np.isnan(val_loss):
            net.best_epoch_ = epoch
            continue
        if val_loss < best_loss:
            best_loss = val_loss
            best_params = {k: v.copy() for k, v in net._params.items()}
            net.best_epoch_ = epoch
            since_best = 0
        else:
            since_best += 1
            if 0 < net.patience <= since_best:
                break
    if best_params is not None:
        net._params = best_params


def merge_networks(nets: Sequence[Network]) -> Network:
    """One network that computes the mean output logits of ``nets`` (an ensemble as one net).

    The members must have the same inputs, hidden activation and output kind. Their hidden
    layers are laid side by side (``W1``/``b1`` concatenated, width = the sum of theirs) and
    their output layers are averaged (``W2`` stacked and divided by the number of members,
    ``b2`` the mean), so the output pre-activations are exactly the members' mean:
    a softmax output then gives the normalised geometric mean of the members' probabilities.
    The result is an ordinary n-h-2 network: saved, loaded, served and trained further
    (``partial_fit``) like any other, with the first member's training settings.

    Why: seeds of one recipe differ mostly in how sure they are near the threshold (on the
    SpamAssassin split, spam missed 15-24 over seeds 1-6 at the same ranking), and the mean
    of three is steadier than any one (docs/lab/measurements.md "Measurements").
    """
    if not nets:
        raise ValueError("merge_networks needs at least one network")
    first = nets[0]
    for other in nets[1:]:
        for attr in ("n_inputs", "hidden_activation", "output", "dtype"):
            if getattr(other, attr) != getattr(first, attr):
                raise ValueError(f"cannot merge networks with different {attr}: "
                                 f"{getattr(first, attr)!r} and {getattr(other, attr)!r}")
    weights = [n.get_weights() for n in nets]
    k = len(nets)
    cfg = first.get_config()
    cfg["n_hidden"] = sum(n.hidden_size for n in nets)
    merged = Network(**cfg)
    merged.set_weights({
        "W1": np.concatenate([w["W1"] for w in weights], axis=1),
        "b1": np.concatenate([w["b1"] for w in weights]),
        "W2": np.concatenate([w["W2"] for w in weights], axis=0) / k,
        "b2": np.mean([w["b2"] for w in weights], axis=0),
    })
    return merged


def adam_block(
    p: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    tmp: np.ndarray,
    lr_t: float,
    eps_t: float,
) -> None:
    """In-place Adam update of one block, using ``tmp`` as the only scratch space."""
    m *= _ADAM_BETA1
    np.multiply(g, 1.0 - _ADAM_BETA1, out=tmp)
    m += tmp
    np.multiply(g, g, out=tmp)
    tmp *= 1.0 - _ADAM_BETA2
    v *= _ADAM_BETA2
    v += tmp
    np.sqrt(v, out=tmp)
    tmp += eps_t
    np.divide(m, tmp, out=tmp)
    tmp *= lr_t
    p -= tmp


def _momentum_block(
    p: np.ndarray, g: np.ndarray, velocity: np.ndarray, lr: float, momentum: float
) -> None:
    """In-place classic momentum step: ``v = momentum * v - lr * g; p += v`` (g is clobbered)."""
    velocity *= momentum
    g *= lr
    velocity -= g
    p += velocity


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def stratified_split(
    y: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, validation), holding back ``fraction`` of each class.

    Each class with at least two examples contributes ``round(fraction * count)`` examples
    (at least one, at most ``count - 1``) to the validation set.
    """
    if fraction <= 0:
        return np.arange(y.shape[0]), np.empty(0, dtype=np.intp)
    val_parts = []
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        if idx.size < 2:
            continue
        n_val = min(max(1, int(round(fraction * idx.size))), idx.size - 1)
        val_parts.append(rng.permutation(idx)[:n_val])
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.empty(0, dtype=np.intp)
    in_val = np.zeros(y.shape[0], dtype=bool)
    in_val[val] = True
    return np.flatnonzero(~in_val), val


def gradient_check(net: Network, X: Any, y: Any, eps: float = 1e-5) -> float:
    """Compare backprop gradients with central differences of the full objective, in float64.

    The objective is the weighted mean data loss plus ``l2/2 * (|W1|^2 + |W2|^2)``, evaluated
    without dropout on the net's current weights (initialised from its seed if it has none);
    the net itself is not modified.  Returns the largest element-wise relative error
    ``|a - n| / max(|a|, |n|, 1e-8)`` over all parameters.  Costs two forward passes per
    parameter, so use a tiny network.
    """
    current = net._params if net._params is not None else net._initial_params()
    params = {k: np.array(v, dtype=np.float64) for k, v in current.items()}
    X = X.tocsr().astype(np.float64) if _is_sparse(X) else np.asarray(X, dtype=np.float64)
    y = net._as_labels(y, X.shape[0])

    def objective() -> float:
        data_loss, _ = net._loss_and_grads(params, X, y)
        penalty = 0.5 * net.l2 * (np.sum(params["W1"] ** 2) + np.sum(params["W2"] ** 2))
        return data_loss + float(penalty)

    _, analytic = net._loss_and_grads(params, X, y)
    analytic["W1"] = analytic["W1"] + net.l2 * params["W1"]
    analytic["W2"] = analytic["W2"] + net.l2 * params["W2"]

    worst = 0.0
    for name in _PARAM_NAMES:
        p = params[name]
        numeric = np.empty_like(p)
        flat, nflat = p.reshape(-1), numeric.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            f_plus = objective()
            flat[i] = old - eps
            f_minus = objective()
            flat[i] = old
            nflat[i] = (f_plus - f_minus) / (2 * eps)
        a = analytic[name]
        denom = np.maximum(np.maximum(np.abs(a), np.abs(numeric)), 1e-8)
        worst = max(worst, float(np.max(np.abs(a - numeric) / denom)))
    return worst
