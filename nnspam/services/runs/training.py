"""Training runs: samples -> tokens -> word list -> features -> fitted model,
and incremental learning of an existing model.

Kept apart from the command line so scripts (the default-model builder, the
benchmarks) and later the daemon and server use exactly the same steps.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nnspam import __version__
from nnspam.learning import wordlist as wl
from nnspam.learning.network import Network, network_from_settings
from nnspam.mail.corpus import Sample
from nnspam.model.core import Model

__all__ = ["tokenize_samples", "train_model", "labels_of"]

Progress = Callable[[int, float, float, float], None]


def _tokenizer(kind: str, max_part_bytes: int) -> Callable[[bytes | str], list[str]]:
    from nnspam.mail import tokens as tk

    if kind == "sms":
        def tok_sms(p: bytes | str) -> list[str]:
            return tk.tokenize_sms(p if isinstance(p, str) else tk.sms_text_from_bytes(p))
        return tok_sms

    def tok_email(p: bytes | str) -> list[str]:
        raw = p if isinstance(p, bytes) else p.encode("utf-8", "surrogateescape")
        return tk.tokenize_email(raw, max_part_bytes)
    return tok_email


def _tok_chunk(args: tuple[str, int, list[bytes | str]] | tuple[str, int, list[bytes | str],
                                                                  bool]) -> list[list[str]]:
    kind, mpb, payloads = args[:3]
    if len(args) > 3 and args[3]:  # a model's tokens, the grams part's head token included
        from nnspam.model.core import tokenize_payload

        return [tokenize_payload(p, kind, mpb) for p in payloads]
    f = _tokenizer(kind, mpb)
    return [f(p) for p in payloads]


def tokenize_samples(
    payloads: Sequence[bytes | str], kind: str = "email", max_part_bytes: int = 262144,
    jobs: int | None = None, for_model: bool = False,
) -> list[list[str]]:
    """Tokenize many payloads, over several processes when there are many.

    Tokenizing is pure Python and the slowest step of a batch run; with two
    cores, two worker processes nearly halve it. Below 2,000 messages the
    cost of starting workers is not worth it. ``for_model``: the tokens a model scores
    (:meth:`nnspam.model.core.Model.tokens`, with the head token its grams part reads);
    else the tokens training counts.
    """
    n = len(payloads)
    jobs = jobs if jobs is not None else min(os.cpu_count() or 1, 4)
    if jobs <= 1 or n < 2000:
        return _tok_chunk((kind, max_part_bytes, list(payloads), for_model))
    import multiprocessing as mp

    size = (n + jobs * 4 - 1) // (jobs * 4)
    chunks = [(kind, max_part_bytes, list(payloads[i:i + size]), for_model)
              for i in range(0, n, size)]
    ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context()
    with ctx.Pool(jobs) as pool:
        parts = pool.map(_tok_chunk, chunks)
    return [toks for part in parts for toks in part]


def labels_of(samples: Sequence[Sample]) -> np.ndarray:
    """1 for spam, 0 for ham; a sample without a label is an error."""
    out = np.empty(len(samples), dtype=np.int64)
    for i, s in enumerate(samples):
        if s.label not in ("spam", "ham"):
            raise ValueError(f"{s.name}: no spam/ham label")
        out[i] = 1 if s.label == "spam" else 0
    return out


def member_count(net: dict[str, Any]) -> int:
    """``network.members``: how many networks of the recipe are trained and merged."""
    k = net.get("members", 1)
    k = 1 if k is None else k
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"network.members must be a whole number >= 1, got {k!r}")
    return k


FitOne = Callable[..., tuple[Network, list[dict[str, float]], "int | None",
                             "dict[str, Any] | None"]]


#: How the members are trained: ``member_map(fit_one, member_settings)`` returns
#: ``[fit_one(s) for s in member_settings]`` (the default, one after the other); a Dask
#: cluster trains them at once (:mod:`nnspam.services.runs.distributed`), and where the
#: feature matrix stays on the cluster it calls ``fit_one(s, X)`` with the matrix there
#: (and is used for one member too: its ``always`` attribute is true).
MemberMap = Callable[[FitOne, list[dict[str, Any]]], list[Any]]


def fit_members(net_settings: dict[str, Any], fit_one: FitOne,
                member_map: MemberMap | None = None) -> tuple[Network, list[dict]]:
    """Train ``network.members`` networks with seeds seed, seed+1, ... and merge them.

    ``fit_one(settings)`` trains one network (early stopping, refit) and returns it with
    its history, best epoch and refit record. Each member holds back its own validation
    tenth (the split follows the seed), so together they learn from all of the training
    data. With more than one member the result is :func:`nnspam.learning.network.merge_networks`:
    one network whose outputs are the members' mean logits. With one member it is that
    network unchanged (``members: 1`` gives exactly the single-network model).
    Returns the network and one summary record per member.
    """
    from nnspam.learning.network import merge_networks

    k = member_count(net_settings)
    cfgs = [{**net_settings, "seed": int(net_settings.get("seed", 1)) + i} for i in range(k)]
    use_map = member_map is not None and (k > 1 or getattr(member_map, "always", False))
    fitted = (member_map(fit_one, cfgs) if member_map is not None and use_map
              else [fit_one(cfg) for cfg in cfgs])
    nets, runs = [], []
    for cfg, (net, history, best, refit_info) in zip(cfgs, fitted, strict=True):
        nets.append(net)
        runs.append({
            "seed": cfg["seed"], "epochs": len(history), "best_epoch": best,
            "final_validation": history[best - 1] if history and best else None,
            "refit": refit_info,
        })
    return (nets[0] if k == 1 else merge_networks(nets)), runs


def _run_summary(runs: list[dict]) -> dict[str, Any]:
    """The training summary fields of a (merged) network: the first member's figures
    as before, and every member's when there are several."""
    first = runs[0]
    out = {k: first[k] for k in ("epochs", "best_epoch", "final_validation", "refit")}
    if len(runs) > 1:
        out["members"] = runs
    return out


REFITS = ("none", "swa")

BACKENDS = ("numpy", "keras")


def refit_swa(net: Network, X: Any, y: np.ndarray, net_settings: dict[str, Any],
              progress: Progress | None = None) -> tuple[Network, dict[str, Any]]:
    """Retrain on all the training data, held-back part included, and average
    the weights along the way (stochastic weight averaging).

    Early stopping found the best epoch E on the held-back part; the refit
    runs 2E epochs on everything with the same seed and returns the mean of
    the weights after epochs E..2E. It is still one network of the same
    shape: the weights come from one training run. Measured on the SMS split
    over seeds 1-3: spam missed 17/26/16 -> 14/14/13 with no ham lost,
    i.e. less dependence on which 10% was held back. On the SpamAssassin
    split it made the ranking worse (1-ROCA 0.012% -> 0.019%), so email
    models do not use it (config: ``network.refit``).
    """
    best = max(1, int(getattr(net, "best_epoch_", 1) or 1))
    cfg = {**net_settings, "validation_fraction": 0.0, "max_epochs": 2 * best, "patience": 0}
    final = network_from_settings(net.n_inputs, cfg)
    total: dict[str, np.ndarray] = {}
    count = 0

    def accumulate(epoch: int, *rest: float) -> None:
        nonlocal count
        if progress is not None:
            progress(epoch, *rest)
        if epoch >= best:
            for k, v in final.get_weights().items():
                total[k] = total.get(k, 0.0) + v.astype(np.float64)
            count += 1

    final.fit(X, y, progress=accumulate)
    final.set_weights({k: (v / count).astype(np.float32) for k, v in total.items()})
    return final, {"method": "swa", "epochs": 2 * best, "averaged_from_epoch": best}


AUGMENTS = ("none", "text-only")


def _with_text_only_copies(samples: Sequence[Sample], toks: list[list[str]], y: np.ndarray,
                           max_part_bytes: int) -> tuple[list[list[str]], np.ndarray]:
    """The training tokens plus those of a text-only copy of each email
    (:func:`nnspam.mail.tokens.text_only_copy`; every other copy without the blank line after
    its Subject), labelled as the original."""
    from nnspam.mail.tokens import text_only_copy

    copies = [text_only_copy(s.payload if isinstance(s.payload, bytes)
                             else s.payload.encode("utf-8", "surrogateescape"),
                             separator=i % 2 == 0, max_part_bytes=max_part_bytes)
              for i, s in enumerate(samples)]
    return toks + tokenize_samples(copies, "email", max_part_bytes), np.concatenate([y, y])


def train_model(
    samples: Sequence[Sample],
    kind: str,
    settings: dict[str, Any],
    *,
    wordlist: list[tuple[int, str]] | None = None,
    ham_factor: float = 0.9,
    spam_factor: float = 0.1,
    threshold: float = 0.5,
    max_part_bytes: int = 262144,
    progress: Progress | None = None,
    provenance: dict[str, Any] | None = None,
    token_lists: list[list[str]] | None = None,
    arch: str = "nnspam",
    backend: str = "numpy",
    balance: str = "none",
    arch_settings: dict[str, Any] | None = None,
    sparse: bool = True,
    member_map: MemberMap | None = None,
    features: Any = None,
    counts: wl.DocCounts | None = None,
    wide_counts: tuple[np.ndarray, int] | None = None,
) -> Model:
    """Train a model from labelled samples.

    ``settings`` holds the ``wordlist``, ``features`` and ``network`` sections
    of the config. A given ``wordlist`` (from ``nnspam build-wordlist`` or a
    hand-edited file) replaces the built-in selection. ``arch`` chooses the
    architecture (``nnspam``, ``deep``, ``sms-embedding``; the latter two take
    their settings from ``arch_settings``, the config's ``arch:`` section),
    ``backend`` the library that trains it (``numpy``, or ``keras``: the
    optional TensorFlow backend, imported only then), ``balance`` whether
    the training part is balanced first (``dbb``, see
    :func:`nnspam.learning.arch.dbb_oversample`).

    The features are a SciPy CSR matrix (:meth:`nnspam.learning.features.Vectorizer.transform`)
    and the networks train on it batch by batch, never on a dense (m, n) copy. ``sparse=False``
    forces the dense matrix of earlier versions (same values, same word list), kept for
    ``scripts/bench/sparse.py``'s comparison.

    ``counts``, ``features`` and ``wide_counts`` (the word list's document counts, the
    feature matrix, the wide path's counts: :class:`~nnspam.model.wide.Wide`'s ``df``
    and ``docs``) made elsewhere, on a Dask cluster (:mod:`nnspam.services.runs.distributed`):
    given all three, the messages are not tokenized here at all.
    """
    from nnspam.learning.arch import ARCHS, BALANCES

    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r} (use one of {ARCHS})")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (use one of {BACKENDS})")
    if balance not in BALANCES:
        raise ValueError(f"unknown balance {balance!r} (use one of {BALANCES})")
    if arch == "sms-embedding" and balance != "none":
        raise ValueError("--balance dbb needs feature vectors; sms-embedding reads word indices")
    if backend == "keras":
        from nnspam.learning import keras_backend

        if not keras_backend.available():
            raise ValueError("--backend keras needs TensorFlow and Keras 3: "
                             "pip install 'nnspam[keras]'")
    y = labels_of(samples)
    if y.sum() == 0 or y.sum() == len(y):
        raise ValueError("training needs both spam and ham messages")
    t0 = time.perf_counter()
    counted_apart = features is not None and counts is not None and wide_counts is not None
    toks = token_lists if token_lists is not None or counted_apart else tokenize_samples(
        [s.payload for s in samples], kind, max_part_bytes
    )
    counted = toks  # the wide path's token counts: the training messages themselves
    augment = (settings.get("features") or {}).get("augment", "none") or "none"
    if augment not in AUGMENTS:
        raise ValueError(f"unknown features.augment {augment!r} (use one of {AUGMENTS})")
    if counted_apart and ((augment == "text-only" and kind == "email") or arch != "nnspam"
                          or backend != "numpy" or balance != "none"):
        raise ValueError("counts made apart (a cluster) are for the plain nnspam recipe only")
    if augment == "text-only" and kind == "email":
        assert toks is not None  # not counted apart (refused above)
        toks, y = _with_text_only_copies(samples, toks, y, max_part_bytes)
    t_tok = time.perf_counter() - t0
    if arch != "nnspam" or backend != "numpy" or balance != "none":
        from nnspam.config import DEFAULTS

        assert toks is not None and counted is not None  # not counted apart (refused above)
        model = _train_arch(
            toks, y, kind, settings, arch_settings or DEFAULTS["arch"], arch, backend,
            balance, wordlist, progress,
            dict(ham_factor=ham_factor, spam_factor=spam_factor, threshold=threshold,
                 max_part_bytes=max_part_bytes), sparse=sparse,
        )
        model.summary["seconds"]["tokenize"] = round(t_tok, 3)
        if provenance:
            model.summary["provenance"] = provenance
        model.ensure_wide().observe(counted)
        return model
    wcfg = settings["wordlist"]
    if counts is not None:  # counted apart (shards on a cluster): chosen as here
        wordlist = wordlist or wl.from_counts(counts, int(wcfg["size"]), wcfg["method"],
                                              wcfg.get("min_df"))
        wl_method = wcfg["method"]
    elif wordlist is None:
        assert toks is not None  # counted apart comes with its counts
        spam_docs = [t for t, lab in zip(toks, y, strict=True) if lab == 1]
        ham_docs = [t for t, lab in zip(toks, y, strict=True) if lab == 0]
        wordlist = wl.build(spam_docs, ham_docs, int(wcfg["size"]), wcfg["method"],
                            wcfg.get("min_df"))
        wl_method = wcfg["method"]
    else:
        wl_method = "file"
    words = [w for _, w in wordlist]
    refit = settings["network"].get("refit", "none") or "none"
    if refit not in REFITS:
        raise ValueError(f"unknown network.refit {refit!r} (use one of {REFITS})")
    member_count(settings["network"])
    model = Model(
        words=words, network=network_from_settings(len(words), settings["network"]),
        kind=kind, scaling=settings["features"]["scaling"],
        ham_factor=ham_factor, spam_factor=spam_factor, threshold=threshold,
        max_part_bytes=max_part_bytes, wordlist_counts=[c for c, _ in wordlist],
    )
    t1 = time.perf_counter()
    # the feature matrix of these words (``features``: built already, in blocks on a
    # Dask cluster, nnspam.services.runs.distributed; the same values)
    if features is None:
        assert toks is not None  # counted apart comes with its features
        X = model.features(toks, sparse=sparse)
    else:
        X = features

    def fit_one(cfg: dict[str, Any], data: Any = None
                ) -> tuple[Network, list[dict[str, float]], int | None, dict[str, Any] | None]:
        """One member; ``data``: the feature matrix where it is (a Dask worker), when
        ``features`` only stands for it here."""
        Xm = X if data is None else data
        net = network_from_settings(len(words), cfg)
        net.fit(Xm, y, progress=progress)
        history, best = list(net.history_ or []), net.best_epoch_
        refit_info = None
        if refit == "swa":
            net, refit_info = refit_swa(net, Xm, y, cfg, progress)
        return net, history, best, refit_info

    model.network, runs = fit_members(settings["network"], fit_one, member_map)
    t_fit = time.perf_counter() - t1
    model.summary = {
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nnspam_version": __version__,
        "messages": {"ham": int((labels_of(samples) == 0).sum()),
                     "spam": int((labels_of(samples) == 1).sum())},
        **({"augment": augment} if augment != "none" and kind == "email" else {}),
        "wordlist": {"method": wl_method, "size": len(words), "min_df": wcfg.get("min_df")},
        **_run_summary(runs),
        "seconds": {"tokenize": round(t_tok, 3), "fit": round(t_fit, 3)},
        "learned_messages": 0,
    }
    if provenance:
        model.summary["provenance"] = provenance
    # The wide path starts with the training mail's token counts, so the first corrections
    # of a new user already weight common words by a sensible idf (nnspam/model/wide.py).
    if wide_counts is not None:
        model.ensure_wide().add_counts(*wide_counts)
    else:
        assert counted is not None  # counted apart comes with its wide counts
        model.ensure_wide().observe(counted)
    return model


def _split_and_balance(net: Any, X: Any, y: np.ndarray, balance: str,
                       renormalise: bool) -> tuple[Any, np.ndarray, Any, Any]:
    """The stratified validation split of ``Network.fit`` (same seed stream), then the
    balancing of the training part only."""
    from nnspam.learning.arch import dbb_oversample
    from nnspam.learning.network import stratified_split

    streams = np.random.SeedSequence(net.seed).spawn(5)
    tr, va = stratified_split(y, net.validation_fraction, np.random.default_rng(streams[1]))
    Xt, yt = X[tr], y[tr]
    Xv, yv = (X[va], y[va]) if va.size else (None, None)
    if balance == "dbb":
        Xt, yt = dbb_oversample(Xt, yt, np.random.default_rng(streams[4]), renormalise)
    return Xt, yt, Xv, yv


def embedding_vocabulary(toks: Sequence[Sequence[str]], size: int) -> list[tuple[int, str]]:
    """The ``size`` most frequent tokens (ties by first appearance), with their counts: the
    word index of the sms-embedding model, as Keras' ``Tokenizer(num_words)`` builds it."""
    from collections import Counter

    counts: Counter[str] = Counter()
    for t in toks:
        counts.update(t)
    return [(c, w) for w, c in counts.most_common(int(size))]


def _train_arch(
    toks: list[list[str]], y: np.ndarray, kind: str, settings: dict[str, Any],
    arch_settings: dict[str, Any], arch: str, backend: str, balance: str,
    wordlist: list[tuple[int, str]] | None, progress: Progress | None,
    bias: dict[str, Any], sparse: bool = True,
) -> Model:
    """train_model for the other architectures, the Keras backend and balancing."""
    from nnspam.learning.arch import MLP
    from nnspam.learning.features import Vectorizer, idf_weights, stack_rows, with_ngrams

    ncfg = settings["network"]
    common = {k: ncfg[k] for k in ("learning_rate", "batch_size", "max_epochs", "patience",
                                   "validation_fraction", "seed")}
    wcfg = settings["wordlist"]
    ngram, idf, scaling = 1, None, settings["features"]["scaling"]
    if arch == "nnspam":
        if wordlist is None:
            spam_docs = [t for t, lab in zip(toks, y, strict=True) if lab == 1]
            ham_docs = [t for t, lab in zip(toks, y, strict=True) if lab == 0]
            wordlist = wl.build(spam_docs, ham_docs, int(wcfg["size"]), wcfg["method"],
                                wcfg.get("min_df"))
        net: Any = network_from_settings(len(wordlist), ncfg)
        words = [w for _, w in wordlist]
        X = Vectorizer(words, scaling).transform(toks, sparse=sparse)
    elif arch == "deep":
        d = arch_settings["deep"]
        ngram, scaling = int(d["ngram"]), "tfidf"
        docs = [with_ngrams(t, ngram) for t in toks]
        if wordlist is None:
            wordlist = wl.build([t for t, lab in zip(docs, y, strict=True) if lab == 1],
                                [t for t, lab in zip(docs, y, strict=True) if lab == 0],
                                int(d["size"]), "ig", wcfg.get("min_df"))
        words = [w for _, w in wordlist]
        idf = idf_weights(words, docs)
        X = Vectorizer(words, "tfidf", 1, idf).transform(docs, sparse=sparse)
        net = MLP(len(words), layers=d["layers"], output="softmax", dropout=d["dropout"],
                  l2=d["l2"], **common)
    else:
        e = arch_settings["sms_embedding"]
        scaling = "index"
        wordlist = wordlist or embedding_vocabulary(toks, int(e["vocabulary"]))
        words = [w for _, w in wordlist]
        length = int(e["length_sms"] if kind == "sms" else e["length_email"])
        from nnspam.learning.arch import SequenceEncoder

        X = SequenceEncoder(words, length).transform(toks)
        n = len(e["layers"])
        net = MLP(len(words), layers=e["layers"], output="sigmoid",
                  dropout=[0.0] * (n - 1) + [float(e["dropout"])], embedding=int(e["embedding"]),
                  length=length, l2=e["l2"], **common)
    t1 = time.perf_counter()
    libraries = {"numpy": np.__version__}
    if backend == "keras":
        from nnspam.learning import keras_backend

        libraries = keras_backend.libraries()

    def fit_one(cfg: dict[str, Any]) -> tuple[Any, list[dict[str, float]], int | None,
                                              dict[str, Any] | None]:
        """One network: split (and balance), train with early stopping, refit."""
        one = net if cfg["seed"] == net.seed else network_from_settings(net.n_inputs, cfg)
        Xt, yt, Xv, yv = _split_and_balance(one, X, y, balance, scaling == "tfidf")
        trained_on["ham"], trained_on["spam"] = int((yt == 0).sum()), int((yt == 1).sum())
        if backend == "keras":
            keras_backend.fit(one, Xt, yt, X_val=Xv, y_val=yv, progress=progress, split=False)
        elif isinstance(one, Network):
            one.fit(Xt, yt, X_val=Xv, y_val=yv, progress=progress)
        else:
            one.fit_split(Xt, yt, Xv, yv, progress)
        history, best_epoch = list(one.history_ or []), one.best_epoch_
        if arch != "nnspam" or (cfg.get("refit") or "none") != "swa":
            return one, history, best_epoch, None
        refit_info: dict[str, Any] = {"method": "swa", "epochs": 2 * max(1, int(best_epoch or 1)),
                                      "averaged_from_epoch": max(1, int(best_epoch or 1))}
        if backend != "keras":
            final, refit_info = refit_swa(one, X, y, cfg, progress)
            return final, history, best_epoch, refit_info
        best = refit_info["averaged_from_epoch"]
        final = network_from_settings(one.n_inputs, {
            **cfg, "validation_fraction": 0.0, "max_epochs": 2 * best, "patience": 0})
        Xa, ya = X, y
        if balance == "dbb":
            Xa, ya = stack_rows([Xt, Xv]), np.concatenate([yt, yv])
        keras_backend.fit(final, Xa, ya, progress=progress, average_from=best, split=False)
        return final, history, best_epoch, refit_info

    trained_on: dict[str, int] = {}
    # network.members networks of the nnspam architecture are merged into one; the other
    # architectures train one network
    net, runs = fit_members(ncfg if arch == "nnspam" else {**ncfg, "members": 1}, fit_one)
    t_fit = time.perf_counter() - t1
    model = Model(
        words=words, network=net, kind=kind, scaling=scaling, wordlist_counts=[
            int(c) for c, _ in wordlist], arch=arch, backend=backend, ngram=ngram, idf=idf,
        libraries=libraries, **bias,
    )
    model.summary = {
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nnspam_version": __version__,
        "arch": arch, "backend": backend, "balance": balance,
        "messages": {"ham": int((y == 0).sum()), "spam": int((y == 1).sum())},
        "trained_on": trained_on,
        "wordlist": {"method": "ig" if arch != "sms-embedding" else "frequency",
                     "size": len(words), "min_df": wcfg.get("min_df")},
        **_run_summary(runs),
        "seconds": {"tokenize": 0.0, "fit": round(t_fit, 3)},
        "learned_messages": 0,
    }
    return model
