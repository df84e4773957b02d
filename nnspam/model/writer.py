"""The one writer of a model directory.

Every front that saves a learned model goes through this module: the daemon's
checkpoints (also the one before a SIGHUP reload and at shutdown), ``nnspam
learn``, the server's TELL, the SMS store and dashboard (all three through
:class:`nnspam.services.delivery.sorter.Sorter` or the server's
:class:`nnspam.services.models.registry.ModelSlot`),
and the whole-model saves of ``nnspam train`` and ``nnspam stream --save``
(:func:`replace_model`). Two of them running at once on one directory then
never lose each other's lessons; before, the daemon's checkpoint saved the
model it had loaded at start plus its own corrections, over whatever ``nnspam
serve`` had learned into the same directory meanwhile.

How:

* **One lock**: an exclusive ``flock`` on ``<model dir>.lock``, the file beside
  the directory (:meth:`nnspam.model.core.Model.save` replaces the directory by a
  rename, so a lock file inside it would be replaced with it). It is the lock
  ``nnspam serve`` has always taken for TELL, so a server of an older release
  and a writer of this one still exclude each other. Within one process a
  per-path re-entrant thread lock is taken first (:func:`model_lock`): threads
  queue there, and a holder may enter again, where a second ``flock`` on a new
  descriptor of the same file would wait for itself forever. For the same
  reason a lock held through a descriptor this process inherited (``flock
  MODEL.lock nnspam learn``, as ``filters/nnspam-learn`` runs it) is used as
  it is, not waited for.
* **A stamp** (:func:`model_stamp`): the identity of the directory's
  ``weights.npz`` (device, inode, mtime, size), one ``stat``. A save writes a
  new directory, so every save changes the inode, even within one mtime tick.
* **Learn on top of the latest save** (:class:`ModelWriter`): a writer keeps
  the model it holds in memory and the stamp of the save that model came from.
  Under the lock, before it learns or saves, it compares that stamp with the
  directory's; when another writer saved meanwhile it loads that model and
  replays onto it the lessons it learned since its own last save (the daemon
  saves every ``daemon.checkpoint_every`` corrections and keeps them until
  then). Then it learns, saves if asked, and releases. Cost: a ``stat`` per
  correction; a load only after another writer saved.

Not replayed: the counts a process gathers from messages it only scores (the
adaptive inputs' activity, the wide path's document counts) since its last
save are dropped when another writer saved meanwhile: they are statistics,
rebuilt by the next messages, and keeping every scored message for a replay
would grow without bound.

The read-only rule stays :func:`nnspam.model.core.is_shipped`: a writer never saves
a shipped model (:class:`ReadOnlyModelError`); the fronts refuse before
learning, this is the backstop.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nnspam.mail.atomic import ReentrantFlock

if TYPE_CHECKING:
    from nnspam.model.core import Model

__all__ = ["LockTimeout", "ModelWriter", "ReadOnlyModelError", "Stamp", "lock_path",
           "load_with_stamp", "model_lock", "model_stamp", "replace_model"]

log = logging.getLogger("nnspam.model.writer")

#: (device, inode, mtime in ns, size) of a model directory's ``weights.npz``.
Stamp = tuple[int, int, int, int]


class ReadOnlyModelError(PermissionError):
    """A save into a shipped model (:func:`nnspam.model.core.is_shipped`)."""


def _resolve(path: str | os.PathLike) -> Path:
    # nnspam.model.core (and NumPy) are imported on first use, not with this module: the
    # server imports it before it limits the BLAS threads (nnspam.services.blas).
    from nnspam.model.core import resolve_model_path

    return resolve_model_path(path)


def _stamp(directory: Path) -> Stamp | None:
    try:
        st = os.stat(directory / "weights.npz")
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def model_stamp(path: str | os.PathLike) -> Stamp | None:
    """Identity of a model directory's weights on disk (one ``stat``), None when
    there is no model: compared with the stamp a writer recorded at its load or
    save to tell whether another process saved the directory since."""
    return _stamp(_resolve(path))


def load_with_stamp(path: str | os.PathLike) -> tuple[Model, Stamp | None]:
    """:meth:`Model.load` and the stamp of what was loaded. The stamp is taken
    before the load: a save in between makes the stamp older than the model,
    which costs one needless reload later; taken after, it would make a model
    that lacks that save look current, and its next save would drop it."""
    from nnspam.model.core import Model

    stamp = model_stamp(path)
    return Model.load(path), stamp


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of a model directory: ``<dir>.lock`` beside it (absolute)."""
    return Path(os.path.abspath(_resolve(path)) + ".lock")


def _inherited_holder(fd: int) -> int | None:
    """Another descriptor of this process on the same file as ``fd`` whose open
    file holds the lock: one inherited from ``flock(1)`` run around this process
    (``filters/nnspam-learn`` runs ``flock MODEL.lock nnspam learn``). A new
    descriptor would wait for that lock forever; the inherited one has it. The
    descriptors of this module's own locks are not candidates: a thread holding
    one under another spelling of the path excludes the others as ever."""
    st = os.fstat(fd)
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    with _locks_guard:
        ours = {pl.fd for pl in _locks.values() if pl.own}
    for name in names:
        other = int(name)
        if other == fd or other in ours:
            continue
        try:
            ost = os.fstat(other)
        except OSError:
            continue
        if (ost.st_dev, ost.st_ino) != (st.st_dev, st.st_ino):
            continue
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue
        return other
    return None


_locks: dict[str, ReentrantFlock] = {}
_locks_guard = threading.Lock()


def _forget_locks() -> None:
    """A forked child holds none of its parent's locks: its copies of their
    descriptors are closed (which leaves the parent's ``flock`` as it is) and
    the table emptied, so the child neither releases nor borrows them."""
    global _locks_guard
    for pl in _locks.values():
        if pl.own and pl.fd is not None:
            try:
                os.close(pl.fd)
            except OSError:
                pass
    _locks.clear()
    _locks_guard = threading.Lock()


os.register_at_fork(after_in_child=_forget_locks)


class LockTimeout(TimeoutError):
    """The writer lock of a model was not had within the time given to :func:`model_lock`."""


def _flock_until(fd: int, deadline: float | None) -> None:
    """``flock(fd, LOCK_EX)``, giving up (:class:`LockTimeout`) at the monotonic
    ``deadline`` (None: wait as long as it takes). Polled: ``flock`` has no timeout,
    and a thread blocked in it cannot be woken. From 1 ms to 50 ms between tries."""
    if deadline is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    pause = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockTimeout("the model is being saved by another writer") from None
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)


@contextlib.contextmanager
def model_lock(path: str | os.PathLike, deadline: float | None = None) -> Iterator[None]:
    """Hold the one writer lock of the model directory ``path`` (see the module
    docstring): exclusive across processes (``flock`` on ``<dir>.lock``) and
    threads, re-entrant within one thread. The parent directory is created if
    missing, as :meth:`Model.save` would.

    ``deadline`` (a :func:`time.monotonic` time; None: none): give up then with
    :class:`LockTimeout`, having changed nothing. The server's TELL passes its
    request's deadline, so that a lesson whose client has given up waiting is not
    learned later behind its back (``nnspam serve``; issue 22)."""
    key = str(lock_path(path))
    with _locks_guard:
        pl = _locks.setdefault(key, ReentrantFlock())

    def take() -> tuple[int, bool]:
        Path(key).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # held: by another process, or by our own caller?
            held = _inherited_holder(fd)
            if held is not None:
                os.close(fd)
                return held, False
            try:
                _flock_until(fd, deadline)
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            os.close(fd)
            raise
        return fd, True

    with pl.held(take, None if deadline is None else deadline - time.monotonic(),
                 lambda: LockTimeout("the model is being saved by another thread")):
        yield


def replace_model(model: Model, path: str | os.PathLike) -> None:
    """Save a whole model to ``path`` under the writer lock, replacing whatever
    is there (``nnspam train``, ``nnspam stream --save``): nothing is learned on
    top of the directory's model, so nothing is re-read; the lock only keeps the
    save from landing between another writer's re-read and its save."""
    # The directory exactly as Model.save(path) names it (``nnspam train -m default``
    # writes ./default, never the shipped model): made absolute, no name is mapped.
    target = Path(os.path.abspath(os.fspath(path)))
    with model_lock(target):
        model.save(target, locked=True)  # held: any leftover of a killed save goes


@dataclass
class _Lesson:
    """One learned correction not yet saved: enough to learn it again into a
    model another writer saved meanwhile."""

    token_lists: list[list[str]]
    label: str  # "spam", "ham", or "forget" (an undone lesson: nnspam.model.correct.forget)
    rule: Any
    adaptive_inputs: bool
    source: str = ""


_NOW: Any = object()  # ModelWriter(stamp=...) default: the directory's stamp now


class ModelWriter:
    """A model held in memory and learned into by one process, saved to its
    directory without losing what other processes saved there.

    ``path`` is the model directory, ``model`` the model loaded from it and
    ``stamp`` the :func:`model_stamp` of the save it was loaded from (None: the
    directory had no model, e.g. a user model about to be created; default: the
    stamp now, right for a model just loaded - :func:`load_with_stamp` is
    exact). ``prepare`` is applied to every model loaded later (the daemon
    applies its config's ``adaptive:`` section, as it did at start).

    Not thread-safe about the model in memory: the caller serialises its own
    threads (the server's slot lock, the daemon's one worker, the SMS store's
    lock); the writer serialises the saves of everyone."""

    #: Told ``"reload"`` when :meth:`sync` loads another writer's save and ``"save"``
    #: after every save of any writer in this process; None: nobody. Set by the layer
    #: above that counts them (:mod:`nnspam.services.metrics`) while metrics are on.
    observer: Callable[[str], None] | None = None

    #: Learned here, by this writer (a fleet's store writer is ``remote``: learned by the
    #: fleet's learner).
    remote = False

    def __init__(self, path: str | os.PathLike, model: Model, *, stamp: Any = _NOW,
                 prepare: Callable[[Model], Any] | None = None) -> None:
        from nnspam.model.core import is_shipped

        self.path = _resolve(path)
        self.model = model
        self.stamp: Stamp | None = _stamp(self.path) if stamp is _NOW else stamp
        self.failed: Stamp | None = None  # a stamp whose files could not be loaded
        self.prepare = prepare
        self.pending: list[_Lesson] = []
        self.statuses: list[str] = []  # what the last learn() did with each message
        self.readonly = is_shipped(self.path)

    @classmethod
    def open(cls, path: str | os.PathLike,
             prepare: Callable[[Model], Any] | None = None) -> ModelWriter:
        """Load the model directory ``path`` (:func:`load_with_stamp`) into a writer."""
        model, stamp = load_with_stamp(path)
        if prepare is not None:
            prepare(model)
        return cls(path, model, stamp=stamp, prepare=prepare)

    # -- reading what others saved -------------------------------------------
    def changed(self) -> bool:
        """Whether the directory holds a save other than the one in memory (one stat)."""
        return _stamp(self.path) != self.stamp

    def close(self) -> None:
        """Nothing to release: every save is finished when it returns (a fleet's store
        writer, of the same interface, sends what it holds here)."""

    def sync(self) -> bool:
        """Load the directory's model if another writer saved it since our load
        or save, and replay onto it our lessons not yet saved; True when it did.

        Under :meth:`locked` (which calls it) nobody saves in between; without
        the lock (the server before scoring) it is still safe, a save being
        atomic. A directory that cannot be loaded (half-copied, broken) keeps
        the model in memory, and the same broken files are not retried every
        time; the next save replaces them."""
        from nnspam.model.core import Model

        now = _stamp(self.path)
        if now is None or now == self.stamp or now == self.failed:
            return False
        try:
            model = Model.load(self.path)
        except Exception as exc:  # noqa: BLE001 - keep the model we have
            self.failed = now
            log.error("model %s changed on disk but cannot be loaded, keeping the old one: %s",
                      self.path, exc)
            return False
        if self.prepare is not None:
            self.prepare(model)
        for lesson in self.pending:
            self._correct(model, lesson)
        self.model, self.stamp, self.failed = model, now, None
        log.info("model %s reloaded (changed on disk)%s", self.path,
                 f"; {sum(len(x.token_lists) for x in self.pending)} unsaved correction(s) "
                 "learned again on top" if self.pending else "")
        if ModelWriter.observer is not None:
            ModelWriter.observer("reload")
        return True

    refresh = sync  # the server's name: load what another worker saved, before scoring

    @contextlib.contextmanager
    def locked(self, deadline: float | None = None) -> Iterator[None]:
        """Hold the writer lock with the model in memory up to date (:meth:`sync`);
        ``deadline``: as :func:`model_lock`'s."""
        with model_lock(self.path, deadline):
            self.sync()
            yield

    # -- learning and saving ----------------------------------------------------
    @staticmethod
    def _correct(model: Model, lesson: _Lesson) -> Any:
        """Apply one lesson: forget, or learn with sa-learn's habits
        (:func:`nnspam.model.correct.learn`); returns forget's entries, or learn's
        (statuses, replacements)."""
        from nnspam.model.correct import forget, learn

        if lesson.label == "forget":
            return forget(model, lesson.token_lists, lesson.rule)
        return learn(model, lesson.token_lists, lesson.label, lesson.rule,
                     adaptive_inputs=lesson.adaptive_inputs, source=lesson.source)

    def learn(self, token_lists: Sequence[Sequence[str]], label: str, rule: Any = None, *,
              adaptive_inputs: bool = True, save: bool = True, source: str = "",
              deadline: float | None = None) -> list[dict]:
        """Teach the model that the tokenized messages are ``label``
        (:func:`nnspam.model.correct.correct` by ``rule``, journalled as coming by
        ``source``) on top of the directory's latest save, under the lock; with
        ``save`` save it before releasing, else keep the lesson to replay until
        :meth:`save`. Returns the adaptive input replacements made; what was done with
        each message (learned, already learned, replaced: :func:`nnspam.model.correct.learn`)
        is left in :attr:`statuses`. ``deadline``: give up waiting for the lock then
        (:class:`LockTimeout`), nothing learned."""
        self._writable()
        lesson = _Lesson([list(t) for t in token_lists], label, rule, adaptive_inputs, source)
        with self.locked(deadline):
            self.statuses, done = self._correct(self.model, lesson)
            if any(s != "already" for s in self.statuses):
                self.pending.append(lesson)
                if save:
                    self._save()
        return done

    def learn_payloads(self, payloads: Sequence[bytes | str], label: str, rule: Any = None,
                       *, adaptive_inputs: bool = True, save: bool = True,
                       source: str = "", deadline: float | None = None) -> list[dict]:
        """:meth:`learn` on raw messages (email bytes or SMS text)."""
        return self.learn([self.model.tokens(p) for p in payloads], label, rule,
                          adaptive_inputs=adaptive_inputs, save=save, source=source,
                          deadline=deadline)

    def forget(self, token_lists: Sequence[Sequence[str]], rule: Any = None, *,
               save: bool = True, deadline: float | None = None) -> list[Any]:
        """Undo the journalled corrections of the tokenized messages
        (:func:`nnspam.model.correct.forget`) on top of the directory's latest save,
        under the lock, as :meth:`learn`. Returns each message's journal entry, None
        where the journal has none (then nothing changed for it)."""
        self._writable()
        lesson = _Lesson([list(t) for t in token_lists], "forget", rule, False)
        with self.locked(deadline):
            found = self._correct(self.model, lesson)
            if any(e is not None for e in found):
                self.pending.append(lesson)
                if save:
                    self._save()
        return found

    def forget_payloads(self, payloads: Sequence[bytes | str], rule: Any = None, *,
                        save: bool = True, deadline: float | None = None) -> list[Any]:
        """:meth:`forget` on raw messages (email bytes or SMS text)."""
        return self.forget([self.model.tokens(p) for p in payloads], rule, save=save,
                           deadline=deadline)

    def save(self) -> bool:
        """Save the model under the lock, on top of the directory's latest save.

        When another writer saved meanwhile and we have no lesson of our own to
        add, the directory already holds everything worth keeping: it is
        loaded, not overwritten, and False returned."""
        self._writable()
        with model_lock(self.path):
            if self.sync() and not self.pending:
                return False
            self._save()
        return True

    def _save(self) -> None:
        """Model.save (atomic; under the lock, so it removes every leftover of a save
        that was killed midway) and the new stamp; call with the lock held."""
        self.model.save(self.path, locked=True)
        self.stamp, self.failed = _stamp(self.path), None
        self.pending.clear()
        if ModelWriter.observer is not None:
            ModelWriter.observer("save")

    def _writable(self) -> None:
        if self.readonly:
            raise ReadOnlyModelError(f"{self.path}: a shipped model is read-only; learn into "
                                     "a model directory of your own")
