"""The daemon's memory: one SQLite row per message it has seen.

A row is keyed by the inbox maildir and the message's unique name (the file
name before ``:2,``), and also holds the Message-ID, size and SHA-256 of the
(immutable) file. It records the verdict and where the message is meant to
be (``place``):

``inbox``   classified ham (or skipped, or unsure without an unsure folder), left
            in the inbox;
``moving``  classified spam (or unsure), the move to Junk (or to
            ``daemon.unsure_folder``) is about to happen (written *before* the
            rename, so a crash between the two is finished on restart without
            scoring again);
``unsure``  in the unsure folder, put there by the daemon: moved on by the user
            into Junk it is spam, into the inbox ham;
``junk``    in the Junk folder: put there by the daemon (``origin`` =
            ``daemon``), by the user (``user``, a correction), or already there
            when the daemon first ran (``existing``);
``gone``    was in Junk and left it (deleted, or moved away): ``updated_at`` is
            when the daemon saw it go. Its bytes appearing in the inbox soon
            after are the user's "Not junk" move; later, a new delivery
            (:meth:`nnspam.services.delivery.sorter.Sorter._moved_back`).

With this a restart never scores or moves a message twice, and user
corrections are recognised: a message in Junk the daemon did not put there
is spam; a message the daemon put in Junk that is back in the inbox is ham.

File names are the user's, byte for byte, and need not be UTF-8 (a name like
``b'\\xff\\xfe.host'``, which Python reads as text with surrogate escapes). SQLite's
TEXT holds UTF-8 only, so such a name (or maildir path) is stored as a BLOB of its bytes
(:func:`db_name`) and read back as the same Python string (:class:`Record` converts):
every other name stays TEXT, as before, and a BLOB never equals a TEXT, so the two
cannot collide.

WAL journal with ``synchronous=NORMAL``: a commit survives a killed process
(SIGKILL); after a power cut the last few commits may be lost, which at
worst makes the daemon score a message again (same verdict) or take a Junk
message it moved for a correction.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from nnspam.mail.atomic import ReentrantFlock

__all__ = ["State", "Record", "Place", "Origin", "PLACES", "db_name", "name_of"]


class Place(StrEnum):
    """Where a message is meant to be (the module docstring says what each means). A
    ``str``: stored in SQLite and compared as the word itself."""

    INBOX = "inbox"
    MOVING = "moving"
    JUNK = "junk"
    GONE = "gone"
    UNSURE = "unsure"  # in daemon.unsure_folder


class Origin(StrEnum):
    """Who decided a message's place: the daemon's verdict, the user's move, or it was
    already in Junk when the daemon first ran."""

    DAEMON = "daemon"
    USER = "user"
    EXISTING = "existing"


PLACES = tuple(Place)


class Identity(Protocol):
    """What a record keeps of a message file (:class:`nnspam.services.delivery.sorter.Read`)."""

    message_id: str
    size: int
    sha256: str

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    maildir    TEXT NOT NULL,
    uniq       TEXT NOT NULL,
    message_id TEXT,
    size       INTEGER,
    sha256     TEXT,
    spamicity  REAL,
    verdict    TEXT NOT NULL,
    place      TEXT NOT NULL,
    origin     TEXT NOT NULL,
    learned    TEXT,
    decided_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (maildir, uniq)
);
CREATE INDEX IF NOT EXISTS messages_sha ON messages (maildir, sha256);
CREATE TABLE IF NOT EXISTS maildirs (
    maildir    TEXT PRIMARY KEY,
    first_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS corrections (
    id      INTEGER PRIMARY KEY,
    at      REAL NOT NULL,
    maildir TEXT NOT NULL,
    uniq    TEXT NOT NULL,
    label   TEXT NOT NULL,
    path    TEXT NOT NULL
);
"""

_COLS = ("maildir, uniq, message_id, size, sha256, spamicity, verdict, place, origin, learned, "
         "decided_at, updated_at")


def db_name(name: str) -> str | bytes:
    """A file name or path as the state stores it: the text itself when it is valid
    UTF-8, else its bytes on disk (the surrogate escapes of :func:`os.fsdecode` undone),
    which SQLite keeps as a BLOB: the only way to store it without losing a byte."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name)
    return name


def name_of(value: str | bytes) -> str:
    """A stored name as Python's file functions take it (the reverse of :func:`db_name`)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


@dataclass
class Record:
    """One message's row (``maildir`` and ``uniq`` read back as :func:`name_of` says, so
    that a row read by any query, ``Record(*row)``, names the file as the disk does)."""

    maildir: str
    uniq: str
    message_id: str | None
    size: int | None
    sha256: str | None
    spamicity: float | None
    verdict: str
    place: Place
    origin: str
    learned: str | None
    decided_at: float
    updated_at: float

    def __post_init__(self) -> None:
        self.maildir = name_of(self.maildir)
        self.uniq = name_of(self.uniq)
        self.place = Place(self.place)

    # The named ways a record comes to be (the Sorter's decisions); ``now`` is when.
    @classmethod
    def decided(cls, key: str, uniq: str, msg: Identity, spamicity: float | None,
                verdict: str, place: Place, now: float) -> Record:
        """The daemon scored (or skipped) a new message: kept in the inbox, or about to
        be moved (``Place.MOVING``, written before the rename)."""
        return cls(key, uniq, msg.message_id, msg.size, msg.sha256, spamicity, verdict,
                   place, Origin.DAEMON, None, now, now)

    @classmethod
    def moved_back(cls, key: str, uniq: str, msg: Identity, was: Record, now: float) -> Record:
        """A message the user moved out of Junk (``was``, its Junk record) into the
        inbox, under a new name."""
        return cls(key, uniq, msg.message_id, msg.size, msg.sha256, was.spamicity,
                   was.verdict, Place.INBOX, Origin.USER, None, now, now)

    @classmethod
    def put_in_junk(cls, key: str, uniq: str, msg: Identity, now: float) -> Record:
        """A message the user put in Junk: spam by their word."""
        return cls(key, uniq, msg.message_id, msg.size, msg.sha256, None, "spam",
                   Place.JUNK, Origin.USER, None, now, now)

    @classmethod
    def existing(cls, key: str, uniq: str, now: float) -> Record:
        """A message already in Junk on the daemon's first run (recorded, not learned)."""
        return cls(key, uniq, None, None, None, None, "spam", Place.JUNK, Origin.EXISTING,
                   None, now, now)


class State:
    """The SQLite state file; one connection, used from one thread."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(os.path.expanduser(str(path)))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None,
                                  check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self._lock = ReentrantFlock()  # see locked()

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the state file's lock: an exclusive ``flock`` on ``<state file>.lock``,
        re-entrant within this State (a thread lock and a depth; the ``flock`` is taken
        on the way in and dropped on the way out of the outermost level).

        Why: another process may act on the same maildirs and state beside the daemon
        (the dashboard's "Spam" and "Not spam" move a file and then run the Sorter's
        handler, as the daemon does when it sees the move). Reading the record and
        writing it back are apart by the time a correction takes to learn, so both
        processes read "not corrected yet" and both learned the one move. The Sorter's
        handlers run under this lock (:mod:`nnspam.services.delivery.sorter`), and the dashboard
        holds it from before its rename until its handler has recorded the move: the
        daemon's handler, woken by the rename, then finds the move recorded."""
        def take() -> tuple[int, bool]:
            fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            return fd, True

        with self._lock.held(take):
            yield

    # -- maildirs ---------------------------------------------------------
    def known_maildir(self, maildir: str) -> bool:
        """Whether the daemon has run on this maildir before."""
        return self.db.execute("SELECT 1 FROM maildirs WHERE maildir=?",
                               (db_name(maildir),)).fetchone() is not None

    def add_maildir(self, maildir: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO maildirs VALUES (?, ?)",
                        (db_name(maildir), time.time()))

    # -- messages ---------------------------------------------------------
    def get(self, maildir: str, uniq: str) -> Record | None:
        row = self.db.execute(f"SELECT {_COLS} FROM messages WHERE maildir=? AND uniq=?",
                              (db_name(maildir), db_name(uniq))).fetchone()
        return Record(*row) if row else None

    def by_sha(self, maildir: str, sha256: str, place: str | None = None) -> list[Record]:
        """Rows with this content (a message the user moved may get a new name)."""
        q = f"SELECT {_COLS} FROM messages WHERE maildir=? AND sha256=?"
        args: tuple = (db_name(maildir), sha256)
        if place:
            q += " AND place=?"
            args += (place,)
        return [Record(*r) for r in self.db.execute(q, args)]

    def put(self, rec: Record) -> None:
        """Insert or replace a row (one committed transaction)."""
        rec.updated_at = time.time()
        self.db.execute(
            f"INSERT OR REPLACE INTO messages ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (db_name(rec.maildir), db_name(rec.uniq), rec.message_id, rec.size, rec.sha256,
             rec.spamicity,
             rec.verdict, rec.place, rec.origin, rec.learned, rec.decided_at, rec.updated_at),
        )

    def set_place(self, maildir: str, uniq: str, place: str, learned: str | None = None,
                  at: float | None = None) -> None:
        """Record where a message is now; ``at`` is when it got there (default: now)."""
        if place not in PLACES:
            raise ValueError(f"unknown place {place!r}")
        place = Place(place)
        when = time.time() if at is None else at
        where = (db_name(maildir), db_name(uniq))
        if learned is None:
            self.db.execute("UPDATE messages SET place=?, updated_at=? WHERE maildir=? AND uniq=?",
                            (place, when, *where))
        else:
            self.db.execute(
                "UPDATE messages SET place=?, learned=?, updated_at=? WHERE maildir=? AND uniq=?",
                (place, learned, when, *where))

    def add_correction(self, maildir: str, uniq: str, label: str, path: str) -> None:
        self.db.execute("INSERT INTO corrections (at, maildir, uniq, label, path) "
                        "VALUES (?,?,?,?,?)", (time.time(), db_name(maildir), db_name(uniq),
                                               label, db_name(path)))

    def corrections(self, maildir: str | None = None) -> list[tuple[str, str, str]]:
        """(uniq, label, path) of every recorded correction, oldest first."""
        q = "SELECT uniq, label, path FROM corrections"
        args: tuple = ()
        if maildir:
            q += " WHERE maildir=?"
            args = (db_name(maildir),)
        return [(name_of(u), label, name_of(p))
                for u, label, p in self.db.execute(q + " ORDER BY id", args)]

    def records(self, maildir: str | None = None, place: str | None = None) -> Iterator[Record]:
        q = f"SELECT {_COLS} FROM messages WHERE 1=1"
        args: tuple = ()
        if maildir:
            q += " AND maildir=?"
            args += (db_name(maildir),)
        if place:
            q += " AND place=?"
            args += (place,)
        for row in self.db.execute(q, args).fetchall():
            yield Record(*row)

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
