"""Training in Keras 3 on TensorFlow (``nnspam train --backend keras``): the optional backend.

The only module of nnspam that imports TensorFlow or Keras, and only inside its functions, so
importing it costs nothing.  It trains the very network objects of the NumPy backend
(:class:`nnspam.learning.network.Network` for ``arch: nnspam``,
:class:`nnspam.learning.arch.MLP` for ``deep`` and ``sms-embedding``) and hands the trained
weights back to them: the model directory it produces is the same as the NumPy
backend's, and the NumPy forward pass serves it. Filtering never loads TensorFlow
(importing it takes 3-8 s and its install is about 2 GB).

What is kept the same as the NumPy backend, so the two backends train the same network:

* the layers, activations and outputs, built from the network's own config;
* the initial weights: Keras starts from exactly the arrays of the NumPy initialisation for the
  seed (He-normal ReLU layers, Glorot-uniform outputs, zero biases);
* the loss (softmax cross-entropy summed over the two outputs; binary cross-entropy for one
  sigmoid unit; half the squared error for ``loss: mse``), each example weighted by its class
  weight, plus ``l2/2 * |W|^2`` on every kernel (Keras' ``L2(l2/2)``);
* the optimiser (Adam with beta 0.9/0.999, epsilon 1e-8, or SGD with momentum) and batch size;
* the stratified validation part (the same examples, from the same seed stream) and early
  stopping on its loss *without* the L2 term, with ``patience`` and the best epoch's weights
  restored;
* the refit with weight averaging (``network.refit: swa``).

What differs: the order of mini-batches and the dropout masks come from Keras' own random
generators (seeded by ``keras.utils.set_random_seed(seed)``), and the arithmetic is
TensorFlow's, so the two backends reach equal accuracy, not equal weights
(docs/lab/architectures.md measures the spread over seeds).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from nnspam.learning.arch import MLP
from nnspam.learning.network import Network, stratified_split

__all__ = ["available", "build", "fit", "libraries", "predict"]

Progress = Callable[[int, float, float, float], Any]


def available() -> bool:
    """True when TensorFlow and Keras 3 can be imported (the ``keras`` extra is installed)."""
    import importlib.util

    return (importlib.util.find_spec("tensorflow") is not None
            and importlib.util.find_spec("keras") is not None)


def _keras():
    import os

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    if int(keras.__version__.split(".")[0]) < 3:
        raise RuntimeError(f"nnspam needs Keras 3, found {keras.__version__}")
    return keras


def libraries() -> dict[str, str]:
    """Versions of the libraries that train with this backend (for ``model.json``)."""
    import tensorflow as tf

    keras = _keras()
    return {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__}


def _initial_weights(net: Network | MLP) -> dict[str, np.ndarray]:
    if isinstance(net, MLP):
        return net.initial_weights()
    return net._initial_params()


def build(net: Network | MLP) -> Any:
    """The Keras model of ``net``'s architecture, holding ``net``'s initial weights for its
    seed (the arrays the NumPy backend starts from)."""
    keras = _keras()
    layers = keras.layers
    if isinstance(net, MLP):
        reg = keras.regularizers.L2(net.l2 / 2) if net.l2 > 0 else None
        if net.embedding is not None:
            inp = keras.Input(shape=(net.length,), dtype="int32")
            x = layers.Embedding(net.n_inputs + 1, net.embedding, name="L1")(inp)
            x = layers.Flatten()(x)
        else:
            inp = keras.Input(shape=(net.n_inputs,))
            x = inp
        names = [w.replace("W", "L") for w, _ in net.dense_names()]
        for name, h, d in zip(names, net.layers, net.dropout, strict=False):
            x = layers.Dense(h, activation="relu", kernel_regularizer=reg, name=name)(x)
            if d > 0:
                x = layers.Dropout(d)(x)
        out_act = "softmax" if net.output == "softmax" else "sigmoid"
        logits = layers.Dense(net.n_out, kernel_regularizer=reg, name=names[-1])(x)
    else:
        reg = keras.regularizers.L2(net.l2 / 2) if net.l2 > 0 else None
        inp = keras.Input(shape=(net.n_inputs,))
        x = layers.Dropout(net.input_dropout)(inp) if net.input_dropout > 0 else inp
        x = layers.Dense(net.hidden_size, activation=net.hidden_activation,
                         kernel_regularizer=reg, name="L1")(x)
        if net.dropout > 0:
            x = layers.Dropout(net.dropout)(x)
        out_act = net.output
        logits = layers.Dense(2, kernel_regularizer=reg, name="L2")(x)
    out = layers.Activation(out_act, name="output")(logits)
    model = keras.Model(inp, out)
    set_weights(model, net, _initial_weights(net))
    return model


def _layer_names(net: Network | MLP) -> list[tuple[str, str, str]]:
    """(keras layer, kernel name, bias name) for every dense layer."""
    if isinstance(net, MLP):
        return [(w.replace("W", "L"), w, b) for w, b in net.dense_names()]
    return [("L1", "W1", "b1"), ("L2", "W2", "b2")]


def set_weights(model: Any, net: Network | MLP, weights: dict[str, np.ndarray]) -> None:
    """Copy nnspam weight arrays into the Keras model."""
    if isinstance(net, MLP) and net.embedding is not None:
        model.get_layer("L1").set_weights([weights["W1"]])
    for layer, w, b in _layer_names(net):
        model.get_layer(layer).set_weights([weights[w], weights[b]])


def get_weights(model: Any, net: Network | MLP) -> dict[str, np.ndarray]:
    """The Keras model's weights under nnspam's names (float32 NumPy arrays)."""
    out: dict[str, np.ndarray] = {}
    if isinstance(net, MLP) and net.embedding is not None:
        out["W1"] = np.asarray(model.get_layer("L1").get_weights()[0], dtype=np.float32)
    for layer, w, b in _layer_names(net):
        kernel, bias = model.get_layer(layer).get_weights()
        out[w] = np.asarray(kernel, dtype=np.float32)
        out[b] = np.asarray(bias, dtype=np.float32)
    return out


def predict(model: Any, X: Any) -> np.ndarray:
    """Keras' own ``predict`` (the reference the NumPy forward pass is tested against).
    A SciPy sparse X (the CSR features) is given to Keras as dense blocks of rows."""
    if hasattr(X, "toarray"):
        X = X.tocsr()
        return np.concatenate([predict(model, X[lo:lo + 4096].toarray())
                               for lo in range(0, max(X.shape[0], 1), 4096)])
    return np.asarray(model.predict(X, batch_size=1024, verbose=0))


def _targets(net: Network | MLP, y: np.ndarray) -> np.ndarray:
    if isinstance(net, MLP) and net.output == "sigmoid":
        return y.reshape(-1, 1).astype(np.float32)
    return np.stack([y, 1 - y], axis=1).astype(np.float32)


def _loss_fn(net: Network | MLP) -> Callable[[Any, Any], Any]:
    """The per-example loss in ``keras.ops``, from the output layer's logits ``z``, as the
    NumPy backend computes it: log-softmax cross-entropy, ``softplus(z) - t*z`` for sigmoid
    units, half the squared error for mse.  From logits, not clipped probabilities: a clipped
    loss has no gradient for an example the network is very sure of and wrong about."""
    keras = _keras()
    ops = keras.ops
    mse = not isinstance(net, MLP) and net.loss == "mse"
    softmax = net.output == "softmax"

    def loss(t: Any, z: Any) -> Any:
        if mse:
            return 0.5 * ops.sum(ops.square(ops.sigmoid(z) - t), axis=-1)
        if softmax:
            return -ops.sum(t * ops.log_softmax(z, axis=-1), axis=-1)
        return ops.sum(ops.softplus(z) - t * z, axis=-1)
    return loss


def _np_loss(net: Network | MLP, out: np.ndarray, T: np.ndarray) -> np.ndarray:
    p = np.clip(out.astype(np.float64), 1e-7, 1 - 1e-7)
    if not isinstance(net, MLP) and net.loss == "mse":
        return 0.5 * ((p - T) ** 2).sum(axis=1)
    if net.output == "softmax":
        return -(T * np.log(p)).sum(axis=1)
    return -(T * np.log(p) + (1 - T) * np.log(1 - p)).sum(axis=1)


def fit(
    net: Network | MLP,
    X: np.ndarray,
    y: np.ndarray,
    *,
    X_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    progress: Progress | None = None,
    average_from: int | None = None,
    split: bool = True,
) -> Any:
    """Train ``net`` in Keras and install the result in ``net`` (``history_``, ``best_epoch_``
    too).  Returns the Keras model (with the same final weights).

    Without ``X_val``, the stratified validation part is split off exactly as the NumPy
    backend's ``fit`` does (unless ``split`` is False: all of X trains, as a refit does).
    With ``average_from=E`` there is no early stopping: the weights after epochs E..max are
    averaged (the ``swa`` refit).
    """
    keras = _keras()
    keras.utils.set_random_seed(net.seed)
    y = np.asarray(y).astype(np.int64).ravel()
    # The training features are CSR (Vectorizer.transform): Keras gets them as dense
    # mini-batches made one at a time (_sparse_batches), so this backend, like the NumPy
    # one, never holds the dense (m, n) matrix; the validation part is scored in dense
    # blocks of rows (predict). Dense X (a caller's array) goes to Keras as it is.
    if not hasattr(X, "toarray"):
        X = np.asarray(X)
    if X_val is None and split and net.validation_fraction > 0:
        rng_split = np.random.default_rng(np.random.SeedSequence(net.seed).spawn(4)[1])
        tr, va = stratified_split(y, net.validation_fraction, rng_split)
        X, X_val, y, y_val = X[tr], X[va], y[tr], y[va]
    model = build(net)
    # Trained through its logits (the output layer before its activation); the returned
    # model, with the activation, gives probabilities.
    logits_model = keras.Model(model.inputs, model.get_layer("output").input)
    if isinstance(net, Network) and net.optimizer == "sgd":  # MLP: always Adam
        opt = keras.optimizers.SGD(learning_rate=net.learning_rate, momentum=net.momentum)
    else:
        opt = keras.optimizers.Adam(learning_rate=net.learning_rate, beta_1=0.9, beta_2=0.999,
                                    epsilon=1e-8)
    logits_model.compile(optimizer=opt, loss=_loss_fn(net))
    T = _targets(net, y)
    cw = net.class_weight
    sw = None if cw is None else np.asarray(cw, dtype=np.float32)[y]
    state = _EpochWatch(net, model, X_val, y_val, progress, average_from)
    if hasattr(X, "toarray"):
        data = _sparse_batches(X, T, sw, net.batch_size, net.seed)
        logits_model.fit(data, epochs=net.max_epochs, verbose=0, callbacks=[state.callback()])
    else:
        logits_model.fit(X, T, sample_weight=sw, batch_size=net.batch_size,
                         epochs=net.max_epochs, shuffle=True, verbose=0,
                         callbacks=[state.callback()])
    final = state.result()
    set_weights(model, net, final)
    net.set_weights(final)
    net.history_ = state.history
    net.best_epoch_ = state.best_epoch
    return model


def _sparse_batches(X: Any, T: np.ndarray, sw: np.ndarray | None, batch_size: int,
                   seed: int) -> Any:
    """A ``keras.utils.PyDataset`` of dense mini-batches cut from the CSR matrix ``X``,
    in a new seeded random order every epoch (as ``fit(shuffle=True)`` on arrays): the
    dense copy is one batch (32 x n floats), never the whole set."""
    keras = _keras()
    dataset: Any = keras.utils.PyDataset  # Keras ships no types

    class Batches(dataset):
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(5)[4])
            self.order = self.rng.permutation(X.shape[0])

        def __len__(self) -> int:
            return -(-X.shape[0] // batch_size)

        def __getitem__(self, i: int) -> tuple[np.ndarray, ...]:
            rows = np.sort(self.order[i * batch_size:(i + 1) * batch_size])
            xb = X[rows].toarray()
            return (xb, T[rows]) if sw is None else (xb, T[rows], sw[rows])

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(X.shape[0])

    return Batches()


class _EpochWatch:
    """Per-epoch bookkeeping: validation loss and error without L2 (as NumPy's fit),
    early stopping with the best weights kept, or the weight average of a refit."""

    def __init__(self, net: Network | MLP, model: Any, X_val: np.ndarray | None,
                 y_val: np.ndarray | None, progress: Progress | None,
                 average_from: int | None) -> None:
        self.net, self.model = net, model
        self.X_val, self.y_val = X_val, y_val
        self.progress, self.average_from = progress, average_from
        self.history: list[dict[str, float]] = []
        self.best_epoch: int | None = None
        self.best_loss = np.inf
        self.best_weights: dict[str, np.ndarray] | None = None
        self.since = 0
        self.total: dict[str, np.ndarray] = {}
        self.count = 0

    def callback(self) -> Any:
        keras = _keras()
        watch = self
        base: Any = keras.callbacks.Callback  # Keras ships no types

        class _CB(base):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                if watch.on_epoch_end(epoch + 1, float((logs or {}).get("loss", np.nan))):
                    self.model.stop_training = True
        return _CB()

    def on_epoch_end(self, epoch: int, train_loss: float) -> bool:
        """Record the epoch; True when training should stop."""
        net = self.net
        if self.X_val is not None and self.y_val is not None and len(self.y_val):
            out = predict(self.model, self.X_val)
            yv = self.y_val
            li = _np_loss(net, out, _targets(net, yv).astype(np.float64))
            cw = net.class_weight
            w = None if cw is None else np.asarray(cw)[yv]
            vloss = float(li.mean() if w is None else (li * w).mean())
            spam = out[:, 0] > (out[:, 1] if out.shape[1] == 2 else 0.5)
            verr = float(np.mean(spam != (yv == 1)))
        else:
            vloss = verr = float("nan")
        self.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": vloss,
                             "val_error": verr})
        if self.progress is not None:
            self.progress(epoch, train_loss, vloss, verr)
        if self.average_from is not None:
            if epoch >= self.average_from:
                for k, v in get_weights(self.model, net).items():
                    self.total[k] = self.total.get(k, 0.0) + v.astype(np.float64)
                self.count += 1
            self.best_epoch = epoch
            return False
        if np.isnan(vloss):
            self.best_epoch = epoch
            return False
        if vloss < self.best_loss:
            self.best_loss, self.best_epoch, self.since = vloss, epoch, 0
            self.best_weights = get_weights(self.model, net)
            return False
        self.since += 1
        return 0 < net.patience <= self.since

    def result(self) -> dict[str, np.ndarray]:
        if self.average_from is not None and self.count:
            return {k: (v / self.count).astype(np.float32) for k, v in self.total.items()}
        if self.best_weights is not None:
            return self.best_weights
        return get_weights(self.model, self.net)
