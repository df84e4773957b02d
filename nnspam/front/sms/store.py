"""Deliver an SMS into the SMS maildir and file it with the email daemon's code.

:class:`SmsStore` is the one place SMS arrive, whether from the webhook or
the poller:

1. ``MessageSid`` is the idempotency key. The ``sms`` table (in the same
   SQLite file as the :class:`~nnspam.services.delivery.state.State` the Sorter keeps) has one
   row per sid; a second delivery of a sid stores nothing.
2. The row is written *before* the file, with the file's unique name chosen
   up front. The message is then delivered by the maildir protocol
   (:func:`nnspam.mail.maildir.deliver`: ``tmp/``, fsync, rename into ``new/``)
   and filed by :meth:`nnspam.services.delivery.sorter.Sorter.handle_new`: spam is moved into
   ``.Junk/``, ham stays. A crash anywhere is finished by the next delivery
   of the same sid (Twilio retries webhooks; the poller lists again): a row
   whose file is missing is delivered again under the same name, a file
   the Sorter has not recorded is filed.
3. The ``sms`` table keeps date, sender, recipient and text, and the
   Sorter's ``messages`` table the spamicity and place (inbox / junk), so a
   dashboard can list Inbox and Spam with one join (:meth:`SmsStore.listing`).

One lock serialises deliveries: the Sorter and its model are not thread-safe
and the WSGI server may run several threads. Across processes (the webhook
server and the poller, the email daemon or ``nnspam serve`` on the same model)
the Sorter saves through the one model writer (:mod:`nnspam.model.writer`), which
learns each correction on top of the model directory's latest save.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nnspam.front.sms.message import Sms, sms_to_bytes
from nnspam.mail import maildir as md

__all__ = ["SmsStore", "Stored", "SmsRow", "open_store"]

log = logging.getLogger("nnspam.front.sms")

# A row whose file is missing (or not filed) is only taken for a crash's
# leftover after this many seconds: the webhook server and the poller may run
# at once, and the other process may be between writing the row and filing.
RESUME_AFTER = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sms (
    sid         TEXT PRIMARY KEY,
    maildir     TEXT NOT NULL,
    uniq        TEXT NOT NULL,
    from_number TEXT NOT NULL,
    to_number   TEXT NOT NULL,
    date_sent   REAL NOT NULL,
    body        TEXT NOT NULL,
    source      TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sms_date ON sms (maildir, date_sent);
"""


@dataclass
class Stored:
    """What :meth:`SmsStore.store` did with one SMS."""

    sid: str
    action: str  # ham | spam | duplicate | resumed | ... (Sorter.handle_new's answer)
    path: Path | None  # where the message file is now (None if it could not be found)
    spamicity: float | None


@dataclass
class SmsRow:
    """One SMS as a dashboard lists it."""

    sid: str
    uniq: str
    date_sent: float
    from_number: str
    to_number: str
    body: str
    spamicity: float | None
    place: str | None  # inbox | moving | junk (the Sorter's record), None if not filed yet


class SmsStore:
    """Stores and files SMS in one SMS maildir with one Sorter."""

    def __init__(self, maildir: str | os.PathLike, sorter: Any) -> None:
        self.maildir = md.ensure_maildir(Path(os.path.expanduser(str(maildir))).resolve())
        md.ensure_folder(self.maildir, sorter.settings.junk)
        self.sorter = sorter
        self.key = sorter.key(self.maildir)
        self.db: sqlite3.Connection = sorter.state.db
        self.db.executescript(_SCHEMA)
        self.lock = threading.Lock()
        self.sorter.baseline(self.maildir)

    def close(self) -> None:
        """Save learned model updates and close the state file."""
        with self.lock:
            self.sorter.checkpoint()
            self.sorter.state.close()

    def seen(self, sid: str) -> bool:
        """Whether an SMS with this MessageSid has been stored."""
        return self.db.execute("SELECT 1 FROM sms WHERE sid=?", (sid,)).fetchone() is not None

    def _find(self, uniq: str) -> Path | None:
        return (md.find_message(self.maildir, uniq)
                or md.find_message(self.sorter.junk_dir(self.maildir), uniq))

    def store(self, sms: Sms, source: str = "webhook") -> Stored:
        """Deliver and file one SMS, unless its sid was stored before."""
        with self.lock:
            row = self.db.execute("SELECT uniq, received_at FROM sms WHERE sid=?",
                                  (sms.sid,)).fetchone()
            if row is not None:
                return self._again(sms, row[0], row[1])
            date = sms.date or datetime.now(UTC)
            if date.tzinfo is None:
                date = date.replace(tzinfo=UTC)
            sms = Sms(sms.sid, sms.from_, sms.to, sms.body, date)
            uniq = md.unique_name()
            try:
                self.db.execute(
                    "INSERT INTO sms (sid, maildir, uniq, from_number, to_number, date_sent, "
                    "body, source, received_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    (sms.sid, self.key, uniq, sms.from_, sms.to, date.timestamp(), sms.body,
                     source, time.time()))
            except sqlite3.IntegrityError:
                # Another process (webhook vs poller) claimed this sid just now.
                log.info("duplicate sms sid=%s: stored by another process", sms.sid)
                return Stored(sms.sid, "duplicate", None, None)
            return self._deliver_and_file(sms, uniq)

    def _deliver_and_file(self, sms: Sms, uniq: str) -> Stored:
        path = md.deliver(self.maildir, sms_to_bytes(sms), how="rename", name=uniq)
        log.info("stored sms sid=%s from=%s file=%s", sms.sid, sms.from_, path)
        action = self.sorter.handle_new(self.maildir, path)
        return self._result(sms.sid, uniq, action)

    def _again(self, sms: Sms, uniq: str, received_at: float) -> Stored:
        """A sid seen before: nothing to store, but finish what a crash cut short."""
        rec = self.sorter.state.get(self.key, uniq)
        path = self._find(uniq)
        if time.time() - received_at < RESUME_AFTER and (rec is None or rec.place == "moving"):
            log.info("duplicate sms sid=%s: being stored right now", sms.sid)
            return self._result(sms.sid, uniq, "duplicate")
        if path is None and rec is None:
            # The row was written, the file never made it into new/.
            r = self.db.execute("SELECT from_number, to_number, date_sent, body FROM sms "
                                "WHERE sid=?", (sms.sid,)).fetchone()
            old = Sms(sms.sid, r[0], r[1], r[3], datetime.fromtimestamp(r[2], UTC))
            log.info("resumed sms sid=%s: delivering the message a crash left out", sms.sid)
            return self._deliver_and_file(old, uniq)
        if rec is None or rec.place == "moving":
            assert path is not None
            self.sorter.handle_new(self.maildir, path)
            log.info("resumed sms sid=%s: filed %s", sms.sid, path)
        else:
            log.info("duplicate sms sid=%s: already stored, nothing done", sms.sid)
        return self._result(sms.sid, uniq, "duplicate")

    def _result(self, sid: str, uniq: str, action: str) -> Stored:
        rec = self.sorter.state.get(self.key, uniq)
        return Stored(sid, action, self._find(uniq), rec.spamicity if rec else None)

    def listing(self, place: str = "inbox", limit: int = 50, offset: int = 0) -> list[SmsRow]:
        """SMS in the inbox (``inbox``) or in Junk (``junk``), newest first."""
        places = ("junk", "moving") if place == "junk" else ("inbox",)
        q = ("SELECT s.sid, s.uniq, s.date_sent, s.from_number, s.to_number, s.body, "
             "m.spamicity, m.place FROM sms s JOIN messages m "
             "ON m.maildir = s.maildir AND m.uniq = s.uniq "
             f"WHERE s.maildir=? AND m.place IN ({','.join('?' * len(places))}) "
             "ORDER BY s.date_sent DESC, s.received_at DESC LIMIT ? OFFSET ?")
        rows = self.db.execute(q, (self.key, *places, int(limit), int(offset))).fetchall()
        return [SmsRow(*r) for r in rows]

    def count(self) -> int:
        """How many SMS are stored."""
        return int(self.db.execute("SELECT COUNT(*) FROM sms WHERE maildir=?",
                                   (self.key,)).fetchone()[0])


def open_store(cfg: dict[str, Any], model: str | None = None) -> SmsStore:
    """The SMS store for a loaded config: the model named by ``sms.model``
    (or ``model``), filed by the :class:`~nnspam.services.delivery.sorter.Sorter` the daemon uses,
    built from the config the same way (:meth:`~nnspam.services.delivery.sorter.Sorter.from_config`:
    threshold and ham bias from the config, ``daemon:``, ``adaptive:``, ``learn:``),
    into ``sms.maildir``, state in ``sms.state``.

    The shipped ``default-sms`` model is read-only (:func:`nnspam.model.core.is_shipped`):
    SMS are scored and filed, corrections are recorded but only learned with a model
    directory of your own (``nnspam train --sms ... -m DIR`` and ``sms.model: DIR``).

    Every setting is read and checked first (the model loaded, the
    correction rule made, the numbers converted); only then are the state
    file and the maildir created, so a bad setting leaves nothing behind.
    """
    from nnspam.model.writer import load_with_stamp
    from nnspam.services.delivery.sorter import Sorter
    from nnspam.services.delivery.state import State

    s = cfg["sms"]
    name = str(model or s["model"])
    m, stamp = load_with_stamp(name)  # the stamp: see nnspam.model.writer (one model writer)
    if m.kind != "sms":
        log.warning("model %s is an %s model, not an SMS model", name, m.kind)
    state_path = os.path.expanduser(str(s["state"]))
    maildir = str(s["maildir"])
    # Nothing was created above this line; from_config opens (creates) the state file
    # only after it has read and converted every setting.
    return SmsStore(maildir, Sorter.from_config(cfg, m, lambda: State(state_path),
                                                model_name=name, stamp=stamp,
                                                source="dashboard"))
