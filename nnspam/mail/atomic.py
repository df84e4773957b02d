"""Crash-safe file writes: temp file in the same directory, fsync, rename; and the
in-process side of a lock file (:class:`ReentrantFlock`).

A reader (the filter, the daemon, another server worker) sees either the old
file or the new one, never half of one, even if the writer dies midway.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "fsync_dir", "removed_on_error",
           "ReentrantFlock"]


class ReentrantFlock:
    """The in-process side of one lock file, re-entrant within the process: a thread
    lock, how deep the holder is in it, and the descriptor that holds the ``flock``
    (``own``: opened here, closed on the way out of the outermost level, which releases
    the ``flock``; else borrowed from a caller, left alone).

    The one copy of this bookkeeping for the model writer's lock
    (:func:`nnspam.model.writer.model_lock`) and the daemon's state lock
    (:meth:`nnspam.services.delivery.state.State.locked`); each says how its file is
    opened and locked (``take``)."""

    def __init__(self) -> None:
        self.rlock = threading.RLock()
        self.depth = 0
        self.fd: int | None = None
        self.own = True

    @contextlib.contextmanager
    def held(self, take: Callable[[], tuple[int, bool]], timeout: float | None = None,
             on_timeout: Callable[[], BaseException] = TimeoutError) -> Iterator[None]:
        """Hold the lock for the block. ``take()`` opens and locks the file on the way
        into the outermost level and returns (descriptor, whether it is ours to close).
        ``timeout``: seconds to wait for another thread of this process (None: no
        limit); then ``on_timeout()`` is raised, with nothing taken."""
        if timeout is None:
            self.rlock.acquire()
        elif not self.rlock.acquire(timeout=max(timeout, 0.0)):
            raise on_timeout()
        try:
            if self.depth == 0:
                self.fd, self.own = take()
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
                if self.depth == 0 and self.fd is not None:
                    if self.own:
                        os.close(self.fd)
                    self.fd = None
        finally:
            self.rlock.release()


@contextlib.contextmanager
def removed_on_error(tmp: str | os.PathLike) -> Iterator[None]:
    """Remove the temporary file ``tmp`` when the block fails (any exception, a
    KeyboardInterrupt too), then let the exception go on: a failed write leaves no
    half-written file behind, only the old one (or none)."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename in it survives a crash."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    with removed_on_error(tmp):
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), mode)
