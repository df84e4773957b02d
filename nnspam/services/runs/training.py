"""Training runs: samples -> tokens -> word list -> features -> fitted model,
and incremental learning of an existing model.

Kept apart from the command line so scripts (the default-model builder, the
benchmarks) and later the daemon and server use exactly the same steps.

What is trained is a :class:`Recipe`: the kind of model, the architecture, backend and
balance, a given word list, and every training setting of the config
(:class:`nnspam.settings.TrainingSettings`), built by :meth:`Recipe.from_config`. A
recipe names its path (:attr:`Recipe.path`), and :data:`PATHS` holds one small function
per path: ``plain`` (nnspam's own network trained by NumPy: the shipped recipe),
``keras`` (any architecture trained by the Keras backend) and ``architectures`` (the
other architectures, or a balanced training part, trained by NumPy). A Dask cluster
(:mod:`nnspam.services.runs.distributed`) counts and vectorizes apart for the plain
recipe only (:attr:`Recipe.is_plain`) and hands the result over as :class:`Apart`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnspam import __version__
from nnspam.learning import wordlist as wl
from nnspam.learning.arch import ARCHS, BALANCES
from nnspam.learning.network import Network, network_from_settings
from nnspam.mail.corpus import Sample
from nnspam.model.core import Model
from nnspam.settings import NetworkSettings, TrainingSettings, from_config

__all__ = ["tokenize_samples", "train_model", "labels_of", "Recipe", "Apart", "PATHS",
           "PLAIN", "KERAS", "ARCHITECTURES"]

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
    payloads: Sequence[bytes | str], kind: str = "email", max_part_bytes: int | None = None,
    jobs: int | None = None, for_model: bool = False,
) -> list[list[str]]:
    """Tokenize many payloads, over several processes when there are many.

    Tokenizing is pure Python and the slowest step of a batch run; with two
    cores, two worker processes nearly halve it. Below 2,000 messages the
    cost of starting workers is not worth it. ``for_model``: the tokens a model scores
    (:meth:`nnspam.model.core.Model.tokens`, with the head token its grams part reads);
    else the tokens training counts. ``max_part_bytes``: None for the config's default.
    """
    if max_part_bytes is None:
        from nnspam.config import DEFAULTS

        max_part_bytes = int(DEFAULTS["max_part_bytes"])
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


REFITS = ("none", "swa")

BACKENDS = ("numpy", "keras")

AUGMENTS = ("none", "text-only")

#: The plain recipe's choices, and a recipe's unless told otherwise: nnspam's own
#: network, trained by NumPy, on the training part as it is.
PLAIN_ARCH, PLAIN_BACKEND, PLAIN_BALANCE = ARCHS[0], BACKENDS[0], BALANCES[0]

#: The paths a recipe trains by (:attr:`Recipe.path`; :data:`PATHS` holds their functions).
PLAIN, KERAS, ARCHITECTURES = "plain", "keras", "architectures"


@dataclass(frozen=True)
class Recipe:
    """What a training run makes: the model's ``kind`` (``email``, ``sms``), its
    architecture (``nnspam``, ``deep``, ``sms-embedding``; the latter two take their
    settings from ``settings.architectures``, the config's ``arch:``), the ``backend``
    that trains it (``numpy``, or ``keras``: the optional TensorFlow backend, imported
    only then), the ``balance`` of the training part (``dbb``, see
    :func:`nnspam.learning.arch.dbb_oversample`), a given ``wordlist`` ((count, word)
    pairs from ``nnspam build-wordlist`` or a hand-edited file; None: chosen from the
    training messages) and every training setting (:class:`nnspam.settings.
    TrainingSettings`: word list, features, network with its ``members`` and
    ``refit``, the operating point the model stores and the tokenizer's part cut).

    ``sparse=False`` trains on the dense feature matrix of earlier versions (same values,
    same word list) instead of the SciPy CSR matrix the networks train on batch by batch,
    kept for ``scripts/bench/sparse.py``'s comparison.

    Build one with :meth:`from_config`; the values are checked here, so a recipe that
    exists can be trained. Change one for a run with :func:`dataclasses.replace`.
    """

    kind: str
    settings: TrainingSettings
    arch: str
    backend: str
    balance: str
    wordlist: tuple[tuple[int, str], ...] | None
    sparse: bool

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown architecture {self.arch!r} (use one of {ARCHS})")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r} (use one of {BACKENDS})")
        if self.balance not in BALANCES:
            raise ValueError(f"unknown balance {self.balance!r} (use one of {BALANCES})")
        if self.arch == "sms-embedding" and self.balance != PLAIN_BALANCE:
            raise ValueError("--balance dbb needs feature vectors; sms-embedding reads "
                             "word indices")
        augment = self.settings.features.augment
        if augment not in AUGMENTS:
            raise ValueError(f"unknown features.augment {augment!r} (use one of {AUGMENTS})")
        net = self.settings.network
        if net.refit not in REFITS:
            raise ValueError(f"unknown network.refit {net.refit!r} (use one of {REFITS})")
        k = net.members
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"network.members must be a whole number >= 1, got {k!r}")

    @classmethod
    def from_config(cls, cfg: dict[str, Any], kind: str, *, faithful: bool = False,
                    overrides: Mapping[str, Any] | None = None, arch: str = PLAIN_ARCH,
                    backend: str = PLAIN_BACKEND, balance: str = PLAIN_BALANCE,
                    wordlist: Sequence[tuple[int, str]] | None = None,
                    sparse: bool = True) -> Recipe:
        """The recipe of a ``kind`` model from a loaded config ``cfg``: its training view,
        :func:`nnspam.config.email_training` or, for ``sms``,
        :func:`nnspam.config.sms_training` (the ``sms:`` sections over the top-level
        ones); with ``faithful``, :data:`nnspam.config.FAITHFUL` over that; then
        ``overrides``, nested like the config (``{"network": {"members": 1},
        "threshold": 0.6}``: the command line's options) over everything.
        Raises ValueError for a choice or setting no recipe can train."""
        from nnspam import config as C

        sections = C.sms_training(cfg) if kind == "sms" else C.email_training(cfg)
        if faithful:
            sections = C.merge(sections, C.FAITHFUL)
        view = C.merge({**cfg, **sections}, dict(overrides or {}))
        return cls(kind=kind, settings=from_config(TrainingSettings, view), arch=arch,
                   backend=backend, balance=balance,
                   wordlist=None if wordlist is None else tuple(wordlist), sparse=sparse)

    @property
    def path(self) -> str:
        """How the recipe is trained (:data:`PATHS`): ``keras`` for the Keras backend;
        ``plain`` for nnspam's own network on the training part as it is; else
        ``architectures`` (another architecture, or a balanced training part)."""
        if self.backend != PLAIN_BACKEND:
            return KERAS
        if self.arch == PLAIN_ARCH and self.balance == PLAIN_BALANCE:
            return PLAIN
        return ARCHITECTURES

    @property
    def copies(self) -> bool:
        """Whether each training email also trains as a text-only copy
        (``features.augment: text-only``; SMS have no copies)."""
        return self.settings.features.augment == "text-only" and self.kind == "email"

    @property
    def is_plain(self) -> bool:
        """The plain path on the training messages alone, its word list chosen from them:
        the recipe whose word counts, features and wide counts can be made apart, shard
        by shard (:class:`Apart`, a Dask cluster)."""
        return self.path == PLAIN and not self.copies and self.wordlist is None


@dataclass(frozen=True)
class Apart:
    """The training messages counted elsewhere, for the plain recipe
    (:mod:`nnspam.services.runs.distributed`, on a Dask cluster): the word list chosen
    from their summed counts as the plain path chooses it, their feature matrix over
    those words (or what stands for it here while it stays on the cluster: the members'
    ``member_map`` hands each member the matrix) and the wide path's counts
    (:class:`~nnspam.model.wide.Wide`'s ``df`` and ``docs``). Given, the messages are
    not tokenized here at all."""

    wordlist: list[tuple[int, str]]
    features: Any
    wide_counts: tuple[np.ndarray, int]


FitOne = Callable[..., tuple[Any, list[dict[str, float]], "int | None",
                             "dict[str, Any] | None"]]


#: How the members are trained: ``member_map(fit_one, member_settings)`` returns
#: ``[fit_one(s) for s in member_settings]`` (the default, one after the other); a Dask
#: cluster trains them at once (:mod:`nnspam.services.runs.distributed`), and where the
#: feature matrix stays on the cluster it calls ``fit_one(s, X)`` with the matrix there
#: (and is used for one member too: its ``always`` attribute is true).
MemberMap = Callable[[FitOne, list[NetworkSettings]], list[Any]]


def fit_members(network: NetworkSettings, fit_one: FitOne,
                member_map: MemberMap | None = None) -> tuple[Any, list[dict]]:
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

    k = network.members
    cfgs = [dataclasses.replace(network, seed=network.seed + i) for i in range(k)]
    use_map = member_map is not None and (k > 1 or getattr(member_map, "always", False))
    fitted = (member_map(fit_one, cfgs) if member_map is not None and use_map
              else [fit_one(cfg) for cfg in cfgs])
    nets, runs = [], []
    for cfg, (net, history, best, refit_info) in zip(cfgs, fitted, strict=True):
        nets.append(net)
        runs.append({
            "seed": cfg.seed, "epochs": len(history), "best_epoch": best,
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


def refit_swa(net: Network, X: Any, y: np.ndarray, network: NetworkSettings,
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
    final = network_from_settings(net.n_inputs, _refit_settings(network, best).as_dict())
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


def _refit_settings(network: NetworkSettings, best: int) -> NetworkSettings:
    """The network settings of a refit after best epoch ``best``: all the data, 2 * best
    epochs, no early stopping."""
    return dataclasses.replace(network, validation_fraction=0.0, max_epochs=2 * best,
                               patience=0)


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


@dataclass(frozen=True)
class _Run:
    """What a path trains on: the samples, their tokens (None: counted apart) and labels,
    text-only copies included, and how it reports and spreads its members."""

    samples: Sequence[Sample]
    toks: list[list[str]] | None
    y: np.ndarray
    progress: Progress | None
    member_map: MemberMap | None
    apart: Apart | None


def train_model(
    samples: Sequence[Sample],
    recipe: Recipe,
    *,
    token_lists: list[list[str]] | None = None,
    progress: Progress | None = None,
    provenance: dict[str, Any] | None = None,
    member_map: MemberMap | None = None,
    apart: Apart | None = None,
) -> Model:
    """Train the model of ``recipe`` (:class:`Recipe`) from labelled samples, by the
    recipe's path (:data:`PATHS`).

    ``token_lists``: the samples' tokens, made already (else they are tokenized here).
    ``progress(epoch, loss, val_loss, val_error)`` is called after every epoch;
    ``provenance`` is recorded in the model's summary. ``member_map`` trains the
    ``network.members`` networks of the plain path (:data:`MemberMap`; default: one
    after the other here). ``apart``: the messages counted and vectorized elsewhere, for
    the plain recipe only (:class:`Apart`; the samples then need only their labels).
    """
    if recipe.path == KERAS:
        from nnspam.learning import keras_backend

        if not keras_backend.available():
            raise ValueError("--backend keras needs TensorFlow and Keras 3: "
                             "pip install 'nnspam[keras]'")
    if apart is not None and not recipe.is_plain:
        raise ValueError("counts made apart (a cluster) are for the plain nnspam recipe only")
    y = labels_of(samples)
    if y.sum() == 0 or y.sum() == len(y):
        raise ValueError("training needs both spam and ham messages")
    t0 = time.perf_counter()
    mpb = recipe.settings.max_part_bytes
    toks = token_lists if token_lists is not None or apart is not None else tokenize_samples(
        [s.payload for s in samples], recipe.kind, mpb
    )
    counted = toks  # the wide path's token counts: the training messages themselves
    if recipe.copies:
        assert toks is not None  # not counted apart (is_plain has no copies)
        toks, y = _with_text_only_copies(samples, toks, y, mpb)
    t_tok = time.perf_counter() - t0
    model = PATHS[recipe.path](recipe, _Run(samples, toks, y, progress, member_map, apart))
    model.summary["seconds"]["tokenize"] = round(t_tok, 3)
    if provenance:
        model.summary["provenance"] = provenance
    # The wide path starts with the training mail's token counts, so the first corrections
    # of a new user already weight common words by a sensible idf (nnspam/model/wide.py).
    if apart is not None:
        model.ensure_wide().add_counts(*apart.wide_counts)
    else:
        assert counted is not None  # tokenized, or given
        model.ensure_wide().observe(counted)
    return model


def _point(recipe: Recipe) -> dict[str, Any]:
    """The operating point and part cut the model stores."""
    p = recipe.settings.point
    return dict(ham_factor=p.ham_factor, spam_factor=p.spam_factor, threshold=p.threshold,
                max_part_bytes=recipe.settings.max_part_bytes)


def _by_class(toks: Sequence[list[str]], y: np.ndarray) -> tuple[list[list[str]],
                                                                 list[list[str]]]:
    """The spam messages' tokens and the ham messages'."""
    return ([t for t, lab in zip(toks, y, strict=True) if lab == 1],
            [t for t, lab in zip(toks, y, strict=True) if lab == 0])


def _train_plain(recipe: Recipe, run: _Run) -> Model:
    """The plain path: nnspam's own network, ``network.members`` of them merged, trained
    by NumPy on the training part as it is; the members may train elsewhere
    (``run.member_map``) and the counts may have been made apart (``run.apart``)."""
    w, net_settings = recipe.settings.wordlist, recipe.settings.network
    y, progress = run.y, run.progress
    wordlist: Sequence[tuple[int, str]]
    if run.apart is not None:  # counted apart (shards on a cluster): chosen as here
        wordlist, wl_method = run.apart.wordlist, w.method
    elif recipe.wordlist is None:
        assert run.toks is not None  # counted apart comes with its word list
        wordlist = wl.build(*_by_class(run.toks, y), w.size, w.method, w.min_df)
        wl_method = w.method
    else:
        wordlist, wl_method = recipe.wordlist, "file"
    words = [word for _, word in wordlist]
    model = Model(
        words=words, network=network_from_settings(len(words), net_settings.as_dict()),
        kind=recipe.kind, scaling=recipe.settings.features.scaling,
        wordlist_counts=[c for c, _ in wordlist], **_point(recipe),
    )
    t1 = time.perf_counter()
    # the feature matrix of these words (apart: built already, in blocks on a Dask
    # cluster, nnspam.services.runs.distributed; the same values)
    if run.apart is None:
        assert run.toks is not None
        X = model.features(run.toks, sparse=recipe.sparse)
    else:
        X = run.apart.features
    swa = net_settings.refit == "swa"

    def fit_one(cfg: NetworkSettings, data: Any = None
                ) -> tuple[Network, list[dict[str, float]], int | None, dict[str, Any] | None]:
        """One member; ``data``: the feature matrix where it is (a Dask worker), when
        ``X`` only stands for it here."""
        Xm = X if data is None else data
        net = network_from_settings(len(words), cfg.as_dict())
        net.fit(Xm, y, progress=progress)
        history, best = list(net.history_ or []), net.best_epoch_
        refit_info = None
        if swa:
            net, refit_info = refit_swa(net, Xm, y, cfg, progress)
        return net, history, best, refit_info

    model.network, runs = fit_members(net_settings, fit_one, run.member_map)
    t_fit = time.perf_counter() - t1
    labels = labels_of(run.samples)
    model.summary = {
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nnspam_version": __version__,
        "messages": {"ham": int((labels == 0).sum()), "spam": int((labels == 1).sum())},
        **({"augment": recipe.settings.features.augment} if recipe.copies else {}),
        "wordlist": {"method": wl_method, "size": len(words), "min_df": w.min_df},
        **_run_summary(runs),
        "seconds": {"tokenize": 0.0, "fit": round(t_fit, 3)},  # tokenize: train_model's
        "learned_messages": 0,
    }
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


@dataclass(frozen=True)
class _Parts:
    """One member's data: all the training rows, its training part (balanced) and
    validation part (None: none), and whether it is refit with weight averaging."""

    X: Any
    y: np.ndarray
    Xt: Any
    yt: np.ndarray
    Xv: Any
    yv: Any
    balanced: bool
    swa: bool


#: How a backend trains one member of the other paths: ``member(net, settings, parts,
#: progress)`` trains ``net`` (split already) and returns the network to keep (the
#: refit one, or ``net``) and the refit record (None: no refit).
Member = Callable[[Any, NetworkSettings, _Parts, "Progress | None"],
                  tuple[Any, "dict[str, Any] | None"]]


def _numpy_member(one: Any, cfg: NetworkSettings, parts: _Parts,
                  progress: Progress | None) -> tuple[Any, dict[str, Any] | None]:
    """A member trained by NumPy; the swa refit on all the rows as they are."""
    if isinstance(one, Network):
        one.fit(parts.Xt, parts.yt, X_val=parts.Xv, y_val=parts.yv, progress=progress)
    else:
        one.fit_split(parts.Xt, parts.yt, parts.Xv, parts.yv, progress)
    if not parts.swa:
        return one, None
    return refit_swa(one, parts.X, parts.y, cfg, progress)


def _keras_member(one: Any, cfg: NetworkSettings, parts: _Parts,
                  progress: Progress | None) -> tuple[Any, dict[str, Any] | None]:
    """A member trained by Keras (:func:`nnspam.learning.keras_backend.fit`); the swa
    refit averages in Keras too, on the balanced rows when the training part was."""
    from nnspam.learning import keras_backend
    from nnspam.learning.features import stack_rows

    keras_backend.fit(one, parts.Xt, parts.yt, X_val=parts.Xv, y_val=parts.yv,
                      progress=progress, split=False)
    if not parts.swa:
        return one, None
    best = max(1, int(one.best_epoch_ or 1))
    refit_info: dict[str, Any] = {"method": "swa", "epochs": 2 * best,
                                  "averaged_from_epoch": best}
    final = network_from_settings(one.n_inputs, _refit_settings(cfg, best).as_dict())
    Xa, ya = parts.X, parts.y
    if parts.balanced:
        Xa, ya = stack_rows([parts.Xt, parts.Xv]), np.concatenate([parts.yt, parts.yv])
    keras_backend.fit(final, Xa, ya, progress=progress, average_from=best, split=False)
    return final, refit_info


def _train_architectures(recipe: Recipe, run: _Run) -> Model:
    """The architectures path: another architecture, or a balanced training part,
    trained by NumPy."""
    return _train_arch(recipe, run, _numpy_member, lambda: {"numpy": np.__version__})


def _train_keras(recipe: Recipe, run: _Run) -> Model:
    """The keras path: any architecture trained by the Keras backend."""
    from nnspam.learning import keras_backend

    return _train_arch(recipe, run, _keras_member, keras_backend.libraries)


def _train_arch(recipe: Recipe, run: _Run, member: Member,
                libraries: Callable[[], dict[str, str]]) -> Model:
    """The keras and architectures paths: the architecture's inputs and network, each
    member split (and balanced) and trained by ``member``; ``libraries``: the versions
    of the libraries that train (``model.json``)."""
    from nnspam.learning.arch import MLP, SequenceEncoder
    from nnspam.learning.features import Vectorizer, idf_weights, with_ngrams

    assert run.toks is not None  # not counted apart (is_plain only)
    toks, y, progress = run.toks, run.y, run.progress
    settings = recipe.settings
    ncfg, w = settings.network, settings.wordlist
    common = {k: getattr(ncfg, k) for k in ("learning_rate", "batch_size", "max_epochs",
                                            "patience", "validation_fraction", "seed")}
    ngram, idf, scaling = 1, None, settings.features.scaling
    wordlist: Sequence[tuple[int, str]] | None = recipe.wordlist
    if recipe.arch == "nnspam":
        if wordlist is None:
            wordlist = wl.build(*_by_class(toks, y), w.size, w.method, w.min_df)
        net: Any = network_from_settings(len(wordlist), ncfg.as_dict())
        words = [word for _, word in wordlist]
        X = Vectorizer(words, scaling).transform(toks, sparse=recipe.sparse)
    elif recipe.arch == "deep":
        d = settings.architectures.deep
        ngram, scaling = d.ngram, "tfidf"
        docs = [with_ngrams(t, ngram) for t in toks]
        if wordlist is None:
            wordlist = wl.build(*_by_class(docs, y), d.size, "ig", w.min_df)
        words = [word for _, word in wordlist]
        idf = idf_weights(words, docs)
        X = Vectorizer(words, "tfidf", 1, idf).transform(docs, sparse=recipe.sparse)
        net = MLP(len(words), layers=d.layers, output="softmax", dropout=d.dropout,
                  l2=d.l2, **common)
    else:
        e = settings.architectures.sms_embedding
        scaling = "index"
        wordlist = wordlist or embedding_vocabulary(toks, e.vocabulary)
        words = [word for _, word in wordlist]
        length = e.length_sms if recipe.kind == "sms" else e.length_email
        X = SequenceEncoder(words, length).transform(toks)
        n = len(e.layers)
        net = MLP(len(words), layers=e.layers, output="sigmoid",
                  dropout=[0.0] * (n - 1) + [e.dropout], embedding=e.embedding,
                  length=length, l2=e.l2, **common)
    t1 = time.perf_counter()
    libs = libraries()
    balance = recipe.balance
    swa = recipe.arch == "nnspam" and ncfg.refit == "swa"

    def fit_one(cfg: NetworkSettings) -> tuple[Any, list[dict[str, float]], int | None,
                                               dict[str, Any] | None]:
        """One network: split (and balance), train with early stopping, refit."""
        one = net if cfg.seed == net.seed else network_from_settings(net.n_inputs,
                                                                     cfg.as_dict())
        Xt, yt, Xv, yv = _split_and_balance(one, X, y, balance, scaling == "tfidf")
        trained_on["ham"], trained_on["spam"] = int((yt == 0).sum()), int((yt == 1).sum())
        final, refit_info = member(one, cfg, _Parts(X, y, Xt, yt, Xv, yv,
                                                    balance != PLAIN_BALANCE, swa), progress)
        return final, list(one.history_ or []), one.best_epoch_, refit_info

    trained_on: dict[str, int] = {}
    # network.members networks of the nnspam architecture are merged into one; the other
    # architectures train one network
    net, runs = fit_members(ncfg if recipe.arch == "nnspam"
                            else dataclasses.replace(ncfg, members=1), fit_one)
    t_fit = time.perf_counter() - t1
    model = Model(
        words=words, network=net, kind=recipe.kind, scaling=scaling, wordlist_counts=[
            int(c) for c, _ in wordlist], arch=recipe.arch, backend=recipe.backend,
        ngram=ngram, idf=idf, libraries=libs, **_point(recipe),
    )
    model.summary = {
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nnspam_version": __version__,
        "arch": recipe.arch, "backend": recipe.backend, "balance": balance,
        "messages": {"ham": int((y == 0).sum()), "spam": int((y == 1).sum())},
        "trained_on": trained_on,
        "wordlist": {"method": "ig" if recipe.arch != "sms-embedding" else "frequency",
                     "size": len(words), "min_df": w.min_df},
        **_run_summary(runs),
        "seconds": {"tokenize": 0.0, "fit": round(t_fit, 3)},  # tokenize: train_model's
        "learned_messages": 0,
    }
    return model


#: One function per path (:attr:`Recipe.path`): ``fn(recipe, run)`` -> the trained model,
#: before :func:`train_model` adds the tokenizing time, the provenance and the wide path.
PATHS: dict[str, Callable[[Recipe, _Run], Model]] = {
    PLAIN: _train_plain, KERAS: _train_keras, ARCHITECTURES: _train_architectures,
}
