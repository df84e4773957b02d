"""The maildir daemon's decisions, as the dashboard's email pages read and act on them.

The daemon (``nnspam daemon``) records every message it files in its state file
(``daemon.state``, :mod:`nnspam.services.delivery.state`); the messages themselves stay in the
maildirs it watches (``daemon.maildirs``). :class:`EmailSide` reads both for the
dashboard, in another process beside a running daemon:

* the decisions, newest first and paged (:meth:`EmailSide.listing`), each with
  From and Subject read from the message file where it is now (found by its unique
  name, :func:`nnspam.mail.maildir.find_message`: inbox, Junk, the unsure folder; in
  none of them it is ``gone``);
* one message with its text and the words that moved its spamicity most
  (:func:`nnspam.model.explain.explain`, at the config's ham bias) and whether the
  model's correction journal holds a lesson of it (:meth:`EmailSide.view`);
* the verdicts and corrections of each of the last days (:meth:`EmailSide.days`).

It acts as the user would: "Spam" and "Not spam" move the file and tell the Sorter
(:func:`nnspam.front.dashboard.moves.move_message`), "Forget" undoes the message's
last lesson (:meth:`nnspam.services.delivery.sorter.Sorter.forget`) and saves the model. The
Sorter is built from the config as the daemon builds its own
(:meth:`~nnspam.services.delivery.sorter.Sorter.from_config`, ``source="dashboard"``), on the
same model and the same state file: the SQLite file takes both processes' writes (WAL),
and the model writer (:mod:`nnspam.model.writer`) learns each correction on top of the
directory's latest save under its lock, so the daemon's checkpoints and the dashboard's
never drop each other's lessons.

Flask-free. One lock serialises the Sorter and the state connection: the WSGI server
runs several threads.

A file name need not be UTF-8 (the daemon files ``b'\\xff\\xfe.host'`` like any other), but
a page, a link and a form are UTF-8 text: such a name travels through them as
:func:`web_name` writes it and is read back by :func:`disk_name`, and is shown as
:func:`shown_name` writes it.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nnspam.front.dashboard.moves import Moved, locate, move_message
from nnspam.services.delivery.state import Record

__all__ = ["EmailSide", "EmailRow", "EmailView", "Day", "EmailUnavailable",
           "open_email_side", "BODY_MAX", "WORDS", "web_name", "disk_name", "shown_name"]

log = logging.getLogger("nnspam.front.dashboard")

#: Characters of a message's text shown in the message view.
BODY_MAX = 100_000
#: Words of the explanation shown in the message view.
WORDS = 15
_HEAD_BYTES = 65536  # From and Subject of a listed message are read from this much
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_COLS = ", ".join(f.name for f in fields(Record))
_SHOWN_HEADERS = ("from", "to", "cc", "date", "subject", "message-id")


_BYTES = "bytes:"  # web_name's mark: a unique name holds no ':', so it names no real one


def web_name(uniq: str) -> str:
    """A message's unique name as the pages carry it (links, forms, ``data-uniq``): the
    name itself when it is UTF-8 text, else ``bytes:`` and its bytes in hex."""
    try:
        uniq.encode("utf-8")
    except UnicodeEncodeError:
        return _BYTES + os.fsencode(uniq).hex()
    return uniq


def disk_name(web: str) -> str:
    """The unique name a page's :func:`web_name` stands for (as Python names the file)."""
    if web.startswith(_BYTES):
        try:
            return os.fsdecode(bytes.fromhex(web[len(_BYTES):]))
        except ValueError:
            return web  # names no message
    return web


def shown_name(name: str) -> str:
    """A file name as a page shows it: bytes that are not UTF-8 as ``\\xNN``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


@dataclass
class EmailRow:
    """One decision of the daemon as the list shows it."""

    box: int  #: which of the maildirs (index into :attr:`EmailSide.maildirs`)
    record: Record  #: the state's row
    where: str  #: where the file is now: inbox, junk, unsure or gone
    path: Path | None  #: the file (None when gone)
    from_: str
    subject: str

    @property
    def uniq(self) -> str:
        """The unique name as links and forms carry it (:func:`web_name`)."""
        return web_name(self.record.uniq)

    @property
    def file_name(self) -> str:
        """The file's name as the page shows it (:func:`shown_name`; '' when gone)."""
        return shown_name(self.path.name) if self.path is not None else ""


@dataclass
class EmailView:
    """One message for the message view: the row, its headers and text, and what
    moved its spamicity."""

    row: EmailRow
    headers: list[tuple[str, str]]
    body: str
    truncated: bool  #: the text was cut to :data:`BODY_MAX` characters
    attachments: list[str]
    too_big: bool  #: over ``daemon.max_message_bytes``: neither read nor explained
    explanation: Any = None  #: :class:`nnspam.model.explain.Explanation`, or None
    words: list[Any] = field(default_factory=list)  #: its top words, biggest effect first
    scale: float = 1.0  #: the biggest absolute log-odds change among them (for the bars)
    verdict_now: str | None = None  #: the verdict of the model as it is now
    journal: Any = None  #: the journal's latest entry of this message, or None


@dataclass
class Day:
    """One UTC day of the plot: the daemon's verdicts and the corrections recorded."""

    day: str  #: YYYY-MM-DD
    spam: int = 0
    ham: int = 0
    unsure: int = 0
    corrections: int = 0


@dataclass(frozen=True)
class EmailUnavailable:
    """Why there are no email pages (shown on the email page instead)."""

    reason: str


def _one_line(value: str | None, limit: int = 200) -> str:
    text = " ".join((value or "").split())
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        data = fh.read(_HEAD_BYTES)
    m = _HEADER_END.search(data)
    return data[:m.start()] + b"\n\n" if m else data


def _summary(path: Path | None) -> tuple[str, str]:
    """(From, Subject) of a message file, decoded; ("", "") when it cannot be read."""
    from nnspam.mail.message import parse_message

    if path is None:
        return "", ""
    try:
        parsed = parse_message(_read_head(path))
    except OSError:
        return "", ""
    return _one_line(parsed.header("from")), _one_line(parsed.header("subject"))


class EmailSide:
    """The daemon's maildirs and state, and a Sorter like the daemon's on them."""

    clock = staticmethod(time.time)  # "today" of the plot (tests fix it)

    def __init__(self, maildirs: list[Path], sorter: Any, model_name: str) -> None:
        self.maildirs = [Path(m) for m in maildirs]
        self.sorter = sorter
        self.model_name = model_name
        self.keys = [sorter.key(m) for m in self.maildirs]
        self.state = sorter.state
        self.db = sorter.state.db
        self.lock = threading.Lock()

    # -- what the pages say about the model -------------------------------------
    @property
    def readonly(self) -> bool:
        """Whether the model cannot learn (the shipped one: :func:`is_shipped`)."""
        return self.sorter.writer is None

    @property
    def learning(self) -> bool:
        """Whether moves are learned (writable model, ``daemon.learn_from_corrections``)."""
        return not self.readonly and self.sorter.settings.learn_from_corrections

    def close(self) -> None:
        """Save what was learned and close the state file."""
        with self.lock:
            self.sorter.checkpoint()
            self.state.close()

    # -- the list -------------------------------------------------------------------
    def _filter(self) -> tuple[str, tuple[Any, ...]]:
        marks = ",".join("?" * len(self.keys))
        # "existing": what was in Junk before the daemon first ran; not its decisions.
        return f"maildir IN ({marks}) AND origin != 'existing'", tuple(self.keys)

    def count(self) -> int:
        """How many decisions there are to list."""
        where, args = self._filter()
        with self.lock:
            return int(self.db.execute(f"SELECT COUNT(*) FROM messages WHERE {where}",
                                       args).fetchone()[0])

    def _row(self, rec: Record) -> EmailRow:
        box = self.keys.index(rec.maildir)
        found = locate(self.sorter, self.maildirs[box], rec.uniq)
        where, path = found if found is not None else ("gone", None)
        return EmailRow(box, rec, where, path, *_summary(path))

    def listing(self, limit: int = 25, offset: int = 0) -> list[EmailRow]:
        """Decisions newest first (by when the daemon decided), ``limit`` from
        ``offset``."""
        where, args = self._filter()
        with self.lock:
            rows = self.db.execute(
                f"SELECT {_COLS} FROM messages WHERE {where} "
                "ORDER BY decided_at DESC, rowid DESC LIMIT ? OFFSET ?",
                (*args, int(limit), int(offset))).fetchall()
            return [self._row(Record(*r)) for r in rows]

    def find(self, box: int, uniq: str) -> EmailRow | None:
        """The decision of message ``uniq`` (:func:`web_name`) of maildir number ``box``,
        or None."""
        uniq = disk_name(uniq)
        if not 0 <= box < len(self.maildirs) or not uniq:
            return None
        with self.lock:
            rec = self.state.get(self.keys[box], uniq)
            return None if rec is None else self._row(rec)

    # -- one message ----------------------------------------------------------------
    def view(self, box: int, uniq: str, words: int = WORDS) -> EmailView | None:
        """The message view of ``uniq``: headers, text (HTML parts as text), the
        ``words`` words with the biggest effect on its spamicity by the model as it is
        now, and the journal's entry of it. None when there is no such decision."""
        from nnspam.mail.message import parse_message
        from nnspam.model.explain import explain
        from nnspam.model.journal import message_key
        from nnspam.services.delivery.sorter import read_message
        from nnspam.services.verdict import verdict

        row = self.find(box, uniq)
        if row is None:
            return None
        view = EmailView(row, [], "", False, [], False)
        if row.path is None:
            return view
        with self.lock:
            try:
                msg = read_message(row.path, self.sorter.settings.max_message_bytes)
            except FileNotFoundError:
                row.where, row.path = "gone", None
                return view
            if msg.data is None:
                view.too_big = True
                view.headers = self._headers(parse_message(_read_head(row.path)))
                return view
            parsed = parse_message(msg.data)
            view.headers = self._headers(parsed)
            body = "\n\n".join(t.strip("\n") for t in parsed.texts if t.strip())
            view.truncated = len(body) > BODY_MAX
            view.body = body[:BODY_MAX]
            view.attachments = [_one_line(f"{a.filename or '(no name)'} ({a.content_type}, "
                                          f"{a.size} bytes)") for a in parsed.attachments]
            s = self.sorter
            if s.writer is not None:
                s.writer.sync()  # the daemon may have saved since: explain by the latest
            model = s.model
            tokens = model.tokens(msg.data)
            point = s.settings.point
            expl = explain(model, tokens, point.ham_factor, point.spam_factor)
            journal = model.journal
            i = journal.find(message_key(tokens))
            view.journal = journal.entries[i] if i is not None else None
        view.explanation = expl
        view.words = list(expl.top(words))
        view.scale = max((abs(w.logit) for w in view.words), default=0.0) or 1.0
        point = self.sorter.settings.point
        view.verdict_now = verdict(expl.spamicity, point.threshold, point.unsure)
        return view

    @staticmethod
    def _headers(parsed: Any) -> list[tuple[str, str]]:
        out = []
        for name in _SHOWN_HEADERS:
            for value in parsed.header_all(name):
                out.append((name.title() if name != "message-id" else "Message-ID",
                            _one_line(value, 1000)))
        return out

    # -- the user's actions -----------------------------------------------------------
    def move(self, box: int, uniq: str, to: str) -> Moved:
        """"Spam" (``to="junk"``) or "Not spam" (``"inbox"``) for message ``uniq`` of
        maildir ``box`` (:func:`~nnspam.front.dashboard.moves.move_message`); a message
        the state does not know is ``missing``."""
        if not 0 <= box < len(self.maildirs):
            return Moved("missing", False, None)
        uniq = disk_name(uniq)
        with self.lock:
            if self.state.get(self.keys[box], uniq) is None:
                return Moved("missing", False, None)
            return move_message(self.sorter, self.maildirs[box], uniq, to)

    def forget(self, box: int, uniq: str) -> tuple[str, int]:
        """"Forget": undo the message's last lesson (the correction journal) and save
        the model. Returns (what happened, how many lessons were undone): ``read-only``,
        ``missing`` (no such decision or no file), ``too-big``, ``forgotten`` or
        ``not-in-journal``."""
        from nnspam.services.delivery.sorter import read_message

        row = self.find(box, uniq)
        if row is None or row.path is None:
            return "missing", 0
        if self.readonly:
            return "read-only", 0
        with self.lock:
            try:
                msg = read_message(row.path, self.sorter.settings.max_message_bytes)
            except FileNotFoundError:
                return "missing", 0
            if msg.data is None:
                return "too-big", 0
            n = self.sorter.forget([msg.data])
            self.sorter.checkpoint()
        log.info("dashboard: forget %s: %d lesson(s) undone", uniq, n)
        return ("forgotten" if n else "not-in-journal"), n

    # -- the plot -----------------------------------------------------------------------
    def days(self, n: int = 14, now: float | None = None) -> list[Day]:
        """The last ``n`` UTC days up to today (``now``), oldest first: the daemon's
        verdicts (spam, ham, unsure; by when it decided) and the corrections recorded
        (a user's move, the dashboard's buttons)."""
        today = datetime.fromtimestamp(self.clock() if now is None else now, UTC).date()
        first = today - timedelta(days=max(int(n), 1) - 1)
        out = {(first + timedelta(days=i)).isoformat(): Day((first + timedelta(days=i))
                                                             .isoformat())
               for i in range((today - first).days + 1)}
        since = datetime(first.year, first.month, first.day, tzinfo=UTC).timestamp()
        marks = ",".join("?" * len(self.keys))
        with self.lock:
            verdicts = self.db.execute(
                "SELECT date(decided_at, 'unixepoch'), verdict, COUNT(*) FROM messages "
                f"WHERE maildir IN ({marks}) AND origin = 'daemon' AND decided_at >= ? "
                "GROUP BY 1, 2", (*self.keys, since)).fetchall()
            corrections = self.db.execute(
                "SELECT date(at, 'unixepoch'), COUNT(*) FROM corrections "
                f"WHERE maildir IN ({marks}) AND at >= ? GROUP BY 1",
                (*self.keys, since)).fetchall()
        for day, verdict, count in verdicts:
            if day in out and verdict in ("spam", "ham", "unsure"):
                setattr(out[day], verdict, int(count))
        for day, count in corrections:
            if day in out:
                out[day].corrections = int(count)
        return list(out.values())


def open_email_side(cfg: dict[str, Any], model: str | None = None
                    ) -> EmailSide | EmailUnavailable:
    """The email side for a loaded config: the daemon's maildirs (``daemon.maildirs``,
    checked as the daemon checks them), its state file (``daemon.state``, which must
    exist: the daemon made it) and a Sorter built as the daemon's on the email model
    (``model``, else the config's ``model``).

    Without a maildir or a state file there is nothing to show: the answer is an
    :class:`EmailUnavailable` saying why, and nothing is created. A model that cannot
    be loaded raises (:class:`nnspam.model.core.ModelError`), as a bad setting does
    for every server: the caller refuses to start.
    """
    from nnspam.model.writer import load_with_stamp
    from nnspam.services.delivery.daemon import DaemonError, settings_from_config
    from nnspam.services.delivery.sorter import Sorter
    from nnspam.services.delivery.state import State

    if not cfg["daemon"].get("maildirs"):
        return EmailUnavailable(
            "No maildir is configured. The email pages list the decisions of nnspam daemon "
            "on the maildirs of daemon.maildirs: set daemon.maildirs (and run nnspam "
            "daemon) to see them here.")
    try:
        settings = settings_from_config(cfg, None, model)
    except DaemonError as exc:
        return EmailUnavailable(f"The daemon's maildirs cannot be read: {exc}.")
    state_path = Path(os.path.expanduser(settings.state))
    if not state_path.is_file():
        return EmailUnavailable(
            f"No daemon state at {state_path} (daemon.state): nnspam daemon has not run on "
            "these maildirs yet. Start it; the decisions it records are listed here.")
    m, stamp = load_with_stamp(settings.model)
    try:
        sorter = Sorter.from_config(cfg, m, lambda: State(state_path),
                                    model_name=settings.model, rule=settings.rule, stamp=stamp,
                                    source="dashboard")
    except sqlite3.Error as exc:
        return EmailUnavailable(f"The daemon's state {state_path} cannot be read: {exc}.")
    log.info("dashboard: email side on %s (state %s, model %s)",
             ", ".join(map(str, settings.maildirs)), state_path, settings.model)
    return EmailSide(settings.maildirs, sorter, settings.model)
