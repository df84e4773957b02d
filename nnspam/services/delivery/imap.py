"""``nnspam imap``: the maildir daemon's filing and learning for mail that lives on an
IMAP server.

For each configured account (config ``imap.accounts``) a thread keeps a connection open,
waits for new mail in the inbox with IDLE (a poll every ``imap.poll_interval`` seconds
where the server lacks IDLE), fetches each new message without marking it read
(``BODY.PEEK[]``), scores it through the daemon's own verdict
(:meth:`nnspam.services.delivery.sorter.Sorter.judge`: the threshold, the unsure band, the
allow/deny lists) and files spam into the account's Junk folder (SPECIAL-USE ``\\Junk``,
or ``junk:``) and unsure mail into ``unsure:`` when set, with MOVE (COPY, ``\\Deleted`` and
UID EXPUNGE of that message alone where MOVE is missing; never a plain EXPUNGE, which
would remove what the user marked deleted). Optionally it sets the ``$Junk`` keyword that
mail clients read.

It learns from the user's moves, through the daemon's correction path
(:meth:`~nnspam.services.delivery.sorter.Sorter.learn`, the one correction routine and the model's
writer lock):

* a message that appears in Junk and was not filed there by nnspam: spam;
* a message nnspam filed into Junk (or Unsure) that reappears in the inbox, within
  ``imap.move_window`` seconds of leaving that folder: ham (an identical copy delivered
  while the first is still in Junk, or long after it was deleted, is new mail, scored
  as such);
* ``$Junk`` set by a client on a message of the inbox, ``$NotJunk`` on one in Junk: the
  same corrections. Deleting from Junk, or moving to Trash, teaches nothing.

State (``imap.state``, SQLite, one file for every account): per account and folder the
UIDVALIDITY and the last UID handled, and every message nnspam filed or learned (by the
SHA-256 of its bytes), so that a restart neither files a message twice nor misses one:
a message is recorded as being moved before the MOVE, so a move cut short by a crash is
finished, not repeated, and nnspam's own message arriving in Junk is known as its own. A
UIDVALIDITY that changed (the folder was recreated) makes the folder's present mail the
new starting point; nothing is learned or filed again for it.

Faults: a dropped connection, a restarted server or a refused login is one log line and
a reconnect after a back-off (1 s, doubling up to ``imap.max_backoff``); a message that
cannot be fetched or scored is logged and left where it is; a missing folder is logged
and waited for. nnspam never deletes mail: it only moves it.

The IMAP client is IMAPClient (``imapclient``): a well-kept library over the standard
library's ``imaplib`` that speaks IDLE, MOVE, UIDPLUS, SPECIAL-USE, STARTTLS and
XOAUTH2/OAUTHBEARER, and parses responses into Python types.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import sqlite3
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnspam.config import IMAP_ACCOUNT_DEFAULTS
from nnspam.services.delivery.state import Place

log = logging.getLogger("nnspam.imap")

__all__ = ["Account", "ImapError", "ImapState", "ImapFiler", "accounts_from_config",
           "imap_settings", "ImapSettings", "run"]

JUNK = b"$Junk"
NOT_JUNK = b"$NotJunk"
TLS_MODES = ("implicit", "starttls", "none")
OAUTH_MECHANISMS = ("xoauth2", "oauthbearer")
FETCH_BATCH = 50  # messages fetched per FETCH: a burst is read in blocks, not one by one
SECRET_TIMEOUT = 30.0  # seconds a password_command or token command may take


class ImapError(Exception):
    """A setting or account that cannot work: one line naming it (``nnspam imap`` exits 2)."""


@dataclass(frozen=True)
class Account:
    """One IMAP account of ``imap.accounts``."""

    name: str
    host: str
    user: str
    port: int
    # the rest default to nnspam.config.IMAP_ACCOUNT_DEFAULTS (the one place)
    tls: str  # implicit (IMAPS), starttls, none (only to a loopback address)
    verify: bool  # verify the server's certificate and name
    ca_file: str | None
    password_file: str | None
    password_command: str | None
    oauth2_token_command: str | None
    oauth2_mechanism: str
    inbox: str
    junk: str | None  # None: the folder with SPECIAL-USE \Junk, else "Junk"
    unsure: str | None  # None: unsure mail stays in the inbox
    keywords: bool  # set $Junk on filed spam; learn from $Junk/$NotJunk

    def __repr__(self) -> str:  # never a secret's source in a log line or traceback
        return f"Account({self.name!r}, {self.user}@{self.host}:{self.port})"


@dataclass(frozen=True)
class ImapSettings:
    """``imap:`` of the config, checked."""

    accounts: tuple[Account, ...]
    state: str
    poll_interval: float
    timeout: float
    move_window: float
    max_backoff: float


_ACCOUNT_KEYS = {f for f in Account.__dataclass_fields__}


def _account(i: int, d: Any) -> Account:
    where = f"imap.accounts[{i}]"
    if not isinstance(d, dict):
        raise ImapError(f"{where} must be a mapping (name:, host:, user:, ...)")
    unknown = set(d) - _ACCOUNT_KEYS
    if unknown:
        raise ImapError(f"{where}: unknown setting {sorted(unknown)[0]!r} "
                        f"(known: {', '.join(sorted(_ACCOUNT_KEYS))})")
    for key in ("name", "host", "user"):
        if not isinstance(d.get(key), str) or not d[key].strip():
            raise ImapError(f"{where}.{key} is required (a non-empty string)")
    d = {**IMAP_ACCOUNT_DEFAULTS, **d}
    tls = d["tls"]
    if tls not in TLS_MODES:
        raise ImapError(f"{where}.tls must be one of {', '.join(TLS_MODES)}, not {tls!r}")
    port = d["port"] if d["port"] is not None else 993 if tls == "implicit" else 143
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ImapError(f"{where}.port must be a port number, not {port!r}")
    if tls == "none" and d["host"] not in ("127.0.0.1", "::1", "localhost"):
        raise ImapError(f"{where}.tls: none sends the password in clear text; it is allowed "
                        "only to a loopback address (127.0.0.1, ::1, localhost)")
    secrets = [k for k in ("password_file", "password_command", "oauth2_token_command")
               if d.get(k) is not None]
    if len(secrets) != 1:
        raise ImapError(f"{where}: give exactly one of password_file, password_command and "
                        "oauth2_token_command")
    for key in ("password_file", "password_command", "oauth2_token_command", "ca_file",
                "junk", "unsure"):
        if d.get(key) is not None and (not isinstance(d[key], str) or not d[key].strip()):
            raise ImapError(f"{where}.{key} must be a non-empty string or null")
    mech = d["oauth2_mechanism"]
    if mech not in OAUTH_MECHANISMS:
        raise ImapError(f"{where}.oauth2_mechanism must be xoauth2 or oauthbearer, "
                        f"not {mech!r}")
    for key in ("verify", "keywords"):
        if not isinstance(d[key], bool):
            raise ImapError(f"{where}.{key} must be true or false")
    inbox = d["inbox"]
    if not isinstance(inbox, str) or not inbox:
        raise ImapError(f"{where}.inbox must be a folder name")
    return Account(
        name=d["name"].strip(), host=d["host"].strip(), user=d["user"], port=port, tls=tls,
        verify=d["verify"], ca_file=_path(d["ca_file"]),
        password_file=_path(d["password_file"]),
        password_command=d["password_command"],
        oauth2_token_command=d["oauth2_token_command"], oauth2_mechanism=mech,
        inbox=inbox, junk=d["junk"], unsure=d["unsure"], keywords=d["keywords"])


def _path(v: str | None) -> str | None:
    return os.path.expanduser(v) if v else None


def accounts_from_config(cfg: dict[str, Any]) -> tuple[Account, ...]:
    """The accounts of ``imap.accounts`` (ImapError naming the first bad one)."""
    raw = (cfg.get("imap") or {}).get("accounts") or []
    if not isinstance(raw, list):
        raise ImapError("imap.accounts must be a list of accounts")
    accounts = tuple(_account(i, d) for i, d in enumerate(raw))
    names = [a.name for a in accounts]
    for n in names:
        if names.count(n) > 1:
            raise ImapError(f"imap.accounts: the name {n!r} is given twice")
    return accounts


def imap_settings(cfg: dict[str, Any], only: Sequence[str] = ()) -> ImapSettings:
    """The checked ``imap:`` settings; ``only``: these account names (ImapError if one is
    not configured)."""
    sec = cfg.get("imap") or {}
    accounts = accounts_from_config(cfg)
    if only:
        missing = [n for n in only if n not in {a.name for a in accounts}]
        if missing:
            raise ImapError(f"no account named {missing[0]!r} in imap.accounts")
        accounts = tuple(a for a in accounts if a.name in only)
    if not accounts:
        raise ImapError("no IMAP account: add one to imap.accounts in the config")
    return ImapSettings(accounts, os.path.expanduser(str(sec["state"])),
                        float(sec["poll_interval"]), float(sec["timeout"]),
                        float(sec["move_window"]), float(sec["max_backoff"]))


# -- secrets and connections ---------------------------------------------------------------
def _command_output(command: str, what: str) -> str:
    """The first line of a command's output (split as a shell would, run without one)."""
    try:
        out = subprocess.run(shlex.split(command), capture_output=True, text=True,
                             timeout=SECRET_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        raise ImapError(f"{what} could not be run: {exc.__class__.__name__}") from None
    if out.returncode != 0:  # its output may hold the secret: never logged
        raise ImapError(f"{what} failed (exit status {out.returncode})")
    line = out.stdout.splitlines()[0] if out.stdout.strip() else ""
    if not line:
        raise ImapError(f"{what} printed nothing")
    return line


def secret_of(account: Account) -> str:
    """The account's password or OAuth2 token, read now (a token command is run for every
    login: tokens expire)."""
    if account.password_file:
        try:
            text = Path(account.password_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ImapError(f"account {account.name}: password_file {account.password_file}: "
                            f"{exc.strerror}") from None
        line = text.splitlines()[0] if text.strip() else ""
        if not line:
            raise ImapError(f"account {account.name}: password_file {account.password_file} "
                            "is empty")
        return line
    if account.password_command:
        return _command_output(account.password_command,
                               f"account {account.name}: password_command")
    assert account.oauth2_token_command
    return _command_output(account.oauth2_token_command,
                           f"account {account.name}: oauth2_token_command")


def tls_context(account: Account) -> ssl.SSLContext:
    """Verified by default (the system's CAs, or ``ca_file``); ``verify: false`` is for a
    server on this machine with a self-signed certificate."""
    ctx = ssl.create_default_context(cafile=account.ca_file)
    if not account.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(account: Account, timeout: float) -> Any:
    """A logged-in IMAPClient for the account (ImapError for a refused login or a bad
    secret; OSError and the library's errors for network trouble)."""
    from imapclient import IMAPClient

    ctx = tls_context(account) if account.tls != "none" else None
    client = IMAPClient(account.host, port=account.port, ssl=account.tls == "implicit",
                        ssl_context=ctx, timeout=timeout)
    try:
        if account.tls == "starttls":
            client.starttls(ctx)
        token = secret_of(account)
        from imapclient.exceptions import LoginError

        try:
            if account.oauth2_token_command:
                if account.oauth2_mechanism == "oauthbearer":
                    client.oauthbearer_login(account.user, token)
                else:
                    client.oauth2_login(account.user, token)
            else:
                client.login(account.user, token)
        except LoginError:
            raise ImapError(f"account {account.name}: the server refused the login of "
                            f"{account.user}") from None
    except BaseException:
        try:
            client.shutdown()
        except Exception:  # noqa: BLE001 - closing a half-open connection: nothing to do
            pass
        raise
    return client


# -- state ---------------------------------------------------------------------------------
_SCHEMA = """
CREATE TABLE IF NOT EXISTS folders (
    account TEXT NOT NULL, folder TEXT NOT NULL, uidvalidity INTEGER NOT NULL,
    last_uid INTEGER NOT NULL, PRIMARY KEY (account, folder));
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, account TEXT NOT NULL, sha256 TEXT NOT NULL,
    message_id TEXT, spamicity REAL, verdict TEXT, place TEXT NOT NULL, origin TEXT NOT NULL,
    folder TEXT, folder_uid INTEGER, uidvalidity INTEGER, learned TEXT,
    at REAL NOT NULL, gone_at REAL);
CREATE INDEX IF NOT EXISTS messages_sha ON messages (account, sha256);
CREATE TABLE IF NOT EXISTS keywords (
    account TEXT NOT NULL, folder TEXT NOT NULL, uidvalidity INTEGER NOT NULL,
    uid INTEGER NOT NULL, keyword TEXT NOT NULL,
    PRIMARY KEY (account, folder, uidvalidity, uid, keyword));
"""


@dataclass
class Filed:
    """A message nnspam filed or learned: ``place`` is ``moving`` (recorded before the
    MOVE), ``junk``, ``unsure``, ``inbox``; ``folder``/``folder_uid`` where nnspam saw it
    last in the folder it filed it into; ``gone_at`` when it was seen to have left it."""

    id: int
    sha256: str
    message_id: str | None
    spamicity: float | None
    verdict: str | None
    place: Place
    origin: str
    folder: str | None
    folder_uid: int | None
    uidvalidity: int | None
    learned: str | None
    at: float
    gone_at: float | None

    def __post_init__(self) -> None:
        self.place = Place(self.place)


class ImapState:
    """The accounts' folders and messages (see the module docstring). Thread-safe: every
    account's thread shares one connection under a lock; each change is committed at
    once, so a SIGKILL loses nothing that was recorded."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        # a commit survives a killed process without an fsync of its own (WAL); a power
        # cut may lose the last ones, which only makes the next start look again
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def folder(self, account: str, folder: str) -> tuple[int, int] | None:
        """(uidvalidity, last UID handled) of a folder, None before its first visit."""
        with self.lock:
            row = self.db.execute("SELECT uidvalidity, last_uid FROM folders WHERE account=? "
                                  "AND folder=?", (account, folder)).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    def set_folder(self, account: str, folder: str, uidvalidity: int, last_uid: int) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO folders VALUES (?, ?, ?, ?)",
                            (account, folder, uidvalidity, last_uid))

    def latest(self, account: str, sha256: str) -> Filed | None:
        """The newest record of a message (by its bytes)."""
        with self.lock:
            row = self.db.execute("SELECT * FROM messages WHERE account=? AND sha256=? "
                                  "ORDER BY id DESC LIMIT 1", (account, sha256)).fetchone()
        return Filed(*row[:1], *row[2:]) if row else None

    def add(self, account: str, sha256: str, message_id: str | None, spamicity: float | None,
            verdict: str | None, place: str, origin: str, folder: str | None = None,
            folder_uid: int | None = None, uidvalidity: int | None = None,
            learned: str | None = None) -> int:
        with self.lock:
            cur = self.db.execute(
                "INSERT INTO messages (account, sha256, message_id, spamicity, verdict, place, "
                "origin, folder, folder_uid, uidvalidity, learned, at) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (account, sha256, message_id, spamicity, verdict, place, origin, folder,
                 folder_uid, uidvalidity, learned, time.time()))
            return int(cur.lastrowid or 0)

    def update(self, rid: int, **fields: Any) -> None:
        cols = ", ".join(f"{k}=?" for k in fields)  # keys are this module's, never a client's
        with self.lock:
            self.db.execute(f"UPDATE messages SET {cols} WHERE id=?", (*fields.values(), rid))

    def in_folder(self, account: str, folder: str, uidvalidity: int) -> list[tuple[int, int]]:
        """(record id, UID) of the messages nnspam last saw in a folder, not yet gone."""
        with self.lock:
            return [(int(a), int(b)) for a, b in self.db.execute(
                "SELECT id, folder_uid FROM messages WHERE account=? AND folder=? AND "
                "uidvalidity=? AND folder_uid IS NOT NULL AND gone_at IS NULL",
                (account, folder, uidvalidity))]

    def keyword_seen(self, account: str, folder: str, uidvalidity: int, uid: int,
                     keyword: str) -> bool:
        """Whether this keyword on this message was handled already; records it if not."""
        with self.lock:
            cur = self.db.execute("INSERT OR IGNORE INTO keywords VALUES (?, ?, ?, ?, ?)",
                                  (account, folder, uidvalidity, uid, keyword))
            return cur.rowcount == 0


# -- the filer -----------------------------------------------------------------------------
def _message_id(raw: bytes) -> str | None:
    from nnspam.services.delivery.sorter import message_id_of

    return message_id_of(raw) or None


class ImapFiler:
    """One account's filing and learning over an open connection (:meth:`sync`), with the
    account's :class:`~nnspam.services.delivery.sorter.Sorter` (shared by accounts of one model,
    under ``lock``) and the :class:`ImapState`."""

    def __init__(self, account: Account, sorter: Any, lock: threading.Lock,
                 state: ImapState, settings: ImapSettings,
                 clock: Callable[[], float] = time.time) -> None:
        self.account = account
        self.sorter = sorter
        self.lock = lock
        self.state = state
        self.settings = settings
        self.clock = clock
        self.junk: str = account.junk or "Junk"
        self.stats = {"spam": 0, "ham": 0, "unsure": 0, "learned_spam": 0, "learned_ham": 0,
                      "skipped": 0}

    # folders
    def discover(self, client: Any) -> None:
        """Find the Junk folder (SPECIAL-USE \\Junk unless ``junk:`` names one); create
        it, and the unsure folder, when missing."""
        if self.account.junk is None:
            from imapclient.imapclient import JUNK as JUNK_USE

            found = None
            try:
                found = client.find_special_folder(JUNK_USE)
            except Exception as exc:  # noqa: BLE001 - a server without LIST extensions
                log.debug("%s: no SPECIAL-USE: %s", self.account.name, exc)
            self.junk = found or "Junk"
        for folder in (self.junk, self.account.unsure):
            if folder and not client.folder_exists(folder):
                log.info("%s: creating folder %s", self.account.name, folder)
                client.create_folder(folder)

    # moving
    def _move(self, client: Any, uids: list[int], dest: str) -> None:
        """MOVE, else COPY + \\Deleted + UID EXPUNGE of these messages (never a plain
        EXPUNGE: that would remove every message the user marked \\Deleted)."""
        if client.has_capability("MOVE"):
            client.move(uids, dest)
            return
        client.copy(uids, dest)
        client.add_flags(uids, [b"\\Deleted"], silent=True)
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)
        else:
            log.warning("%s: the server has neither MOVE nor UIDPLUS: the inbox copy of the "
                        "message is left marked \\Deleted", self.account.name)

    # one pass
    def sync(self, client: Any) -> None:
        """One pass over the account: Junk first (what left it, what the user put there),
        then the inbox's new mail, then the keywords clients set."""
        self.scan_junk(client)
        self.scan_inbox(client)
        if self.account.keywords:
            self.scan_keywords(client)

    def _new_uids(self, client: Any, folder: str) -> tuple[int, list[int], set[int]] | None:
        """Select ``folder``; (UIDVALIDITY, new UIDs in order, every UID present), or None
        on the folder's first visit or a changed UIDVALIDITY (its present mail is then the
        starting point: nothing in it is filed or learned)."""
        info = client.select_folder(folder)
        uv = int(info[b"UIDVALIDITY"])
        present = set(client.search(["ALL"]))
        top = max(present, default=int(info.get(b"UIDNEXT", 1)) - 1)
        known = self.state.folder(self.account.name, folder)
        if known is None or known[0] != uv:
            if known is not None:
                log.warning("%s: %s has a new UIDVALIDITY (%d, was %d): its %d message(s) "
                            "are the new starting point", self.account.name, folder, uv,
                            known[0], len(present))
            self.state.set_folder(self.account.name, folder, uv, top)
            return None
        return uv, sorted(u for u in present if u > known[1]), present

    def _fetch(self, client: Any, uids: list[int]) -> dict[int, bytes | None]:
        out: dict[int, bytes | None] = {}
        for i in range(0, len(uids), FETCH_BATCH):
            chunk = uids[i:i + FETCH_BATCH]
            got = client.fetch(chunk, [b"BODY.PEEK[]"])
            for uid in chunk:
                item = got.get(uid) or {}
                out[uid] = item.get(b"BODY[]")
        return out

    def scan_junk(self, client: Any) -> None:
        name = self.account.name
        new = self._new_uids(client, self.junk)
        if new is None:
            return
        uv, uids, present = new
        now = self.clock()
        for rid, uid in self.state.in_folder(name, self.junk, uv):
            if uid not in present:
                self.state.update(rid, gone_at=now)
        bodies = self._fetch(client, uids)
        for uid in uids:
            raw = bodies.get(uid)
            if raw is not None:
                try:
                    self._arrived_in_junk(client, uid, uv, raw)
                except Exception as exc:  # noqa: BLE001 - one message must not stop the rest
                    log.error("%s: %s UID %d left as it is: %s: %s", name, self.junk, uid,
                              exc.__class__.__name__, exc)
            self.state.set_folder(name, self.junk, uv, uid)

    def _arrived_in_junk(self, client: Any, uid: int, uv: int, raw: bytes) -> None:
        name = self.account.name
        sha = hashlib.sha256(raw).hexdigest()
        rec = self.state.latest(name, sha)
        if rec is not None and rec.origin == "nnspam" and rec.gone_at is None \
                and rec.folder in (None, self.junk) and (
                    rec.place == Place.MOVING  # the MOVE done, its record not yet (a crash)
                    or (rec.place == Place.JUNK and rec.folder_uid in (None, uid))):
            # nnspam's own filing arriving (or seen again after a restart)
            self.state.update(rec.id, place=Place.JUNK, folder=self.junk, folder_uid=uid,
                              uidvalidity=uv)
            return
        if rec is not None and rec.learned == "spam" and rec.folder == self.junk \
                and rec.folder_uid == uid:
            return
        with self.lock:
            learned = self.sorter.learn([raw], "spam")
        self.stats["learned_spam"] += 1
        self.state.add(name, sha, _message_id(raw), None, "spam", Place.JUNK, "user", self.junk,
                       uid, uv, "spam" if learned else None)
        log.info("%s: correction: message-id=%s moved into %s by the user, %s", name,
                 _message_id(raw), self.junk, "learned as spam" if learned else "not learned")

    def scan_inbox(self, client: Any) -> None:
        name = self.account.name
        new = self._new_uids(client, self.account.inbox)
        if new is None:
            return
        uv, uids, _ = new
        for i in range(0, len(uids), FETCH_BATCH):
            block = uids[i:i + FETCH_BATCH]
            bodies = self._fetch(client, block)
            moving: dict[str, list[tuple[int, int, str, str | None, float]]] = {}
            for uid in block:
                raw = bodies.get(uid)
                if raw is None:
                    continue
                try:
                    self._arrived_in_inbox(client, uid, uv, raw, moving)
                except OSError:
                    raise  # the connection: the session ends, the UID is handled again
                except Exception as exc:  # noqa: BLE001 - one message must not stop the rest
                    if exc.__class__.__module__.startswith("imapclient"):
                        raise
                    log.error("%s: %s UID %d left where it is: %s: %s", name,
                              self.account.inbox, uid, exc.__class__.__name__, exc)
            self._file(client, moving)
            self.state.set_folder(name, self.account.inbox, uv, block[-1])

    def _file(self, client: Any, moving: dict[str, list[tuple[int, int, str, str | None,
                                                            float]]]) -> None:
        """Move a block's spam (and unsure mail) with one MOVE per folder, each message
        recorded as ``moving`` before (:meth:`_arrived_in_inbox`): one round trip for up to
        FETCH_BATCH messages instead of two per message (400 messages delivered at once to
        one account were filed at 113 a second one by one)."""
        name = self.account.name
        for dest, items in moving.items():
            uids = [uid for uid, *_ in items]
            if dest == self.junk and self.account.keywords:
                client.add_flags(uids, [JUNK], silent=True)
            self._move(client, uids, dest)
            for _uid, rid, verdict, mid, sp in items:
                self.state.update(rid, place=Place.JUNK if verdict == "spam" else Place.UNSURE,
                                  folder_uid=None, uidvalidity=None)
                self.stats[verdict] += 1
                log.info("%s: decision message-id=%s spamicity=%.6f action=moved to %s", name,
                         mid, sp, dest)

    def _left(self, client: Any, rec: Filed) -> bool:
        """Whether a message nnspam filed has left the folder it filed it into (checked
        now when the last scan still saw it there). Leaves the inbox selected."""
        if rec.gone_at is not None:
            return self.clock() - rec.gone_at <= self.settings.move_window
        folder = rec.folder or self.junk
        try:
            client.select_folder(folder, readonly=True)
            if rec.folder_uid is not None:
                still = bool(client.search(["UID", str(rec.folder_uid)]))
            elif rec.message_id:
                still = bool(client.search(["HEADER", "Message-ID", rec.message_id]))
            else:
                still = False
        finally:
            client.select_folder(self.account.inbox)
        if not still:
            self.state.update(rec.id, gone_at=self.clock())
        return not still

    def _arrived_in_inbox(self, client: Any, uid: int, uv: int, raw: bytes,
                          moving: dict[str, list[tuple[int, int, str, str | None, float]]]
                          ) -> str:
        """Decide one new inbox message; spam and unsure mail are recorded as ``moving``
        and added to ``moving`` (destination -> messages), which :meth:`_file` moves."""
        name, inbox = self.account.name, self.account.inbox
        sha = hashlib.sha256(raw).hexdigest()
        mid = _message_id(raw)
        rec = self.state.latest(name, sha)
        if rec is not None and rec.place == Place.INBOX and rec.origin == "nnspam" \
                and rec.folder_uid == uid and rec.uidvalidity == uv:
            return "known"  # decided before a crash cut the block short: kept, as it was
        if rec is not None and rec.place == Place.MOVING and rec.folder_uid == uid \
                and rec.uidvalidity == uv:
            # a move cut short by a crash: finish it
            self._move(client, [uid], rec.folder or self.junk)
            self.state.update(rec.id,
                              place=Place.UNSURE if rec.verdict == "unsure" else Place.JUNK,
                              folder_uid=None, uidvalidity=None)
            log.info("%s: resumed the move of message-id=%s to %s", name, mid, rec.folder)
            return "resumed"
        if rec is not None and rec.place in (Place.JUNK, Place.UNSURE) \
                and rec.origin == "nnspam" \
                and self._left(client, rec):
            with self.lock:
                learned = self.sorter.learn([raw], "ham")
            self.stats["learned_ham"] += 1
            self.state.update(rec.id, place=Place.INBOX,
                              learned="ham" if learned else rec.learned)
            if self.account.keywords:
                client.remove_flags([uid], [JUNK], silent=True)
                client.add_flags([uid], [NOT_JUNK], silent=True)
            log.info("%s: correction: message-id=%s moved out of %s by the user, %s", name,
                     mid, rec.folder, "learned as ham" if learned else "not learned")
            return "corrected"
        with self.lock:
            sp, verdict = self.sorter.judge(raw)
        dest = self.junk if verdict == "spam" else (
            self.account.unsure if verdict == "unsure" else None)
        if dest is None:
            self.state.add(name, sha, mid, sp, verdict, Place.INBOX, "nnspam", inbox, uid, uv)
            self.stats["ham" if verdict == "ham" else "unsure"] += 1
            log.info("%s: decision message-id=%s spamicity=%.6f action=kept", name, mid, sp)
            return verdict
        rid = self.state.add(name, sha, mid, sp, verdict, Place.MOVING, "nnspam", dest, uid, uv)
        moving.setdefault(dest, []).append((uid, rid, verdict, mid, sp))
        return verdict

    def scan_keywords(self, client: Any) -> None:
        """$Junk set by a client on a message of the inbox: spam; $NotJunk on one in Junk:
        ham (each keyword on each message once)."""
        name = self.account.name
        for folder, keyword, label in ((self.account.inbox, JUNK, "spam"),
                                       (self.junk, NOT_JUNK, "ham")):
            info = client.select_folder(folder)
            uv = int(info[b"UIDVALIDITY"])
            known = self.state.folder(name, folder)
            top = known[1] if known and known[0] == uv else 0
            uids = [u for u in client.search(["KEYWORD", keyword.decode()]) if u <= top]
            fresh = [u for u in uids
                     if not self.state.keyword_seen(name, folder, uv, u, keyword.decode())]
            if not fresh:
                continue
            bodies = self._fetch(client, fresh)
            for uid in fresh:
                raw = bodies.get(uid)
                if raw is None:
                    continue
                sha = hashlib.sha256(raw).hexdigest()
                rec = self.state.latest(name, sha)
                if rec is not None and rec.learned == label:
                    continue
                with self.lock:
                    learned = self.sorter.learn([raw], label)
                self.stats[f"learned_{label}"] += 1
                self.state.add(name, sha, _message_id(raw), None, label, "keyword", "user",
                               folder, uid, uv, label if learned else None)
                log.info("%s: correction: %s set on message-id=%s in %s, %s", name,
                         keyword.decode(), _message_id(raw), folder,
                         f"learned as {label}" if learned else "not learned")


# -- running -------------------------------------------------------------------------------
class AccountWorker(threading.Thread):
    """One account's connection: sync, IDLE (or wait), sync again, until ``stop``; a
    fault is one log line and a reconnect after a back-off."""

    def __init__(self, filer: ImapFiler, settings: ImapSettings, stop: threading.Event,
                 once: bool = False) -> None:
        super().__init__(name=f"imap-{filer.account.name}", daemon=True)
        self.filer = filer
        self.settings = settings
        self.stop = stop
        self.once = once
        self.error: BaseException | None = None

    def run(self) -> None:
        backoff = 1.0
        acct = self.filer.account
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.session()
                if self.once:
                    return
            except ImapError as exc:
                log.error("%s", exc)
                if self.once:
                    self.error = exc
                    return
            except Exception as exc:  # noqa: BLE001 - the network, the server: reconnect
                log.warning("%s: connection to %s:%d lost: %s: %s; reconnecting in %.0f s",
                            acct.name, acct.host, acct.port, exc.__class__.__name__,
                            str(exc)[:200], backoff)
                if self.once:
                    self.error = exc
                    return
            if time.monotonic() - started > 60:
                backoff = 1.0
            self.stop.wait(backoff)
            backoff = min(backoff * 2, self.settings.max_backoff)

    def session(self) -> None:
        acct = self.filer.account
        client = connect(acct, self.settings.timeout)
        try:
            log.info("%s: connected to %s:%d as %s", acct.name, acct.host, acct.port, acct.user)
            self.filer.discover(client)
            self.filer.sync(client)
            if self.once:
                return
            idle = client.has_capability("IDLE")
            log.info("%s: watching %s (junk folder %s) %s", acct.name, acct.inbox,
                     self.filer.junk, "with IDLE" if idle else
                     f"every {self.settings.poll_interval:g} s (the server has no IDLE)")
            while not self.stop.is_set():
                if idle:
                    client.select_folder(acct.inbox)
                    client.idle()
                    deadline = time.monotonic() + self.settings.poll_interval
                    try:
                        while not self.stop.is_set() and time.monotonic() < deadline:
                            if client.idle_check(timeout=min(1.0, self.settings.poll_interval)):
                                break
                    finally:
                        client.idle_done()
                else:
                    self.stop.wait(self.settings.poll_interval)
                self.filer.sync(client)
        finally:
            try:
                client.logout()
            except Exception:  # noqa: BLE001 - the connection may be gone already
                pass


def run(cfg: dict[str, Any], model_name: str | None, *, only: Sequence[str] = (),
        once: bool = False, stop: threading.Event | None = None,
        ready: Callable[[], Any] | None = None) -> int:
    """Run ``nnspam imap`` until ``stop`` is set (SIGTERM): one thread per account, every
    account scored and taught through one Sorter of the model (``-m``, else ``model``).
    ``once``: one pass over each account, then return (exit status 1 if one failed).
    ``ready``: called once the settings are checked, the model is loaded and the accounts'
    threads run (systemd's READY=1)."""
    from nnspam.model.writer import load_with_stamp
    from nnspam.services.delivery.sorter import Sorter

    settings = imap_settings(cfg, only)
    name = model_name or cfg["model"]
    from nnspam.model.core import resolve_model_path

    model, stamp = load_with_stamp(resolve_model_path(name))
    state = ImapState(settings.state)
    sorter = Sorter.from_config(
        cfg, model,
        # nnspam imap keeps its own state (ImapState): the Sorter's maildir records, the
        # only users of its State, are never reached from here
        state=None,  # type: ignore[arg-type]
        model_name=name, stamp=stamp, source="imap")
    lock = threading.Lock()
    stop = stop or threading.Event()
    workers = [AccountWorker(ImapFiler(a, sorter, lock, state, settings), settings, stop, once)
               for a in settings.accounts]
    for w in workers:
        w.start()
    if ready is not None:
        ready()
    try:
        if once:
            for w in workers:
                w.join()
        else:
            while not stop.is_set():
                stop.wait(1.0)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=settings.timeout + 5)
        with lock:
            sorter.checkpoint()
        state.close()
    return 1 if any(w.error for w in workers) else 0
