"""The one classify-and-file routine, and learning from corrections.

The maildir daemon (and the SMS adapter, the scoring server's TELL and
``nnspam learn``) all go through :class:`Sorter`, so a message is scored,
filed, recorded and learned from the same way whatever noticed it:

* :meth:`Sorter.handle_new` - a message in the inbox's ``new/``: score it;
  spam is moved into the Junk folder (Maildir++ ``.Junk``) keeping its name,
  ham stays. The decision is recorded first (``moving``), then the file is
  moved, then the record says ``junk``: a crash at any point is finished on
  restart and never scores or moves a message twice.
* :meth:`Sorter.handle_junk` - a message that appears in Junk. Put there by
  the daemon: nothing to do. Otherwise the user (or a filter) put it there:
  learned as spam.
* :meth:`Sorter.handle_inbox_cur` - a message in the inbox's ``cur/``. If the
  daemon had moved it to Junk, the user moved it back: learned as ham.
* :meth:`Sorter.handle_junk_gone` / :meth:`Sorter.sweep_junk` - a message that
  left Junk (deleted or moved away): when it left is recorded, so that its
  bytes arriving in the inbox soon after are taken as the user's "Not junk"
  move and, later, as a new delivery (the rule: :meth:`Sorter._moved_back`).
* :meth:`Sorter.learn` - the one correction routine (:func:`nnspam.model.correct.correct`)
  plus the checkpoint policy, through the one model writer
  (:class:`nnspam.model.writer.ModelWriter`): each correction is learned under the
  model directory's lock on top of its latest save, and a checkpoint never
  overwrites what another process (``nnspam serve``, ``nnspam learn``) saved
  meanwhile.
* :meth:`Sorter.from_config` - the one way the daemon and the SMS store build a
  Sorter from their config, so that the two cannot drift apart.

Scores and verdicts come from :func:`nnspam.services.verdict.score_tokens`, as on every other
front.

Delivered messages are never modified: they are only read and renamed.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from nnspam.mail import maildir as md
from nnspam.services import metrics
from nnspam.services.delivery.state import Place, Record, State
from nnspam.services.verdict import HAM, SPAM, UNSURE, SenderLists, score_tokens
from nnspam.services.verdict import verdict as verdict_of
from nnspam.settings import SorterSettings, defaults, from_config

if TYPE_CHECKING:
    from nnspam.model.core import Model

__all__ = ["Sorter", "Read", "read_message", "message_id_of", "MOVE_WINDOW"]

log = logging.getLogger("nnspam.services.delivery.daemon")

# Seconds between a message leaving Junk and its bytes appearing in the inbox
# within which that is one "Not junk" move (see Sorter._moved_back). IMAP MOVE
# takes milliseconds, a client's COPY + EXPUNGE or a sync tool's run seconds;
# a message deleted from Junk and delivered again (an MTA retry, a re-fetch)
# is usually minutes or hours apart - and when it is not, the delivery is told
# apart by its file's date (Sorter._moved_back, rule 4).
MOVE_WINDOW = 120.0

_MSGID = re.compile(rb"^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def _state_locked(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Run a Sorter handler under its state file's lock (:meth:`State.locked`): two
    processes acting on one maildir (the daemon, and the dashboard's buttons, which move
    a file and run the handler the daemon runs for that move) read and write a record one
    at a time, so one move is recorded and learned once, not by both."""
    @functools.wraps(handler)
    def run(self: Sorter, *args: Any, **kw: Any) -> Any:
        with self.state.locked():
            return handler(self, *args, **kw)
    return run


def message_id_of(data: bytes) -> str:
    """The Message-ID header of raw message bytes ('' if none), for the log."""
    end = _HEADER_END.search(data, 0, 262144)
    head = data[: end.start()] if end else data[:262144]
    m = _MSGID.search(head)
    if not m:
        return ""
    return " ".join(m.group(1).decode("ascii", "replace").split())


@dataclass
class Read:
    """A message file's bytes (None when over the size cap), identity and times:
    ``mtime`` (a copy made by an IMAP server or mbsync keeps the message's date)
    and ``arrived``, the ctime (when the file was linked or renamed in)."""

    path: Path
    data: bytes | None
    size: int
    sha256: str
    message_id: str
    mtime: float = 0.0
    arrived: float = 0.0


def read_message(path: Path, max_bytes: int) -> Read:
    """Read a message file once: bytes, size, SHA-256 and Message-ID.

    Files over ``max_bytes`` are hashed in chunks but not kept in memory (they
    are not scored). Raises FileNotFoundError when the file has gone.
    """
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        size = st.st_size
        if size <= max_bytes:
            data = fh.read()
            return Read(path, data, len(data), hashlib.sha256(data).hexdigest(),
                        message_id_of(data), st.st_mtime, st.st_ctime)
        h = hashlib.sha256()
        first = fh.read(262144)
        h.update(first)
        while chunk := fh.read(1 << 20):
            h.update(chunk)
        return Read(path, None, size, h.hexdigest(), message_id_of(first), st.st_mtime,
                    st.st_ctime)


def _same_file_content(a: Path, b: Path) -> bool:
    """Whether two files hold the same bytes (compared by size, then SHA-256)."""
    try:
        if a.stat().st_size != b.stat().st_size:
            return False
        return read_message(a, 1 << 62).sha256 == read_message(b, 1 << 62).sha256
    except FileNotFoundError:
        return False


class Writer(Protocol):
    """The one writer of a Sorter's model, which it learns through and saves with: a
    model directory's :class:`nnspam.model.writer.ModelWriter`, or a fleet's
    :class:`nnspam.services.models.fleet.StoreWriter`. The latter is ``remote`` (its
    models are learned by the fleet's learner: the Sorter neither saves nor observes) and
    has something to ``close()`` (called by the daemon before a reload and at shutdown)."""

    remote: bool

    @property
    def model(self) -> Model: ...

    def learn_payloads(self, payloads: Sequence[bytes | str], label: str, rule: Any = None,
                       *, adaptive_inputs: bool = True, save: bool = ...,
                       source: str = ...) -> list[dict]: ...

    def forget_payloads(self, payloads: Sequence[bytes | str], rule: Any = None, *,
                        save: bool = ...) -> list[Any]: ...

    def save(self) -> bool: ...

    def sync(self) -> bool: ...

    def close(self) -> None: ...


class Sorter:
    """Scores and files messages of one or more inbox maildirs, and learns
    from corrections. Not thread-safe: one worker thread owns it."""

    clock = staticmethod(time.time)  # the time the "Not junk" rule compares with (tests)

    def __init__(
        self,
        model: Model,
        state: State,
        settings: SorterSettings | None = None,
        *,
        model_path: str | None = None,
        rule: Any = None,
        stamp: Any = None,
        prepare: Callable[[Any], Any] | None = None,
        source: str = "daemon",
        writer: Writer | None = None,
        lists: Any = None,
    ) -> None:
        """``settings``: what it files and learns by (:class:`nnspam.settings.SorterSettings`,
        read from the config by :meth:`from_config`; None: the built-in defaults). The rest
        is wiring: ``model_path`` the model directory it saves to (None: a read-only model,
        only scored); ``stamp`` the model_stamp taken when ``model`` was read
        (:func:`nnspam.model.writer.load_with_stamp`; None: now); ``prepare`` what a model
        re-read from disk needs (the config's ``adaptive:`` section); ``writer`` another
        writer of the same interface, used instead (a fleet's model store,
        :class:`nnspam.services.models.fleet.StoreWriter`: its ``remote`` models are learned
        by the fleet's learner, not here); ``rule`` how a correction is learned (config
        ``learn:``, :func:`nnspam.model.correct.rule_from_config`); ``source`` how the
        correction journal names this front's lessons; ``lists`` the user's allow/deny
        lists (:class:`nnspam.services.verdict.SenderLists`)."""
        from nnspam.model.correct import Rule
        from nnspam.model.writer import ModelWriter

        self.settings = settings if settings is not None else defaults(SorterSettings)
        point = self.settings.point
        self.state = state
        self.model_path = model_path
        kw = {} if stamp is None else {"stamp": stamp}
        self.writer: Writer | None = writer if writer is not None else (
            ModelWriter(model_path, model, prepare=prepare, **kw) if model_path else None)
        self.remote = writer is not None and writer.remote
        self._model = model
        # the margins of a correction measured at the operating point this sorter files by
        self.rule = (rule or Rule()).with_(threshold=point.threshold,
                                           ham_factor=point.ham_factor,
                                           spam_factor=point.spam_factor)
        self.source = source
        self.lists = lists
        self.pending_updates = 0
        self.dirty = False
        self.stats = {"scored": 0, "spam": 0, "ham": 0, "skipped": 0, "learned": 0}

    @property
    def model(self) -> Model:
        """The model in memory: the writer's, which it replaces by the directory's
        latest save when another process saved there (see :mod:`nnspam.model.writer`)."""
        return self.writer.model if self.writer is not None else self._model

    @classmethod
    def from_config(cls, cfg: dict[str, Any], model: Model, state: State | Callable[[], State],
                    *, model_name: str | os.PathLike | None, rule: Any = None,
                    stamp: Any = None, source: str = "daemon", writer: Writer | None = None
                    ) -> Sorter:
        """The Sorter for a loaded config: the one wiring of the maildir daemon and the
        SMS store, so that both file and learn alike.

        From the config: the verdict (``threshold``) and the ham bias (``ham_factor``,
        ``spam_factor``: settings of the config, as for ``nnspam filter``, ``nnspam
        serve`` and ``nnspam classify``, not the values stored in the model), ``daemon:``
        (Junk folder, size cap, learning from corrections, checkpoints), ``adaptive:``
        (applied to ``model`` here) and ``learn:`` (the correction rule; ``rule`` when the
        caller made it already). ``model_name`` is where ``model`` was loaded from:
        checkpoints are saved there, unless it is a shipped model
        (:func:`nnspam.model.core.is_shipped`) or None, which are only read. ``state`` may be
        a function that opens the state file: it is called only after every setting has
        been read and converted, so that a bad one creates nothing (the SMS store).
        ``stamp`` is the model directory's stamp when ``model`` was read
        (:func:`nnspam.model.writer.load_with_stamp`), so that a save by another process
        after that read is re-read, not overwritten, by the first correction. ``writer``:
        a writer of a fleet's model store (:class:`nnspam.services.models.fleet.StoreWriter`)
        instead of the model directory's."""
        from nnspam.model import adaptive as adaptive_mod
        from nnspam.model.core import is_shipped
        from nnspam.model.correct import rule_from_config

        ad = cfg["adaptive"]
        writable = model_name is not None and not is_shipped(model_name)
        settings = from_config(SorterSettings, cfg)
        rule = rule if rule is not None else rule_from_config(cfg)
        lists = SenderLists.from_config(cfg)
        adaptive_mod.configure(model, ad)
        return cls(model, state() if callable(state) else state, settings,
                   model_path=str(model_name) if writable else None, rule=rule, stamp=stamp,
                   prepare=lambda m: adaptive_mod.configure(m, ad), source=source,
                   writer=writer, lists=lists)

    # -- helpers -----------------------------------------------------------
    @staticmethod
    def key(maildir: Path) -> str:
        """The maildir's key in the state: its absolute, resolved path."""
        return str(Path(maildir).resolve())

    def junk_dir(self, maildir: Path) -> Path:
        return md.folder_path(maildir, self.settings.junk)

    def _observe(self, tokens: list[str], label: str | None = None) -> None:
        """Feed the adaptive input words, when ``nnspam.model.adaptive`` is installed.
        Not for a fleet's model (``remote``): the fleet's learner is its one writer, and
        the servers do not observe either, so every front scores alike."""
        from nnspam.model.correct import observe

        if self.remote:
            return
        try:
            replaced = observe(self.model, [tokens], None if label is None else [label],
                               adaptive_inputs=self.settings.adaptive)
        except Exception as exc:  # noqa: BLE001 - the adaptive inputs must never stop filing mail
            log.error("adaptive: observe failed: %s: %s", exc.__class__.__name__, exc)
            return
        for r in replaced or ():
            log.info("adaptive: replaced input %s", " ".join(f"{k}={v}" for k, v in r.items()))
        if replaced:
            # Saved with the next checkpoint (learned updates, reload, shutdown):
            # a replacement step is cheap to redo, a 4 MB save per step is not.
            self.dirty = True

    def _updated(self, n: int = 1) -> None:
        self.pending_updates += n
        if self.pending_updates >= self.settings.checkpoint_every:
            self.checkpoint()

    def checkpoint(self) -> bool:
        """Save the model atomically if it changed and can be written, through the
        writer: under the directory's lock, on top of what another process saved
        there since (its model is re-read and our unsaved corrections learned again
        on it). False when nothing was saved."""
        if self.remote:  # a fleet's store: sends what Redis refused before, nothing to save
            assert self.writer is not None  # remote: the writer given
            self.writer.save()
            self.pending_updates, self.dirty = 0, False
            return False
        if not (self.pending_updates or self.dirty) or self.writer is None:
            return False
        saved = self.writer.save()
        if saved:
            log.info("checkpoint: saved model %s after %d learned update(s)", self.model_path,
                     self.pending_updates)
        else:
            log.info("checkpoint: model %s was saved by another process with nothing of ours "
                     "left to add; re-read it", self.model_path)
        self.pending_updates = 0
        self.dirty = False
        return saved

    def learn(self, payloads: Sequence[bytes | str], label: str) -> bool:
        """Train the model on messages of one class (the correction path).

        Returns False when learning is off or the model cannot be saved (the
        shipped default models are read-only).
        """
        if not self.settings.learn_from_corrections:
            return False
        if self.writer is None:
            log.warning("not learned: the model is read-only (give a model directory with -m)")
            return False
        # correct() counts the labelled tokens for the adaptive inputs and the wide path
        # itself: observing them here too would count every correction twice. The writer
        # learns under the model directory's lock, on top of its latest save; the lesson
        # is kept (to learn again on a newer save) until the checkpoint saves it.
        replaced = self.writer.learn_payloads(payloads, label, self.rule,
                                              adaptive_inputs=self.settings.adaptive, save=False,
                                              source=self.source)
        for r in replaced or ():
            log.info("adaptive: replaced input %s", " ".join(f"{k}={v}" for k, v in r.items()))
        if replaced:
            self.dirty = True
        self.stats["learned"] += len(payloads)
        self._updated(len(payloads))
        return True

    def forget(self, payloads: Sequence[bytes | str]) -> int:
        """Undo earlier corrections of these messages (the correction journal,
        :func:`nnspam.model.correct.forget`); saved with the next checkpoint. Returns how
        many the journal held (0 as well for a read-only model)."""
        if self.writer is None:
            log.warning("not forgotten: the model is read-only (give a model directory with -m)")
            return 0
        found = self.writer.forget_payloads(payloads, self.rule, save=False)
        n = sum(e is not None for e in found)
        if n:
            self._updated(n)
        return n

    def learn_files(self, paths: Sequence[Path], label: str) -> int:
        """Learn messages from files (``nnspam learn``); returns how many were read."""
        payloads = []
        for p in paths:
            try:
                payloads.append(read_message(Path(p), self.settings.max_message_bytes).data or b"")
            except FileNotFoundError:
                log.warning("skipped %s: gone before it was read", p)
        if payloads:
            self.learn(payloads, label)
        return len(payloads)

    def _decision(self, path: Path, msg: Read | None, sp: float | None, action: str) -> None:
        mid = msg.message_id if msg else ""
        sps = f"{sp:.6f}" if sp is not None else "-"
        log.info("decision file=%s message-id=%s spamicity=%s action=%s", path, mid or "-", sps,
                 action)

    def _lookup(self, maildir: Path, path: Path) -> tuple[Path, str, str, Record | None]:
        """The maildir, its state key, the message's unique name and its record (if any)."""
        maildir = Path(maildir)
        key = self.key(maildir)
        uniq = md.base_name(path.name)
        return maildir, key, uniq, self.state.get(key, uniq)

    # -- a message in inbox new/ --------------------------------------------
    def judge(self, data: bytes) -> tuple[float, str]:
        """(spamicity, verdict) of one arriving message at this sorter's operating point
        (the unsure band and the allow/deny lists included), counted for the adaptive
        inputs and the metrics, and learned when ``learn_on_confident`` says so: what
        every front that files mail (the maildir daemon, the SMS store, ``nnspam imap``)
        does with a new message before it decides where the message goes. Raises what
        scoring raised (the caller logs it and leaves the message where it is)."""
        point = self.settings.point
        t0 = time.perf_counter()
        try:
            tokens = self.model.tokens(data)
            (sp, verdict), = score_tokens(self.model, [tokens], point.threshold,
                                          point.ham_factor, point.spam_factor, lists=self.lists)
        except Exception:
            metrics.scored("error")
            raise
        if point.unsure is not None:
            verdict = verdict_of(sp, point.threshold, point.unsure)
        metrics.scored(verdict, time.perf_counter() - t0)
        self.stats["scored"] += 1
        self._observe(tokens)
        if (self.settings.learn_on_confident
                and abs(sp - point.threshold) >= self.settings.confident_margin):
            if self.learn([data], verdict):
                metrics.learned("confident", verdict)
        return sp, verdict

    def _arrival(self, maildir: Path, path: Path, *, delivered: bool
                 ) -> str | tuple[str, str, Path, Read]:
        """The opening both inbox handlers share: a message already recorded is handled
        as known (:meth:`_known_in_inbox`); else it is read (``delivered``, through
        ``new/``: when it went before it was read, looked for under its unique name, as
        a mail client moves ``new/`` to ``cur/``) and, when it is a Junk message the user
        moved back (:meth:`_moved_back`), recorded and learned as ham. Returns what was
        done, or (state key, unique name, path, message) of a new arrival to decide."""
        maildir, key, uniq, rec = self._lookup(maildir, path)
        if rec is not None:
            return self._known_in_inbox(maildir, path, rec)
        msg = None
        for _ in range(2 if delivered else 1):
            try:
                msg = read_message(path, self.settings.max_message_bytes)
                break
            except FileNotFoundError:
                moved = md.find_message(maildir, uniq) if delivered else None
                if moved is None:
                    break
                path = moved
        if msg is None:
            log.info("skipped file=%s: removed before it was read", path)
            return "vanished"
        back = self._moved_back(maildir, key, msg, delivered=delivered)
        if back is not None:
            self.state.put(Record.moved_back(key, uniq, msg, back, time.time()))
            return self._correct_ham(maildir, key, uniq, path, msg)
        return key, uniq, path, msg

    @_state_locked
    def handle_new(self, maildir: Path, path: Path) -> str:
        """Classify and file one message of the inbox. Returns what was done:
        ``known`` (already decided), ``ham``, ``spam``, ``unsure`` (in the unsure band;
        filed into ``daemon.unsure_folder`` when set), ``skipped``,
        ``vanished``, ``resumed`` (a move interrupted by a crash finished) or
        ``corrected`` (a Junk message the user moved back: learned as ham)."""
        got = self._arrival(maildir, path, delivered=True)
        if isinstance(got, str):
            return got
        key, uniq, path, msg = got
        now = time.time()
        if msg.data is None:
            self.state.put(Record.decided(key, uniq, msg, None, "skipped", Place.INBOX, now))
            self.stats["skipped"] += 1
            metrics.scored("skipped")
            self._decision(path, msg, None,
                           f"skipped-size({msg.size}>{self.settings.max_message_bytes})")
            return "skipped"
        sp, verdict = self.judge(msg.data)
        if verdict == HAM or (verdict == UNSURE and not self.settings.unsure_folder):
            self.state.put(Record.decided(key, uniq, msg, sp, verdict, Place.INBOX, now))
            self.stats[verdict] = self.stats.get(verdict, 0) + 1
            self._decision(path, msg, sp, "kept" if verdict == HAM else "kept (unsure)")
            return verdict
        if verdict == UNSURE:
            self.state.put(Record.decided(key, uniq, msg, sp, UNSURE, Place.MOVING, now))
            dest = self._to_junk(maildir, key, uniq, path, unsure=True)
            self.stats["unsure"] = self.stats.get("unsure", 0) + 1
            self._decision(path, msg, sp, f"moved to {dest}" if dest else "kept (move failed)")
            return UNSURE
        self.state.put(Record.decided(key, uniq, msg, sp, SPAM, Place.MOVING, now))
        dest = self._to_junk(maildir, key, uniq, path)
        self.stats["spam"] += 1
        self._decision(path, msg, sp, f"moved to {dest}" if dest else "kept (move failed)")
        return "spam"

    def _to_junk(self, maildir: Path, key: str, uniq: str, path: Path,
                 unsure: bool = False) -> Path | None:
        """Move a message recorded as ``moving`` into Junk and record ``junk`` (with
        ``unsure``: into ``daemon.unsure_folder`` and record ``unsure``)."""
        place = Place.UNSURE if unsure else Place.JUNK
        folder = self.settings.unsure_folder if unsure else self.settings.junk
        if folder is None:  # a move into the unsure folder resumed after the config dropped it
            raise RuntimeError(f"{path}: daemon.unsure_folder is not set: the move into it is "
                               "left unfinished")
        junk = md.ensure_folder(maildir, folder)
        sub = path.parent.name if path.parent.name in ("new", "cur") else "new"
        for _ in range(3):
            try:
                dest = md.move(path, junk / sub)
            except FileNotFoundError:
                found = md.find_message(maildir, uniq)
                if found is None:
                    if md.find_message(junk, uniq) is not None:
                        self.state.set_place(key, uniq, place)
                        return junk
                    log.info("skipped file=%s: removed before it was moved", path)
                    self.state.set_place(key, uniq, Place.INBOX)
                    return None
                path = found
                sub = path.parent.name
                continue
            except md.MaildirError:
                # The name is taken in Junk: a cross-filesystem move that was cut
                # short after the link and before the unlink. Same bytes: finish it.
                there = junk / sub / path.name
                if _same_file_content(path, there):
                    os.unlink(path)
                    log.info("resumed file=%s: already in %s, removed the inbox copy", path,
                             there)
                    self.state.set_place(key, uniq, place)
                    return there
                log.error("error file=%s: another message named %s is in %s; left in the "
                          "inbox", path, path.name, junk / sub)
                self.state.set_place(key, uniq, Place.INBOX)
                return None
            self.state.set_place(key, uniq, place)
            return dest
        self.state.set_place(key, uniq, Place.INBOX)
        return None

    def _known_in_inbox(self, maildir: Path, path: Path, rec: Record) -> str:
        key, uniq = rec.maildir, rec.uniq
        if rec.place == Place.INBOX:
            return "known"
        if rec.place == Place.MOVING:
            dest = self._to_junk(maildir, key, uniq, path, unsure=rec.verdict == UNSURE)
            log.info("resumed file=%s: finished the interrupted move to %s", path, dest)
            return "resumed"
        # place == junk (or gone: it left Junk) or unsure (filed into daemon.unsure_folder),
        # yet the message is in the inbox under its own unique name: the user moved it
        # back, however long it took (a new delivery always gets a new name): ham.
        try:
            msg = read_message(path, self.settings.max_message_bytes)
        except FileNotFoundError:
            return "vanished"
        return self._correct_ham(maildir, key, uniq, path, msg,
                                 came_from=(self.settings.unsure_folder or "the unsure folder")
                                 if rec.place == Place.UNSURE else "Junk")

    def _moved_back(self, maildir: Path, key: str, msg: Read,
                    delivered: bool = False) -> Record | None:
        """The Junk record of which this inbox arrival (under a name the daemon
        does not know) is the user's "Not junk" move, or None: a new message.
        ``delivered``: the arrival came in through the inbox's ``new/`` (where
        MDAs deliver), not ``cur/``.

        The one place this is decided. The arrival is that message moved back
        only if

        1. it has the bytes (SHA-256) of a message recorded in Junk,
        2. that message is no longer in Junk,
        3. it left Junk at nearly the same time as the arrival appeared: within
           :data:`MOVE_WINDOW`, either way round, and
        4. arriving in ``new/``, it kept the message's date: its file's mtime is
           no later than when the daemon decided the Junk message.

        Why: a mail client's "Not junk" is an IMAP MOVE (or COPY + EXPUNGE).
        The server links or writes the message into the inbox under a new
        unique name and removes it from Junk in the same command or the next
        few. A read message lands in ``cur/`` with flags, an unread one in
        ``new/`` (Dovecot saves a copy without flags there), so where it lands
        tells nothing. A message the user deleted from Junk is gone: the same
        bytes delivered later (an MTA retry, a re-fetch) are a new message and
        are scored like any other. So when a message leaves Junk is recorded
        (``gone``: :meth:`handle_junk_gone` from the watcher's event,
        :meth:`sweep_junk` at a rescan), and once the window has passed the
        record no longer matches. The arrival's time is its file's ctime (when
        it was linked or renamed in), not when the worker got to it, so a busy
        worker does not stretch the window.

        A Junk message missing from Junk whose going is not recorded yet is
        taken to be leaving now: IMAP MOVE copies first and expunges after, so
        the arrival's event comes before the deletion's. An arrival older than
        the window (found by the rescan at start, after the daemon was down)
        matches such a message only if it kept its date - mtime no later than
        when the daemon decided it - as IMAP copies (Dovecot) and mbsync do and
        a new delivery, written after that, cannot.

        Rule 4, why: the time alone cannot tell a move from the same spam
        deleted from Junk and delivered again within the window (a spammer's
        second send, an MTA retry): both are "the Junk file went, the bytes
        came". What can is the arrival's file. A move keeps the message's file
        or its date: Dovecot's IMAP MOVE/COPY hard-links the Junk file into
        the inbox (the same inode, so the same mtime) or, across filesystems,
        writes a copy dated with the message's INTERNALDATE (its mtime);
        ``mv`` and a mail client's rename keep the inode. An MDA delivers a new
        file into ``new/``, written after the daemon decided the first copy, so
        its mtime is later than that decision. The door matters too: MDAs
        deliver into ``new/`` only; ``cur/`` is written by mail clients and sync
        tools, which may write a fresh file (mbsync without CopyArrivalDate), so
        an arrival in ``cur/`` is judged by the window alone. The door is the
        handler's (:meth:`handle_new` says ``delivered``), not where the file is
        when read: an IMAP server moves a new message on to ``cur/`` as soon as
        a client looks, and a re-delivery must not pass for a move by that.
        What this gives up: a sync tool that writes an unread moved message
        into ``new/`` with a fresh date (mbsync without CopyArrivalDate) is
        scored like a new message (filed by the model, no lesson learned)
        rather than taken as a correction; the reverse error would teach the
        model a spam as ham.
        """
        junk = self.junk_dir(maildir)
        now = self.clock()
        for rec in self.state.by_sha(key, msg.sha256):
            if rec.place == Place.GONE:
                left, unseen = rec.updated_at, False
            elif rec.place == Place.JUNK and md.find_message(junk, rec.uniq) is None:
                left, unseen = now, True
            else:  # still in Junk (a second delivery), or not a Junk message
                continue
            kept_date = msg.mtime <= rec.decided_at
            if delivered and not kept_date:  # rule 4: a file written since: a delivery
                continue
            if abs(msg.arrived - left) <= MOVE_WINDOW or (unseen and kept_date):
                self.state.set_place(key, rec.uniq, Place.INBOX, learned="ham")
                return rec
        return None

    # -- a message that left Junk ---------------------------------------------
    @_state_locked
    def handle_junk_gone(self, maildir: Path, path: Path, at: float | None = None) -> str:
        """A file that left the Junk folder at ``at`` (deleted, expunged or moved
        away; default: now). Returns ``gone`` when it was a message recorded in
        Junk and no longer there (when it left is recorded for
        :meth:`_moved_back`), else ``ignored`` (new/ -> cur/ inside Junk, or a
        message that is already back in the inbox)."""
        maildir, key, uniq, rec = self._lookup(maildir, path)
        if rec is None or rec.place != Place.JUNK:
            return "ignored"
        if md.find_message(self.junk_dir(maildir), uniq) is not None:
            return "ignored"
        self.state.set_place(key, uniq, Place.GONE, at=self.clock() if at is None else at)
        log.info("left Junk file=%s message-id=%s: deleted or moved away", path,
                 rec.message_id or "-")
        return "gone"

    @_state_locked
    def sweep_junk(self, maildir: Path) -> int:
        """Record as ``gone`` (now) every message recorded in Junk whose file is
        not there any more: goings the watcher did not report (the daemon was
        down, events were lost). Run by the rescan after the inbox passes, so a
        move made while the daemon was down is matched first. Returns how many."""
        maildir = Path(maildir)
        key = self.key(maildir)
        junk = self.junk_dir(maildir)
        there = {md.base_name(p.name) for p in md.list_messages(junk)}
        n = 0
        for rec in list(self.state.records(key, Place.JUNK)):
            if rec.uniq not in there and md.find_message(junk, rec.uniq) is None:
                self.state.set_place(key, rec.uniq, Place.GONE, at=self.clock())
                n += 1
        return n

    def _correct_ham(self, maildir: Path, key: str, uniq: str, path: Path, msg: Read,
                     came_from: str = "Junk") -> str:
        learned = msg.data is not None and self.learn([msg.data], "ham")
        if learned:
            metrics.learned("daemon", "ham")
        self.state.set_place(key, uniq, Place.INBOX, learned="ham")
        self.state.add_correction(key, uniq, "ham", str(path))
        log.info("correction file=%s message-id=%s: moved out of %s by the user, %s as ham",
                 path, msg.message_id or "-", came_from, "learned" if learned else "recorded")
        return "corrected"

    # -- a message in inbox cur/ ---------------------------------------------
    @_state_locked
    def handle_inbox_cur(self, maildir: Path, path: Path) -> str:
        """A message in the inbox's ``cur/``: a Junk message moved back is
        learned as ham; anything else is left alone (``cur/`` is read mail)."""
        got = self._arrival(maildir, path, delivered=False)
        return got if isinstance(got, str) else "ignored"

    # -- a message in Junk ---------------------------------------------------
    @_state_locked
    def handle_junk(self, maildir: Path, path: Path) -> str:
        """A message in the Junk folder. Returns ``known`` (the daemon put it
        there, or it was already learned), ``corrected`` (learned as spam) or
        ``vanished``."""
        maildir = Path(maildir)
        key = self.key(maildir)
        uniq = md.base_name(path.name)
        rec = self.state.get(key, uniq)
        if rec is not None and rec.place in (Place.JUNK, Place.MOVING, Place.GONE):
            if rec.place != Place.JUNK:  # a move finished, or back in Junk under its own name
                self.state.set_place(key, uniq, Place.JUNK)
            return "known"
        try:
            msg = read_message(path, self.settings.max_message_bytes)
        except FileNotFoundError:
            return "vanished"
        now = time.time()
        if rec is None:
            # Renamed on the way (a mail store that gives copies new names)?
            for old in self.state.by_sha(key, msg.sha256, Place.INBOX):
                if md.find_message(maildir, old.uniq) is None:
                    self.state.set_place(key, old.uniq, Place.JUNK, learned="spam")
                    break
            self.state.put(Record.put_in_junk(key, uniq, msg, now))
        learned = msg.data is not None and self.learn([msg.data], "spam")
        if learned:
            metrics.learned("daemon", "spam")
        self.state.set_place(key, uniq, Place.JUNK, learned="spam")
        self.state.add_correction(key, uniq, "spam", str(path))
        log.info("correction file=%s message-id=%s: put in Junk by the user, %s as spam", path,
                 msg.message_id or "-", "learned" if learned else "recorded")
        return "corrected"

    # -- start-up ----------------------------------------------------------
    def baseline(self, maildir: Path) -> int:
        """First run on a maildir: record what is already in Junk as
        ``existing`` without learning it (only later arrivals are corrections).
        Returns the number of messages recorded."""
        maildir = Path(maildir)
        key = self.key(maildir)
        if self.state.known_maildir(key):
            return 0
        n = 0
        now = time.time()
        for p in md.list_messages(self.junk_dir(maildir)):
            uniq = md.base_name(p.name)
            if self.state.get(key, uniq) is None:
                self.state.put(Record.existing(key, uniq, now))
                n += 1
        self.state.add_maildir(key)
        return n
