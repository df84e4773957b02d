"""Sparse features end to end (issue 16): CSR rows equal to the dense rows for every scaling,
networks trained on CSR equal to networks trained on the same dense input, partial_fit and
prediction on CSR, the model's dense/CSR choice, and no dense (m, n) array built on the way."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sps

from nnspam.learning.arch import MLP, dbb_oversample
from nnspam.learning.features import (
    NGRAM_JOIN,
    SCALINGS,
    Vectorizer,
    idf_weights,
    row_norms,
    stack_rows,
    with_ngrams,
)
from nnspam.learning.network import Network
from nnspam.model.core import DENSE_ROWS, Model


def _messages(m: int, n_words: int, seed: int, per_message: tuple[int, int] = (0, 120),
              ) -> tuple[list[str], list[list[str]]]:
    """A word list and ``m`` token lists drawn from a Zipf-like vocabulary of twice its
    size (so about half the tokens have no input), with repeats and empty messages."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(2 * n_words)]
    words = vocab[::2]
    p = 1.0 / np.arange(1, len(vocab) + 1)
    p /= p.sum()
    lengths = rng.integers(*per_message, size=m)
    draws = rng.choice(len(vocab), size=int(lengths.sum()), p=p)
    out, at = [], 0
    for k in lengths:
        out.append([vocab[j] for j in draws[at:at + k]])
        at += k
    return words, out


def _vectorizers(words: list[str], toks: list[list[str]]) -> list[tuple[Vectorizer, list]]:
    """Every scaling, and the deep architecture's inputs: tf-idf over words and pairs."""
    out = [(Vectorizer(words, s), toks) for s in SCALINGS if s != "tfidf"]
    out.append((Vectorizer(words, "tfidf", idf=idf_weights(words, toks)), toks))
    docs = [with_ngrams(t, 2) for t in toks]
    pairs = words[:40] + [NGRAM_JOIN.join(p) for t in toks[:50]
                          for p in zip(t, t[1:], strict=False)][:60]
    pairs = list(dict.fromkeys(pairs))
    out.append((Vectorizer(pairs, "tfidf", 1, idf_weights(pairs, docs)), docs))
    out.append((Vectorizer(pairs, "lognorm", ngram=2), toks))  # n-grams made by the vectorizer
    return out


# ---------------------------------------------------------------------- values


@pytest.mark.parametrize("n_words", [7, 300, 8000])
def test_sparse_rows_equal_the_dense_rows_for_every_scaling(n_words):
    """To the bit, including the row norms of lognorm and tf-idf (summed as NumPy sums a
    dense row) and rows without any input word."""
    words, toks = _messages(400, n_words, seed=n_words)
    toks[3], toks[7] = [], ["nothing", "known"]
    for vec, docs in _vectorizers(words, toks):
        X = vec.transform(docs)
        D = vec.transform(docs, sparse=False)
        assert isinstance(X, sps.csr_array) and X.format == "csr"
        assert X.dtype == np.float32 and X.shape == D.shape
        assert X.has_canonical_format and np.all(X.data != 0)
        np.testing.assert_array_equal(X.toarray(), D, err_msg=vec.scaling)
        assert X.nnz == np.count_nonzero(D)
    assert vec.transform([]).shape == (0, vec.n_inputs)


def test_row_norms_equal_numpy_dense_row_sums_across_blocks(monkeypatch):
    import nnspam.learning.features as F

    rng = np.random.default_rng(3)
    D = np.where(rng.random((300, 500)) < 0.05, rng.random((300, 500)), 0).astype(np.float32)
    X = sps.csr_array(D)
    want = np.sqrt((D * D).sum(axis=1))
    for block in (1, 4096, 1 << 20):  # 1 row per block up to everything in one
        monkeypatch.setattr(F, "_NORM_BLOCK_ELEMENTS", block)
        np.testing.assert_array_equal(row_norms(X.indptr, X.indices, X.data, 500), want)


def test_stack_rows_keeps_dense_dense_and_makes_csr_of_any_sparse():
    a = np.eye(3, dtype=np.float32)
    assert isinstance(stack_rows([a, a]), np.ndarray)
    s = stack_rows([sps.csr_array(a), a])
    assert s.format == "csr" and s.shape == (6, 3)
    np.testing.assert_array_equal(s.toarray(), np.vstack([a, a]))


# ---------------------------------------------------------------------- the network


def _data(m: int = 600, n_words: int = 400, seed: int = 0, scaling: str = "binary"):
    words, toks = _messages(m, n_words, seed, per_message=(5, 80))
    rng = np.random.default_rng(seed + 1)
    spam_words = set(rng.choice(words, size=n_words // 10, replace=False).tolist())
    y = np.array([int(sum(t in spam_words for t in x) > len(x) * 0.05) for x in toks])
    vec = Vectorizer(words, scaling)
    return vec.transform(toks), vec.transform(toks, sparse=False), y


@pytest.mark.parametrize("scaling", ["binary", "lognorm"])
def test_network_trained_on_csr_equals_network_trained_on_dense(scaling):
    """Same seed, same data: the weights agree to float32 summation order (the sparse and the
    dense product add the same terms in another order), and so do the outputs, the epochs
    and the validation figures; with the shipped email recipe's dropout on inputs and hidden
    units (the masks are drawn alike) and members merged."""
    X, D, y = _data(scaling=scaling)
    from nnspam.learning.network import merge_networks

    cfg = dict(n_inputs=X.shape[1], n_hidden=32, dropout=0.5, input_dropout=0.4,
               batch_size=32, max_epochs=6, patience=3, l2=1e-5)
    nets_s = [Network(**cfg, seed=s).fit(X, y) for s in (1, 2)]
    nets_d = [Network(**cfg, seed=s).fit(D, y) for s in (1, 2)]
    for a, b in zip(nets_s, nets_d, strict=True):
        assert a.best_epoch_ == b.best_epoch_ and len(a.history_) == len(b.history_)
        for k, v in a.get_weights().items():
            np.testing.assert_allclose(v, b.get_weights()[k], rtol=1e-3, atol=1e-5, err_msg=k)
        np.testing.assert_allclose([h["val_loss"] for h in a.history_],
                                   [h["val_loss"] for h in b.history_], rtol=1e-4)
    ms, md = merge_networks(nets_s), merge_networks(nets_d)
    np.testing.assert_allclose(ms.predict_proba(X), md.predict_proba(D), atol=1e-4)
    np.testing.assert_array_equal(ms.predict(X), md.predict(D))


def test_network_in_float64_trains_alike_on_csr_and_dense_to_rounding():
    X, D, y = _data(seed=4)
    cfg = dict(n_inputs=X.shape[1], n_hidden=16, input_dropout=0.2, max_epochs=4,
               patience=0, dtype="float64", seed=3)
    a, b = Network(**cfg).fit(X, y), Network(**cfg).fit(D, y)
    for k, v in a.get_weights().items():
        np.testing.assert_allclose(v, b.get_weights()[k], rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("optimizer", [None, "sgd"])
def test_partial_fit_and_predict_on_csr(optimizer):
    X, D, y = _data(m=200, seed=6)
    base = Network(X.shape[1], 16, seed=2, max_epochs=2, patience=0).fit(D, y)
    a, b = Network(**base.get_config()), Network(**base.get_config())
    a.set_weights(base.get_weights())
    b.set_weights(base.get_weights())
    idx = np.arange(40, 80)
    a.partial_fit(X[idx], y[idx], epochs=3, optimizer=optimizer, learning_rate=0.003)
    b.partial_fit(D[idx], y[idx], epochs=3, optimizer=optimizer, learning_rate=0.003)
    for k, v in a.get_weights().items():
        np.testing.assert_allclose(v, b.get_weights()[k], rtol=1e-4, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(a.predict_proba(X), a.predict_proba(D), atol=1e-6)
    # an untrained network starts from its seed on CSR as on dense
    c = Network(X.shape[1], 8, seed=5).partial_fit(X[:10], y[:10])
    d = Network(X.shape[1], 8, seed=5).partial_fit(D[:10], y[:10])
    np.testing.assert_allclose(c.get_weights()["W1"], d.get_weights()["W1"], atol=1e-6)


def test_few_csr_rows_score_to_the_bit_as_dense_rows(monkeypatch):
    """A few rows whose words are under a quarter of the inputs gather those words' rows of
    W1 in either form: the same arithmetic, the same outputs to the bit (so a correction or a
    stream scores as before). Otherwise both take the full product, alike to rounding."""
    X, D, y = _data(m=100, n_words=2000, seed=8)
    net = Network(X.shape[1], 24, seed=1, max_epochs=2, patience=0).fit(X, y)
    full_calls = []
    real = net._forward
    monkeypatch.setattr(net, "_forward", lambda p, x: full_calls.append(1) or real(p, x))
    for lo, hi in [(0, 1), (5, 6), (10, 14), (60, 61)]:
        np.testing.assert_array_equal(net.predict_proba(X[lo:hi]), net.predict_proba(D[lo:hi]))
    empty = sps.csr_array((2, X.shape[1]), dtype=np.float32)
    np.testing.assert_array_equal(net.predict_proba(empty), net.predict_proba(empty.toarray()))
    assert not full_calls
    np.testing.assert_allclose(net.predict_proba(X), net.predict_proba(D), atol=1e-6)
    assert full_calls  # 100 rows: the full product


def test_mlp_trains_and_predicts_on_csr_as_on_dense():
    X, D, y = _data(seed=9, scaling="lognorm")
    cfg = dict(n_inputs=X.shape[1], layers=[32, 16], dropout=0.3, max_epochs=4, patience=0,
               seed=2)
    a, b = MLP(**cfg).fit(X, y), MLP(**cfg).fit(D, y)
    for k, v in a.get_weights().items():
        np.testing.assert_allclose(v, b.get_weights()[k], rtol=1e-3, atol=1e-5, err_msg=k)
    np.testing.assert_allclose(a.predict_proba(X), a.predict_proba(D), atol=1e-6)
    a.partial_fit(X[:20], y[:20], optimizer="sgd", learning_rate=0.01)
    b.partial_fit(D[:20], y[:20], optimizer="sgd", learning_rate=0.01)
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(D), atol=1e-4)


@pytest.mark.parametrize("renormalise", [False, True])
def test_dbb_oversample_on_csr_gives_the_dense_rows_to_the_bit(renormalise):
    X, D, y = _data(m=300, seed=11, scaling="lognorm")
    assert 0 < y.sum() < len(y) and 2 * y.sum() != len(y)
    Xs, ys = dbb_oversample(X, y, np.random.default_rng(7), renormalise)
    Xd, yd = dbb_oversample(D, y, np.random.default_rng(7), renormalise)
    assert Xs.format == "csr" and Xs.dtype == np.float32
    np.testing.assert_array_equal(ys, yd)
    np.testing.assert_array_equal(Xs.toarray(), Xd)


# ---------------------------------------------------------------------- the model


def test_model_features_dense_for_a_few_messages_csr_for_many():
    words, toks = _messages(80, 300, seed=12)
    net = Network(len(words), 16, seed=1).initialize()
    model = Model(words=words, network=net, scaling="binary")
    assert isinstance(model.features(toks[:DENSE_ROWS]), np.ndarray)
    many = model.features(toks[:DENSE_ROWS + 1])
    assert many.format == "csr"
    assert isinstance(model.features(toks[:2], sparse=True), sps.csr_array)
    assert isinstance(model.features(toks, sparse=False), np.ndarray)
    # one message alone and in a batch of many score alike (gathered vs sparse product)
    sp_all, z_all = model.judge_tokens(toks)
    z_one = np.array([model.judge_tokens([t])[1][0] for t in toks])
    np.testing.assert_allclose(z_all, z_one, atol=1e-5)


def test_train_model_on_csr_equals_train_model_on_dense():
    """The batch trainer: same word list, networks equal to float32 rounding (two merged
    members), the same verdicts."""
    from nnspam import config as C
    from nnspam.mail.corpus import Sample
    from nnspam.services.runs.training import Recipe, train_model
    from tests.conftest import make_message

    rng = np.random.default_rng(0)
    spam_w = ["cheap", "pills", "winner", "prize", "click", "offer", "free", "money"]
    ham_w = ["meeting", "lunch", "report", "project", "agenda", "review", "team", "notes"]
    filler = [f"f{i}" for i in range(60)]
    samples = []
    for i in range(160):
        label = "spam" if i % 3 == 0 else "ham"
        pool = spam_w if label == "spam" else ham_w
        body = " ".join(rng.choice(pool + filler, size=30).tolist())
        samples.append(Sample(f"m{i}", make_message(f"s{i}", body), label))
    overrides = {"wordlist": {"size": 60, "min_df": 2},
                 "network": {"hidden": 16, "max_epochs": 5, "members": 2}}
    a = train_model(samples, Recipe.from_config(C.DEFAULTS, "email", overrides=overrides))
    b = train_model(samples, Recipe.from_config(C.DEFAULTS, "email", overrides=overrides,
                                                sparse=False))
    assert a.words == b.words
    for k, v in a.network.get_weights().items():
        np.testing.assert_allclose(v, b.network.get_weights()[k], rtol=1e-3, atol=1e-5)
    payloads = [s.payload for s in samples]
    np.testing.assert_array_equal(a.score(payloads) > 0.5, b.score(payloads) > 0.5)


def test_deep_architecture_with_dbb_trains_alike_on_csr_and_dense():
    """tf-idf n-gram inputs, the training part balanced (DBB on CSR gives the dense rows),
    the MLP trained on CSR: the same idf, words and, to float32 rounding, weights."""
    from nnspam.services.runs.training import train_model
    from tests.test_arch import _recipe, _sms_samples

    samples = _sms_samples()
    a = train_model(samples, _recipe(arch="deep", balance="dbb"))
    b = train_model(samples, _recipe(arch="deep", balance="dbb", sparse=False))
    assert a.words == b.words and a.summary["trained_on"] == b.summary["trained_on"]
    np.testing.assert_array_equal(a.idf, b.idf)
    for k, v in a.network.get_weights().items():
        np.testing.assert_allclose(v, b.network.get_weights()[k], rtol=1e-3, atol=1e-5)


# ---------------------------------------------------------------------- memory


def test_transforming_many_messages_never_builds_a_dense_matrix():
    """20,000 messages over 8,000 input words (~1.4 % dense, as Enron-Spam's train part):
    the dense matrix would be 640 MB; building the CSR one allocates a few tens of MB."""
    words, toks = _messages(20_000, 8000, seed=13, per_message=(60, 200))
    dense_bytes = 20_000 * 8000 * 4
    for scaling in ("binary", "lognorm"):
        vec = Vectorizer(words, scaling)
        tracemalloc.start()
        try:
            X = vec.transform(toks)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert isinstance(X, sps.csr_array) and X.shape == (20_000, 8000)
        assert 0.005 < X.nnz / (20_000 * 8000) < 0.03
        assert peak < dense_bytes / 10, f"{scaling}: peak {peak / 1e6:.0f} MB"


def test_training_on_csr_allocates_far_less_than_the_dense_matrix():
    """fit on 5,000 x 8,000 CSR rows (dense: 160 MB) with input dropout and a validation
    part: only batches, masks and the weights are ever dense."""
    words, toks = _messages(5000, 8000, seed=14, per_message=(60, 200))
    X = Vectorizer(words, "binary").transform(toks)
    y = (np.arange(5000) % 3 == 0).astype(int)
    tracemalloc.start()
    try:
        Network(8000, 8, input_dropout=0.4, max_epochs=1, seed=1).fit(X, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5000 * 8000 * 4 / 4, f"peak {peak / 1e6:.0f} MB"
