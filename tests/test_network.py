"""Tests for nnspam.learning.network: gradients, learning, sparse input, reproducibility, API."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from nnspam.learning.network import Network, gradient_check, merge_networks, stratified_split

ACTIVATIONS = ["relu", "tanh", "sigmoid"]
OUTPUT_LOSSES = [("softmax", "xent"), ("sigmoid", "xent"), ("sigmoid", "mse")]


def _bag_of_words(
    m: int, n: int, seed: int, density: float = 0.1
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Sparse word counts labelled by a fixed linear rule, with a margin around the boundary."""
    rng = np.random.default_rng(seed)
    X = sp.random(3 * m, n, density=density, format="csr", random_state=rng, dtype=np.float64)
    X.data = np.ceil(X.data * 3)  # counts 1..3
    score = X @ np.random.default_rng(1234).standard_normal(n)  # same rule for every seed
    keep = np.flatnonzero(np.abs(score) > 0.5)[:m]
    assert keep.size == m
    return X[keep], (score[keep] > 0).astype(int)


def _xor(m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Points in the four quadrants (kept away from the axes); label = x1 * x2 > 0."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.15, 1.0, size=(m, 2)) * rng.choice([-1.0, 1.0], size=(m, 2))
    return X, (X[:, 0] * X[:, 1] > 0).astype(int)


def _accuracy(net: Network, X, y) -> float:
    return float(np.mean(net.predict(X) == y))


# ---------------------------------------------------------------------- gradients


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize(("output", "loss"), OUTPUT_LOSSES)
def test_gradient_check(activation: str, output: str, loss: str) -> None:
    rng = np.random.default_rng(7)
    X = rng.standard_normal((6, 5))
    y = np.array([0, 1, 1, 0, 1, 0])
    net = Network(
        5,
        4,
        hidden_activation=activation,
        output=output,
        loss=loss,
        l2=0.1,
        class_weight=(1.0, 2.5),
        dtype="float64",
        seed=3,
    )
    shapes = {"W1": (5, 4), "b1": (4,), "W2": (4, 2), "b2": (2,)}
    net.set_weights({k: rng.normal(0.0, 0.7, s) for k, s in shapes.items()})
    z1 = net.forward(X)[0]
    assert np.abs(z1).min() > 1e-3, "a pre-activation sits on the relu kink; pick other data"
    assert gradient_check(net, X, y) < 1e-5


def test_gradient_check_sparse_input_and_no_class_weight() -> None:
    X, y = _bag_of_words(8, 6, seed=2, density=0.5)
    net = Network(6, 3, hidden_activation="tanh", l2=0.01, dtype="float64")
    assert gradient_check(net, X, y) < 1e-5
    assert not net.is_initialized  # checked the seeded initial weights, left net alone


def test_gradient_check_detects_a_wrong_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check must be able to fail: break the tanh derivative and expect a large error."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((6, 5)), np.array([0, 1, 1, 0, 1, 0])
    net = Network(5, 4, hidden_activation="tanh", dtype="float64")
    monkeypatch.setattr(net, "_activation_grad", lambda z, h: np.ones_like(h))
    assert gradient_check(net, X, y) > 1e-2


def test_gradient_check_leaves_network_unchanged() -> None:
    net = Network(5, 4, dtype="float32")
    net.partial_fit(np.ones((2, 5)), [0, 1])
    before = net.get_weights()
    gradient_check(net, np.ones((2, 5)), [0, 1])
    after = net.get_weights()
    assert all(np.array_equal(before[k], after[k]) and after[k].dtype == np.float32 for k in before)


# ---------------------------------------------------------------------- learning


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_learns_xor(activation: str) -> None:
    X, y = _xor(400, seed=0)
    Xt, yt = _xor(400, seed=1)
    net = Network(
        2,
        16,
        hidden_activation=activation,
        learning_rate=0.02,
        l2=0.0,
        batch_size=32,
        max_epochs=300,
        patience=40,
        seed=0,
    )
    net.fit(X, y)
    assert _accuracy(net, Xt, yt) > 0.95


def test_learns_sparse_linearly_separable_data() -> None:
    X, y = _bag_of_words(1000, 50, seed=0)
    Xt, yt = _bag_of_words(400, 50, seed=1)
    net = Network(50, learning_rate=0.01, max_epochs=80, patience=10, dropout=0.2, seed=0)
    net.fit(X, y)
    assert _accuracy(net, Xt, yt) > 0.95


def test_faithful_mode_sigmoid_mse_sgd_learns() -> None:
    """JavaNNS-like setting: sigmoid hidden and output units, MSE, backprop with momentum."""
    X, y = _bag_of_words(1000, 50, seed=0)
    Xt, yt = _bag_of_words(400, 50, seed=1)
    net = Network(
        50,
        hidden_activation="sigmoid",
        output="sigmoid",
        loss="mse",
        optimizer="sgd",
        learning_rate=0.5,
        momentum=0.9,
        l2=0.0,
        batch_size=16,
        max_epochs=150,
        patience=20,
        seed=0,
    )
    net.fit(X, y)
    assert _accuracy(net, Xt, yt) > 0.95


def test_class_weight_shifts_decisions_toward_the_heavier_class() -> None:
    X, y = _bag_of_words(400, 30, seed=0)
    common = {"learning_rate": 0.01, "max_epochs": 20, "patience": 0, "seed": 0}
    plain = Network(30, **common).fit(X, y)
    spam_heavy = Network(30, class_weight=(1.0, 10.0), **common).fit(X, y)
    assert spam_heavy.predict_proba(X)[:, 0].mean() > plain.predict_proba(X)[:, 0].mean() + 0.05


# ---------------------------------------------------------------------- outputs


@pytest.mark.parametrize(("output", "loss"), OUTPUT_LOSSES)
def test_predict_proba_shape_range_and_stability(output: str, loss: str) -> None:
    X, y = _bag_of_words(50, 20, seed=0)
    net = Network(20, output=output, loss=loss, max_epochs=3, seed=0).fit(X, y)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # absurd inputs
        proba = net.predict_proba(X.toarray() * 1e6)
    assert proba.shape == (50, 2)
    assert proba.dtype == np.float32
    assert np.all((proba >= 0) & (proba <= 1))
    if output == "softmax":
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(
        net.predict(X), (net.predict_proba(X)[:, 0] > net.predict_proba(X)[:, 1]).astype(int)
    )


def test_column_zero_is_spam() -> None:
    """o_spam (column 0) must be high for the spam class after training."""
    X, y = _bag_of_words(300, 20, seed=0)
    net = Network(20, learning_rate=0.01, max_epochs=40, seed=0).fit(X, y)
    proba = net.predict_proba(X)
    assert proba[y == 1, 0].mean() > 0.7
    assert proba[y == 0, 1].mean() > 0.7


# ---------------------------------------------------------------------- sparse / dense


def test_sparse_and_dense_give_same_predictions_and_training() -> None:
    X, y = _bag_of_words(200, 30, seed=0)
    cfg = {
        "n_inputs": 30,
        "n_hidden": 20,
        "max_epochs": 5,
        "patience": 0,
        "dropout": 0.3,
        "input_dropout": 0.2,
        "dtype": "float64",
        "seed": 4,
    }
    net_sparse = Network(**cfg).fit(X, y)
    net_dense = Network(**cfg).fit(X.toarray(), y)
    ws, wd = net_sparse.get_weights(), net_dense.get_weights()
    for k in ws:
        np.testing.assert_allclose(ws[k], wd[k], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        net_sparse.predict_proba(X), net_sparse.predict_proba(X.toarray()), rtol=1e-12
    )
    # other sparse formats and float32 are accepted too
    net32 = Network(30, 20, seed=0).fit(X.astype(np.float32).tocoo(), y)
    np.testing.assert_allclose(
        net32.predict_proba(X.tocsc()), net32.predict_proba(X.toarray()), rtol=1e-5, atol=1e-6
    )


# ---------------------------------------------------------------------- reproducibility


def test_same_seed_same_weights_different_seed_different_weights() -> None:
    X, y = _bag_of_words(200, 30, seed=0)
    a = Network(30, dropout=0.5, input_dropout=0.1, max_epochs=4, seed=11).fit(X, y)
    b = Network(30, dropout=0.5, input_dropout=0.1, max_epochs=4, seed=11).fit(X, y)
    c = Network(30, dropout=0.5, input_dropout=0.1, max_epochs=4, seed=12).fit(X, y)
    for k in a.get_weights():
        np.testing.assert_array_equal(a.get_weights()[k], b.get_weights()[k])
    assert not np.array_equal(a.get_weights()["W1"], c.get_weights()["W1"])
    assert a.history_ == b.history_
    # refitting the same object starts again from scratch
    a.fit(X, y)
    np.testing.assert_array_equal(a.get_weights()["W1"], b.get_weights()["W1"])


# ---------------------------------------------------------------------- early stopping


def test_early_stopping_restores_best_weights() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 40))
    y = rng.integers(0, 2, 120)  # pure noise: validation loss soon rises (overfitting)
    Xv, yv = rng.standard_normal((60, 40)), rng.integers(0, 2, 60)
    calls: list[tuple[int, float, float, float]] = []
    net = Network(40, 64, learning_rate=0.01, l2=0.0, max_epochs=200, patience=5, seed=0)
    net.fit(X, y, Xv, yv, progress=lambda *args: calls.append(args))

    hist = net.history_
    assert [h["epoch"] for h in hist] == list(range(1, len(hist) + 1))
    assert len(hist) < 200, "early stopping should trigger on noise"
    assert net.best_epoch_ is not None and 1 <= net.best_epoch_ <= hist[-1]["epoch"]
    assert hist[-1]["epoch"] == net.best_epoch_ + 5
    val_losses = [h["val_loss"] for h in hist]
    assert hist[net.best_epoch_ - 1]["val_loss"] == min(val_losses)
    # the kept weights are those of the best epoch, not of the last one
    loss_now, error_now = net._evaluate(net._as_input(Xv), yv)
    assert loss_now == pytest.approx(min(val_losses), rel=1e-5)
    assert error_now == pytest.approx(hist[net.best_epoch_ - 1]["val_error"])
    assert val_losses[-1] > min(val_losses)
    # progress saw exactly what history recorded
    assert calls == [(h["epoch"], h["train_loss"], h["val_loss"], h["val_error"]) for h in hist]


def test_internal_validation_split_and_no_validation() -> None:
    X, y = _bag_of_words(200, 20, seed=0)
    net = Network(20, max_epochs=3, patience=0, seed=0).fit(X, y)
    assert len(net.history_) == 3 and all(np.isfinite(h["val_loss"]) for h in net.history_)
    net = Network(20, max_epochs=3, validation_fraction=0.0, seed=0).fit(X, y)
    assert all(np.isnan(h["val_loss"]) for h in net.history_)
    assert net.best_epoch_ == 3


def test_stratified_split_keeps_class_proportions() -> None:
    y = np.array([1] * 30 + [0] * 170)
    train, val = stratified_split(y, 0.1, np.random.default_rng(0))
    assert len(val) == 20 and int(y[val].sum()) == 3
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(200))


# ---------------------------------------------------------------------- online learning


@pytest.mark.parametrize("label", [0, 1])
def test_partial_fit_moves_prediction_toward_label(label: int) -> None:
    X, y = _bag_of_words(300, 30, seed=0)
    net = Network(30, max_epochs=5, seed=0).fit(X, y)
    msg = X[:1]
    before = net.predict_proba(msg)[0, 0]
    step_before = net._step
    net.partial_fit(msg, [label], epochs=3)
    after = net.predict_proba(msg)[0, 0]
    assert net._step == step_before + 3  # continued the optimiser, one step per epoch
    assert (after > before + 1e-4) if label == 1 else (after < before - 1e-4)


def test_partial_fit_initialises_an_unfitted_network() -> None:
    net = Network(10, 5, seed=0)
    assert not net.is_initialized
    net.partial_fit(np.ones((3, 10)), [1, 0, 1])
    assert net.predict_proba(np.ones((1, 10))).shape == (1, 2)


# ---------------------------------------------------------------------- weights and config


def test_get_set_weights_round_trip_and_config_rebuild() -> None:
    X, y = _bag_of_words(100, 20, seed=0)
    net = Network(20, 7, hidden_activation="tanh", class_weight=(1.0, 2.0), max_epochs=3)
    net.fit(X, y)
    cfg = json.loads(json.dumps(net.get_config()))
    twin = Network(**cfg)
    assert twin.get_config() == net.get_config()
    twin.set_weights(net.get_weights())
    np.testing.assert_array_equal(twin.predict_proba(X), net.predict_proba(X))
    # get_weights hands out copies
    net.get_weights()["W1"][:] = 0
    np.testing.assert_array_equal(twin.get_weights()["W1"], net.get_weights()["W1"])


def test_set_weights_rejects_wrong_shapes_and_keys() -> None:
    net = Network(4, 3)
    good = {"W1": np.zeros((4, 3)), "b1": np.zeros(3), "W2": np.zeros((3, 2)), "b2": np.zeros(2)}
    net.set_weights(good)
    with pytest.raises(ValueError, match=r"'W1' has shape \(3, 4\), expected \(4, 3\)"):
        net.set_weights({**good, "W1": np.zeros((3, 4))})
    with pytest.raises(ValueError, match="b2"):
        net.set_weights({**good, "b2": np.zeros(3)})
    with pytest.raises(ValueError, match="missing"):
        net.set_weights({k: v for k, v in good.items() if k != "W2"})


def test_unfitted_network_and_bad_arguments_raise() -> None:
    with pytest.raises(RuntimeError):
        Network(3).predict_proba(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="mse"):
        Network(3, output="softmax", loss="mse")
    with pytest.raises(ValueError, match="hidden_activation"):
        Network(3, hidden_activation="gelu")
    with pytest.raises(ValueError, match="shape"):
        Network(3).fit(np.zeros((4, 5)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="0 \\(ham\\) and 1"):
        Network(3).fit(np.zeros((2, 3)), [0, 2])
    assert Network(3).hidden_size == 3


def test_reset_inputs_zeroes_rows_and_optimizer_state() -> None:
    X, y = _bag_of_words(200, 20, seed=0)
    net = Network(20, max_epochs=3, seed=0).fit(X, y)
    before = net.get_weights()["W1"]
    assert np.all(np.abs(net._opt["m"]["W1"][[2, 5]]).sum(axis=1) > 0)
    net.reset_inputs([2, 5])
    W1 = net.get_weights()["W1"]
    assert np.all(W1[[2, 5]] == 0)
    keep = np.setdiff1d(np.arange(20), [2, 5])
    np.testing.assert_array_equal(W1[keep], before[keep])
    assert np.all(net._opt["m"]["W1"][[2, 5]] == 0) and np.all(net._opt["v"]["W1"][[2, 5]] == 0)
    # a reset input word is neutral: its count no longer changes the output
    Xd = X[:5].toarray()
    Xd2 = Xd.copy()
    Xd2[:, [2, 5]] += 7
    np.testing.assert_array_equal(net.predict_proba(Xd), net.predict_proba(Xd2))
    with pytest.raises(ValueError):
        net.reset_inputs([20])


# ---------------------------------------------------------------------- loss and optimiser


def _reference_loss(params, X, y, output, loss, class_weight, l2=0.0) -> float:
    """Straightforward float64 re-implementation of the training objective (tanh hidden)."""
    h = np.tanh(X @ params["W1"] + params["b1"])
    z = h @ params["W2"] + params["b2"]
    T = np.stack([y, 1 - y], axis=1).astype(float)
    if output == "softmax":
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        per_example = -(T * np.log(p)).sum(axis=1)
    else:
        p = 1 / (1 + np.exp(-z))
        if loss == "xent":
            per_example = -(T * np.log(p) + (1 - T) * np.log(1 - p)).sum(axis=1)
        else:
            per_example = 0.5 * ((p - T) ** 2).sum(axis=1)
    w = np.ones(len(y)) if class_weight is None else np.asarray(class_weight)[y]
    penalty = 0.5 * l2 * ((params["W1"] ** 2).sum() + (params["W2"] ** 2).sum())
    return float((w * per_example).mean() + penalty)


def _numeric_grad(f, params, eps=1e-6) -> dict[str, np.ndarray]:
    grads = {}
    for k, p in params.items():
        g = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            f_plus = f()
            p[i] = old - eps
            f_minus = f()
            p[i] = old
            g[i] = (f_plus - f_minus) / (2 * eps)
        grads[k] = g
    return grads


def _tiny_problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((8, 5))
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    shapes = {"W1": (5, 4), "b1": (4,), "W2": (4, 2), "b2": (2,)}
    params = {k: rng.normal(0.0, 0.5, s) for k, s in shapes.items()}
    return X, y, params


@pytest.mark.parametrize(("output", "loss"), OUTPUT_LOSSES)
@pytest.mark.parametrize("class_weight", [None, (0.5, 3.0)])
def test_loss_matches_reference_implementation(output, loss, class_weight) -> None:
    X, y, params = _tiny_problem()
    net = Network(
        5,
        4,
        hidden_activation="tanh",
        output=output,
        loss=loss,
        class_weight=class_weight,
        dtype="float64",
    )
    net.set_weights(params)
    val_loss, val_error = net._evaluate(X, y)
    assert val_loss == pytest.approx(_reference_loss(params, X, y, output, loss, class_weight))
    assert val_error == pytest.approx(np.mean(net.predict(X) != y))


def test_sgd_steps_follow_independent_numeric_gradient() -> None:
    """Two full-batch SGD steps = plain gradient descent with momentum on loss + L2."""
    X, y, params = _tiny_problem()
    lr, mom, l2 = 0.1, 0.5, 0.3
    net = Network(
        5,
        4,
        hidden_activation="tanh",
        optimizer="sgd",
        learning_rate=lr,
        momentum=mom,
        l2=l2,
        batch_size=len(y),
        dtype="float64",
    )
    net.set_weights(params)
    p = {k: v.copy() for k, v in params.items()}

    def objective() -> float:
        return _reference_loss(p, X, y, "softmax", "xent", None, l2)

    velocity = {k: np.zeros_like(v) for k, v in p.items()}
    for _ in range(2):
        g = _numeric_grad(objective, p)
        for k in p:
            velocity[k] = mom * velocity[k] - lr * g[k]
            p[k] = p[k] + velocity[k]
        net.partial_fit(X, y)
        for k, v in net.get_weights().items():
            np.testing.assert_allclose(v, p[k], rtol=1e-7, atol=1e-8, err_msg=k)


def test_first_adam_step_is_bias_corrected() -> None:
    """With bias correction the first Adam step moves every parameter by ~lr * sign(grad)."""
    X, y, params = _tiny_problem()
    net = Network(
        5,
        4,
        hidden_activation="tanh",
        learning_rate=0.01,
        l2=0.2,
        batch_size=len(y),
        dtype="float64",
    )
    net.set_weights(params)
    g = _numeric_grad(lambda: _reference_loss(params, X, y, "softmax", "xent", None, 0.2), params)
    net.partial_fit(X, y)
    for k, v in net.get_weights().items():
        np.testing.assert_allclose(v - params[k], -0.01 * np.sign(g[k]), rtol=1e-4, err_msg=k)


def test_few_rows_use_the_gathered_first_layer_and_agree_with_the_full_product(monkeypatch):
    """The pipe filter's path (a few sparse rows, W1 rows gathered) gives the outputs of the
    batch path (full X @ W1) to float32 rounding."""
    import nnspam.learning.network as N

    rng = np.random.default_rng(5)
    X = (rng.random((40, 400)) < 0.03).astype(np.float32)
    y = (X[:, :20].sum(axis=1) > 0).astype(int)
    net = Network(n_inputs=400, n_hidden=32, max_epochs=3, seed=1).fit(X, y)
    full_calls = []
    real = net._forward
    monkeypatch.setattr(net, "_forward", lambda p, x: full_calls.append(1) or real(p, x))
    few = np.vstack([net.predict_proba(X[i:i + 1]) for i in range(len(X))])
    assert not full_calls, "one sparse row must take the gathered path"
    monkeypatch.setattr(N, "_GATHER_MAX_ROWS", 0)
    full = net.predict_proba(X)
    assert full_calls
    np.testing.assert_allclose(few, full, atol=1e-6)


def test_training_state_round_trip_continues_partial_fit_exactly():
    """get/set_training_state carry partial_fit's optimiser and random streams between
    processes: a restored copy takes the very same next step as the original."""
    rng = np.random.default_rng(2)
    X = (rng.random((30, 50)) < 0.2).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    a = Network(n_inputs=50, n_hidden=8, dropout=0.3, seed=4).initialize()
    a.partial_fit(X, y)
    arrays, meta = a.get_training_state()
    json.dumps(meta)  # the metadata must be storable as JSON
    b = Network(n_inputs=50, n_hidden=8, dropout=0.3, seed=4)
    b.set_weights(a.get_weights())
    b.set_training_state({k: v.copy() for k, v in arrays.items()}, json.loads(json.dumps(meta)))
    a.partial_fit(X, y)
    b.partial_fit(X, y)
    for k, v in a.get_weights().items():
        np.testing.assert_array_equal(v, b.get_weights()[k])


def _logits(net: Network, X) -> np.ndarray:
    """The output pre-activations (what merging averages)."""
    return net._forward(net.get_weights(), net._as_input(X))[2]


@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
def test_merged_network_outputs_the_members_mean_logits(output) -> None:
    X, y = _bag_of_words(300, 60, seed=5)
    members = [Network(60, n_hidden=h, output=output, max_epochs=3, seed=s)
               for s, h in ((1, 8), (2, 8), (3, 5))]
    for net in members:
        net.fit(X, y)
    merged = merge_networks(members)
    assert merged.hidden_size == 21 and merged.n_inputs == 60
    mean_logits = np.mean([_logits(net, X) for net in members], axis=0)
    assert np.allclose(_logits(merged, X), mean_logits, atol=1e-5)
    # what the mean logits mean for the outputs
    got = merged.predict_proba(X)
    if output == "softmax":
        z = mean_logits - mean_logits.max(axis=1, keepdims=True)
        want = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    else:
        want = 1 / (1 + np.exp(-mean_logits))
    assert np.allclose(got, want, atol=1e-5)
    # the few-row (gathered) path agrees too
    dense = X[:3].toarray().astype(np.float32)
    assert np.allclose(merged.predict_proba(dense), got[:3], atol=1e-5)
    # a merged network trains on like any other
    before = merged.get_weights()["W2"].copy()
    merged.partial_fit(X[:10], y[:10])
    assert not np.array_equal(before, merged.get_weights()["W2"])


def test_merge_refuses_networks_that_do_not_fit_together() -> None:
    a, b = Network(10, n_hidden=4), Network(11, n_hidden=4)
    X = np.eye(10)[:4]
    a.partial_fit(X, [0, 1, 0, 1])
    b.partial_fit(np.eye(11)[:4], [0, 1, 0, 1])
    with pytest.raises(ValueError, match="n_inputs"):
        merge_networks([a, b])
    with pytest.raises(ValueError, match="at least one"):
        merge_networks([])
    with pytest.raises(RuntimeError, match="no weights"):
        merge_networks([Network(10, n_hidden=4)])


def test_plain_sgd_partial_fit_is_one_gradient_step_and_leaves_the_optimiser_alone() -> None:
    X, y = _bag_of_words(200, 30, seed=9)
    net = Network(30, n_hidden=6, dropout=0.0, input_dropout=0.0, l2=1e-3, batch_size=500,
                  max_epochs=3, seed=2)
    net.fit(X, y)
    step, moments = net._step, {k: v.copy() for k, v in net._opt["m"].items()}
    before = net.get_weights()
    Xb, yb = X[:7], y[:7]
    _, grads = net._loss_and_grads(net.get_weights(), net._as_input(Xb), yb, None)
    net.partial_fit(Xb, yb, optimizer="sgd", learning_rate=0.05)
    after = net.get_weights()
    for k in ("W1", "b1", "W2", "b2"):
        g = grads[k] + (1e-3 * before[k] if k.startswith("W") else 0.0)
        assert np.allclose(after[k], before[k] - 0.05 * g, atol=1e-6), k
    assert net._step == step and net.learning_rate == 0.001
    assert all(np.array_equal(net._opt["m"][k], moments[k]) for k in moments)
    # the network's own optimiser still carries its state
    net.partial_fit(Xb, yb)
    assert net._step == step + 1
    with pytest.raises(ValueError, match="optimizer"):
        net.partial_fit(Xb, yb, optimizer="rmsprop")
    with pytest.raises(ValueError, match="learning_rate"):
        net.partial_fit(Xb, yb, optimizer="sgd", learning_rate=0)


@pytest.mark.parametrize("optimizer", [None, "sgd"])
def test_lazy_partial_fit_touches_only_the_rows_of_present_inputs(monkeypatch, optimizer):
    """Lazy steps (network.LAZY_PARTIAL_FIT): the W1 rows (and Adam moments) of inputs a
    message lacks are left alone; the rows it has move exactly as a full step moves them
    on the first step from fresh moments, where a zero gradient changes nothing anyway
    (no L2)."""
    import nnspam.learning.network as N

    rng = np.random.default_rng(3)
    X = np.zeros((1, 40), dtype=np.float32)
    X[0, [2, 7, 31]] = rng.random(3).astype(np.float32) + 0.5
    y = np.array([1])
    nets = {}
    for lazy in (False, True):
        monkeypatch.setattr(N, "LAZY_PARTIAL_FIT", lazy)
        net = Network(n_inputs=40, n_hidden=8, l2=0.0, seed=5, dropout=0.0)
        net.partial_fit(np.zeros((1, 40), np.float32), [0], learning_rate=0.01)  # init
        before = {k: v.copy() for k, v in net.get_weights().items()}
        opt_before = {k: {n: a.copy() for n, a in d.items()} for k, d in net._opt.items()}
        net._opt = {k: {n: np.zeros_like(a) for n, a in d.items()} for k, d in net._opt.items()}
        net._step = 0
        net.partial_fit(X, y, optimizer=optimizer, learning_rate=0.01)
        nets[lazy] = (before, net.get_weights(), opt_before, net)
    b0, after_full, _, _ = nets[False]
    b1, after_lazy, _, lazy_net = nets[True]
    for k in after_full:
        np.testing.assert_allclose(after_lazy[k], after_full[k], rtol=1e-6, atol=1e-7)
    untouched = [i for i in range(40) if i not in (2, 7, 31)]
    np.testing.assert_array_equal(after_lazy["W1"][untouched], b1["W1"][untouched])
    assert not np.array_equal(after_lazy["W1"][[2, 7, 31]], b1["W1"][[2, 7, 31]])
    if optimizer is None:  # the untouched rows' moments stay at their fresh zeros
        assert not lazy_net._opt["m"]["W1"][untouched].any()
        assert lazy_net._opt["m"]["W1"][[2, 7, 31]].any()


def test_lazy_adam_leaves_rows_a_message_lacks_where_a_full_step_moves_them(monkeypatch):
    """After a message touched rows 2, 7 and 31, a full Adam step on another message still
    moves them (their moments decay into the weights); a lazy step does not."""
    import nnspam.learning.network as N

    a = np.zeros((1, 40), np.float32)
    a[0, [2, 7, 31]] = 1.0
    b = np.zeros((1, 40), np.float32)
    b[0, [10, 11]] = 1.0
    moved = {}
    for lazy in (False, True):
        monkeypatch.setattr(N, "LAZY_PARTIAL_FIT", lazy)
        net = Network(n_inputs=40, n_hidden=8, l2=0.0, seed=5, dropout=0.0)
        net.partial_fit(a, [1], learning_rate=0.01)
        w = net.get_weights()["W1"][[2, 7, 31]].copy()
        net.partial_fit(b, [0], learning_rate=0.01)
        moved[lazy] = not np.array_equal(net.get_weights()["W1"][[2, 7, 31]], w)
    assert moved == {False: True, True: False}
