"""Archive training on a Dask cluster: ``nnspam train ... --dask ADDRESS|local[:N]``.

A batch training spends its time in four places, and each one splits into independent
pieces that a cluster (Dask's ``distributed`` scheduler) runs at once:

1. **Tokenizing**: the messages are cut into shards (``SHARD`` messages each), sent to
   the workers and tokenized there, each shard by :func:`nnspam.services.runs.training.
   tokenize_samples` as in one process. The token lists stay on the workers.
2. **The word list**: each worker counts its shards' tokens by class
   (:func:`nnspam.learning.wordlist.count_docs`: documents holding a token, its
   occurrences); the counts are summed pairwise on the cluster and only the sum comes
   back, from which :func:`nnspam.learning.wordlist.from_counts` chooses the words.
   Counts add up exactly, so the word list is the one a single process chooses
   (``tests/test_distributed.py`` checks it).
3. **Feature blocks**: each shard's feature rows are made on its worker with the chosen
   words (the model's own vectorizer) and the blocks are stacked in order on a worker:
   the same matrix as :meth:`nnspam.model.core.Model.features` of all messages. It
   stays on the cluster (:class:`OnCluster` stands for it here).
4. **Members**: the ``network.members`` networks (3 for email) are trained on workers
   at once, each with its own seed as in one process, each worker fetching the matrix
   from the one that holds it, and merged here as always
   (:func:`nnspam.services.runs.training.fit_members`).

5. **The wide path's counts**: each shard's token document counts per hashed slot
   (:meth:`nnspam.model.wide.Wide.observe` on the worker), summed pairwise like the word
   counts; the token lists themselves never come back from the workers.

What stays here: reading the archive (a ``.tar.xz`` is one compressed stream, read in
order), a shard at a time, each shard sent on as soon as it is read, so that only the
names and labels are held here (``nnspam train --dask`` with ``--split``/``--corpus``:
:func:`nnspam.mail.corpus.iter_split_samples`); the sums of the counts; the merge and
the save. With ``features.augment: text-only`` (the training doubles the
messages with text-only copies) steps 2 and 3 run here, after the copies are made.

``local`` starts a ``LocalCluster`` of one-thread worker processes (``local:N`` for
N workers; default: one per core). Any other value is a scheduler address
(``tcp://host:8786``) of a cluster started with ``dask scheduler`` / ``dask worker``,
or with Dask's Kubernetes or SLURM deployers (docs/guides/dask.md "Training on a Dask cluster").
The workers need nnspam installed at the same version; they receive message bytes,
never file paths, so they need no access to the archive.

The cluster is imported only here, only for ``--dask``: without it nothing changes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from nnspam.learning import wordlist as wl
from nnspam.mail.corpus import Sample
from nnspam.model.core import Model
from nnspam.settings import NetworkSettings

if TYPE_CHECKING:
    from nnspam.services.runs.training import Progress, Recipe

__all__ = ["DistributedError", "SHARD", "cluster", "parse_address", "train_on_cluster"]

#: Messages per shard: large enough that a task's overhead (a few ms) is small against
#: tokenizing it (about 0.4 ms per message), small enough to spread a corpus of 4,000
#: messages over a few workers.
SHARD = 1000


class DistributedError(ValueError):
    """A ``--dask`` value that names no cluster, or a cluster that cannot be reached."""


def parse_address(spec: str) -> tuple[str, int | None]:
    """``("local", N or None)`` for ``local`` / ``local:N``, else ``("address", None)``
    with the scheduler address checked for a form Dask can use."""
    spec = spec.strip()
    if spec == "local" or spec.startswith("local:"):
        n = spec.partition(":")[2]
        if n and not (n.isdigit() and int(n) >= 1):
            raise DistributedError(f"--dask local:N needs a number of workers >= 1, not {n!r}")
        return "local", int(n) if n else None
    if "://" not in spec and ":" not in spec:
        raise DistributedError(f"--dask {spec!r}: give local, local:N or a scheduler address "
                               "such as tcp://host:8786")
    return spec, None


@contextmanager
def cluster(spec: str) -> Iterator[Any]:
    """A ``distributed.Client`` for ``spec`` (see :func:`parse_address`); a local cluster
    is started for the block and closed after it."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise DistributedError(f"--dask needs the dask extra ({exc.name}): "
                               "pip install 'nnspam[dask]'") from None
    where, n = parse_address(spec)
    if where == "local":
        cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count() or 1)
        workers = n or cores
        # One task at a time per worker process (tokenizing is pure Python: the GIL), and
        # the cores left over as BLAS threads for the member a worker trains: Dask starts
        # its workers with one BLAS thread, and a member of the shipped recipe trained in
        # 138 s on a lone worker so, against 40 s in one process with two threads.
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=":0", silence_logs=40) as lc, Client(lc) as client:
            client.nnspam_blas_threads = max(1, cores // workers)  # read by _member_map
            yield client
        return
    try:
        client = Client(where, timeout="20s")
    except OSError as exc:
        raise DistributedError(f"--dask {where}: cannot reach the scheduler ({exc})") from None
    try:
        yield client
    finally:
        client.close()


# -- what the workers run (module-level functions: they are pickled by reference) ---------

#: glibc's ``mallopt`` parameters (malloc.h): M_TRIM_THRESHOLD and M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_malloc_tuned = False


def _roomy_malloc() -> None:
    """Undo the small malloc trim threshold Dask starts its workers with.

    Dask's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536``, so glibc hands
    freed memory back to the system after every mini-batch and maps it in again for the
    next one. Measured outside Dask with the same matrix and two BLAS threads: one member's
    five epochs took 3.1 s in a plain process and 8.6-8.8 s with that variable alone set;
    this call (a 256 MB trim threshold, arrays above 32 MB mapped on their own) brought it
    back to 4.5 s. It changes how freed memory is kept, never a result; on a C library
    other than glibc it does nothing. Called at the start of each task, once per worker.
    """
    global _malloc_tuned
    if _malloc_tuned:
        return
    _malloc_tuned = True
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return
    if mallopt is not None:
        mallopt(_M_TRIM_THRESHOLD, 256 << 20)
        mallopt(_M_MMAP_THRESHOLD, 32 << 20)


def _tokenize(payloads: list[bytes | str], kind: str, max_part_bytes: int) -> list[list[str]]:
    from nnspam.services.runs.training import tokenize_samples

    _roomy_malloc()
    return tokenize_samples(payloads, kind, max_part_bytes, jobs=1)


def _count(toks: list[list[str]], labels: np.ndarray) -> wl.DocCounts:
    return wl.count_docs([t for t, y in zip(toks, labels, strict=True) if y == 1],
                         [t for t, y in zip(toks, labels, strict=True) if y == 0])


def _add(a: wl.DocCounts, b: wl.DocCounts) -> wl.DocCounts:
    return a + b


def _wide_count(toks: list[list[str]]) -> tuple[np.ndarray, int]:
    """The wide path's document counts of one shard (a new path's ``df`` and ``docs``)."""
    from nnspam.model.wide import Wide

    w = Wide()
    w.observe(toks)
    return w.df, w.docs


def _wide_add(a: tuple[np.ndarray, int], b: tuple[np.ndarray, int]) -> tuple[np.ndarray, int]:
    return a[0] + b[0], a[1] + b[1]


def _block(toks: list[list[str]], words: list[str], scaling: str) -> Any:
    from nnspam.learning.features import Vectorizer

    return Vectorizer(words, scaling).transform(toks, sparse=True)


def _stack(blocks: Sequence[Any], perm: np.ndarray | None = None) -> Any:
    """The feature blocks as one CSR matrix, its rows in the order ``perm`` gives."""
    import scipy.sparse as sp

    X = sp.vstack(list(blocks), format="csr")
    return X if perm is None else X[perm]


class OnCluster:
    """What :func:`nnspam.services.runs.training.train_model` holds for a feature matrix that
    stays on the cluster: its shape only. The members' tasks get the matrix itself."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape

    def __repr__(self) -> str:
        return f"OnCluster(shape={self.shape})"


def _tree_sum(client: Any, futures: list[Any], add: Callable[[Any, Any], Any] = _add) -> Any:
    """Sum counts pairwise on the cluster: only the total comes back."""
    while len(futures) > 1:
        nxt = [client.submit(add, futures[i], futures[i + 1])
               for i in range(0, len(futures) - 1, 2)]
        if len(futures) % 2:
            nxt.append(futures[-1])
        futures = nxt
    return futures[0].result()


def _fit(fit_one: Callable, cfg: NetworkSettings, blas: int | None, data: Any = None) -> Any:
    """One member on a worker, with ``blas`` BLAS threads (None: as the worker has) and
    ``data``: the feature matrix, when it stayed on the cluster."""
    _roomy_malloc()
    args = (cfg,) if data is None else (cfg, data)
    if blas is None:
        return fit_one(*args)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=blas, user_api="blas"):
        return fit_one(*args)


def _member_map(client: Any, data: Any = None) -> Callable[[Callable, list[NetworkSettings]],
                                                           list[Any]]:
    """Members trained at once on the cluster; ``data``: the future of the feature
    matrix on the cluster (each member's worker fetches it from the worker that holds it)."""
    blas = getattr(client, "nnspam_blas_threads", None)

    def run(fit_one: Callable, cfgs: list[NetworkSettings]) -> list[Any]:
        return client.gather(client.map(_fit, [fit_one] * len(cfgs), cfgs,
                                        [blas] * len(cfgs), [data] * len(cfgs), pure=False))
    run.always = data is not None  # type: ignore[attr-defined]  # read by fit_members (getattr)
    return run


def train_on_cluster(client: Any, samples: Iterable[Sample], recipe: Recipe, *,
                     shard: int = SHARD, order: Sequence[str] | None = None,
                     progress: Progress | None = None,
                     provenance: dict[str, Any] | None = None) -> Model:
    """:func:`nnspam.services.runs.training.train_model` of ``recipe`` with its expensive
    parts on the cluster behind ``client`` (see the module docstring); the same model (up
    to the members' floating-point sums, which do not depend on the worker).

    ``samples`` may be an iterator (:func:`nnspam.mail.corpus.iter_split_samples`): it
    is read a shard at a time and each shard is sent to the cluster as soon as it is
    read, so that the archive is never held here whole. ``order``: the samples' names in
    the order the model is to be trained in (the split file's), when they are read in
    another (a tar archive's); the feature rows are put back in that order, so the model
    is the one of the samples in that order.

    With a recipe other than the plain one (:attr:`~nnspam.services.runs.training.Recipe.
    is_plain`: text-only copies, another architecture or backend, a balance, a given word
    list) the samples are held here, only the tokenizing runs on the cluster, and the
    token lists come back."""
    from nnspam.services.runs.training import Apart, labels_of, train_model

    kind, mpb = recipe.kind, recipe.settings.max_part_bytes
    if not recipe.is_plain:
        held = list(samples)
        if order is not None:
            where = {s.name: s for s in held}
            held = [where[n] for n in order]
        futures = [client.submit(_tokenize, [s.payload for s in held[i:i + shard]], kind,
                                 mpb, pure=False) for i in range(0, len(held), shard)]
        toks = [t for part in client.gather(futures) for t in part]
        return train_model(held, recipe, token_lists=toks, member_map=_member_map(client),
                           progress=progress, provenance=provenance)
    # read and send a shard at a time; keep only names and labels here
    stubs: list[Sample] = []
    tok_futures, count_futures = [], []
    for chunk in _chunks(samples, shard):
        stubs += [Sample(s.name, b"", s.label) for s in chunk]
        f = client.submit(_tokenize, [s.payload for s in chunk], kind, mpb, pure=False)
        tok_futures.append(f)
        count_futures.append(client.submit(_count, f, labels_of(chunk)))
        del chunk
    if not stubs:
        raise ValueError("no messages to train on")
    counts = _tree_sum(client, count_futures)
    w = recipe.settings.wordlist
    chosen = wl.from_counts(counts, w.size, w.method, w.min_df)
    words = [word for _, word in chosen]
    scaling = recipe.settings.features.scaling
    perm = None
    if order is not None and [s.name for s in stubs] != list(order):
        at = {s.name: i for i, s in enumerate(stubs)}
        if len(at) != len(stubs) or set(order) != at.keys():
            raise ValueError("order must name each sample once")
        perm = np.array([at[n] for n in order], dtype=np.int64)
        stubs = [stubs[i] for i in perm]
    # the feature matrix is made and kept on the cluster; the members' workers fetch it
    X = client.submit(_stack, [client.submit(_block, f, words, scaling) for f in tok_futures],
                      perm)
    wide = _tree_sum(client, [client.submit(_wide_count, f) for f in tok_futures], _wide_add)
    del tok_futures  # the token lists are no longer needed on the workers
    # everything counted on the cluster: the token lists and the matrix never come here
    apart = Apart(wordlist=chosen, features=OnCluster((len(stubs), len(words))),
                  wide_counts=wide)
    return train_model(stubs, recipe, apart=apart, member_map=_member_map(client, X),
                       progress=progress, provenance=provenance)


def _chunks(samples: Iterable[Sample], n: int) -> Iterator[list[Sample]]:
    chunk: list[Sample] = []
    for s in samples:
        chunk.append(s)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
