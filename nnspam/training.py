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
from nnspam import wordlist as wl
from nnspam.corpus import Sample
from nnspam.model import Model
from nnspam.network import Network

__all__ = ["tokenize_samples", "train_model", "learn", "labels_of"]

Progress = Callable[[int, float, float, float], None]


def _tokenizer(kind: str, max_part_bytes: int) -> Callable[[bytes | str], list[str]]:
    from nnspam import tokens as tk

    if kind == "sms":
        def tok_sms(p: bytes | str) -> list[str]:
            return tk.tokenize_sms(p if isinstance(p, str) else tk.sms_text_from_bytes(p))
        return tok_sms

    def tok_email(p: bytes | str) -> list[str]:
        raw = p if isinstance(p, bytes) else p.encode("utf-8", "surrogateescape")
        return tk.tokenize_email(raw, max_part_bytes)
    return tok_email


def _tok_chunk(args: tuple[str, int, list[bytes | str]]) -> list[list[str]]:
    kind, mpb, payloads = args
    f = _tokenizer(kind, mpb)
    return [f(p) for p in payloads]


def tokenize_samples(
    payloads: Sequence[bytes | str], kind: str = "email", max_part_bytes: int = 262144,
    jobs: int | None = None,
) -> list[list[str]]:
    """Tokenize many payloads, over several processes when there are many.

    Tokenizing is pure Python and the slowest step of a batch run; with two
    cores, two worker processes nearly halve it. Below 2,000 messages the
    cost of starting workers is not worth it.
    """
    n = len(payloads)
    jobs = jobs if jobs is not None else min(os.cpu_count() or 1, 4)
    if jobs <= 1 or n < 2000:
        return _tok_chunk((kind, max_part_bytes, list(payloads)))
    import multiprocessing as mp

    size = (n + jobs * 4 - 1) // (jobs * 4)
    chunks = [(kind, max_part_bytes, list(payloads[i:i + size])) for i in range(0, n, size)]
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


def network_from_settings(n_inputs: int, net: dict[str, Any]) -> Network:
    """Build an untrained network from the ``network:`` settings."""
    cfg = dict(net)
    hidden = cfg.pop("hidden", None)
    return Network(n_inputs=n_inputs, n_hidden=hidden, **cfg)


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
) -> Model:
    """Train a model from labelled samples.

    ``settings`` holds the ``wordlist``, ``features`` and ``network`` sections
    of the config. A given ``wordlist`` (from ``nnspam build-wordlist`` or a
    hand-edited file) replaces the built-in selection.
    """
    y = labels_of(samples)
    if y.sum() == 0 or y.sum() == len(y):
        raise ValueError("training needs both spam and ham messages")
    t0 = time.perf_counter()
    toks = token_lists if token_lists is not None else tokenize_samples(
        [s.payload for s in samples], kind, max_part_bytes
    )
    t_tok = time.perf_counter() - t0
    wcfg = settings["wordlist"]
    if wordlist is None:
        spam_docs = [t for t, lab in zip(toks, y, strict=True) if lab == 1]
        ham_docs = [t for t, lab in zip(toks, y, strict=True) if lab == 0]
        wordlist = wl.build(spam_docs, ham_docs, int(wcfg["size"]), wcfg["method"],
                            int(wcfg.get("min_df", 3)))
        wl_method = wcfg["method"]
    else:
        wl_method = "file"
    words = [w for _, w in wordlist]
    net = network_from_settings(len(words), settings["network"])
    model = Model(
        words=words, network=net, kind=kind, scaling=settings["features"]["scaling"],
        ham_factor=ham_factor, spam_factor=spam_factor, threshold=threshold,
        max_part_bytes=max_part_bytes, wordlist_counts=[c for c, _ in wordlist],
    )
    t1 = time.perf_counter()
    X = model.features(toks)
    net.fit(X, y, progress=progress)
    t_fit = time.perf_counter() - t1
    model.summary = {
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nnspam_version": __version__,
        "messages": {"ham": int((y == 0).sum()), "spam": int((y == 1).sum())},
        "wordlist": {"method": wl_method, "size": len(words), "min_df": wcfg.get("min_df")},
        "epochs": len(getattr(net, "history_", []) or []),
        "best_epoch": getattr(net, "best_epoch_", None),
        "final_validation": (net.history_[net.best_epoch_ - 1]
                             if getattr(net, "history_", None) and net.best_epoch_ else None),
        "seconds": {"tokenize": round(t_tok, 3), "fit": round(t_fit, 3)},
        "learned_messages": 0,
    }
    if provenance:
        model.summary["provenance"] = provenance
    return model


def learn(model: Model, payloads: Sequence[bytes | str], label: str, epochs: int = 1) -> None:
    """Incremental training of an existing model on messages of one class:
    the correction path (``nnspam learn``, later the daemon and the server)."""
    if label not in ("spam", "ham"):
        raise ValueError(f"label must be 'spam' or 'ham', not {label!r}")
    if not payloads:
        return
    toks = [model.tokens(p) for p in payloads]
    X = model.features(toks)
    y = np.full(len(payloads), 1 if label == "spam" else 0, dtype=np.int64)
    model.network.partial_fit(X, y, epochs=epochs)
    model.summary["learned_messages"] = int(model.summary.get("learned_messages", 0)) + len(y)
