"""``nnspam serve``: a scoring server that speaks SpamAssassin's SPAMC/SPAMD
protocol, so that ``spamc`` (and everything built on it: procmail and
maildrop recipes, Exim's ``spam =`` condition, spamass-milter, IMAPSieve
learning with ``spamc -L``) uses nnspam without a Python start per message.

Protocol (spamd/PROTOCOL of SpamAssassin): a request is ``VERB SPAMC/1.x``,
header lines ``Name: value``, an empty line and ``Content-length`` bytes of
body. Verbs: PING, CHECK, SYMBOLS, REPORT, REPORT_IFSPAM, HEADERS, PROCESS,
TELL and SKIP. Request headers: ``Content-length``, ``User`` (selects a
per-user model, below), ``Compress: zlib`` (``spamc -z``), ``Message-class``,
``Set`` and ``Remove`` (TELL).

Score mapping: spamd reports ``score / threshold`` in points. nnspam reports
``score = 10 * spamicity`` and ``threshold = 10 * threshold`` (both with one
decimal, as spamd), so the shipped threshold 0.5 is ``5.0`` exactly as in
SpamAssassin and ``spamc -c`` prints e.g. ``9.7/5.0`` and exits 1 for spam,
0 for ham. The ``True``/``False`` verdict is taken from the unrounded
spamicity (``spamicity >= threshold``), as the X-NNSpam headers are.

PROCESS and HEADERS return exactly what ``nnspam filter`` writes: the same
:func:`nnspam.pipefilter.classify` inserts the X-NNSpam headers into the raw
bytes. Messages over ``serve.max_size`` come back unchanged and unclassified
(spamd semantics; ``Spam: False ; 0.0 / 5.0``). With
``serve.spamassassin_headers`` they also carry SpamAssassin's ``X-Spam-Flag``
and ``X-Spam-Status`` (:func:`spamassassin_fields`), which spamass-milter
needs: it copies only those fields from spamc's answer.

TELL with ``Message-class: spam|ham`` and ``Set: local`` learns through
:func:`nnspam.correct.correct` (the one correction routine of ``nnspam learn`` and
the daemon) and saves the model atomically; ``Remove: local`` (``spamc -L
forget``) is answered EX_UNAVAILABLE: a network cannot unlearn one message.
Learning goes through the one model writer (:mod:`nnspam.writer`, shared with
the daemon, ``nnspam learn`` and the SMS store): it holds an exclusive
``flock`` on ``<model dir>.lock`` and starts from the model as last saved, so
concurrent TELLs in different workers, and the corrections of a daemon or
``nnspam learn`` on the same model, all count.

Per-user models: with ``serve.user_model`` set to a path pattern (``%u`` user,
``%l`` its local part, ``%d`` its domain, ``%%``, a leading ``~`` or ``~%u``;
see :func:`user_model_path`), ``User:`` (what ``spamc -u`` or Exim's ``spam =
user`` sends; spamc sends its own user name by default) selects that user's
model directory; a user without one is scored by the site model. The user's
first TELL creates it as a copy of the site model trained on the message
(EX_CANTCREAT 73 when the directory cannot be created). User names that could
leave the pattern's directory are refused with EX_NOUSER 67. Each worker keeps
up to ``serve.user_cache`` user models loaded (least recently used dropped).

Workers (pre-fork): the supervisor process loads the model, binds the
sockets (or takes them from systemd socket activation: ``LISTEN_FDS`` /
``LISTEN_PID``), sends ``READY=1`` to ``$NOTIFY_SOCKET`` (``Type=notify``;
:mod:`nnspam.systemd`, as the daemon; with ``WatchdogSec=`` also ``WATCHDOG=1``
at half the interval while its loop turns) and forks ``serve.workers``
processes (default one per core) that share the listening sockets and,
copy-on-write, the loaded model. Each worker accepts
only while one of its ``serve.max_connections`` handler threads is free;
other clients wait in the kernel's listen backlog for any worker. A worker
that dies is replaced. Every request costs one ``stat`` of the model's
``weights.npz`` (inode, mtime, size): a model saved by a TELL in another
worker, or by ``nnspam learn``, is loaded on the next request, no signal
needed. With ``workers: 1`` the supervisor serves by itself.

Start-up refusals are one line and exit status 2, with nothing taken over or
created: a bad ``--listen``/``serve.listen`` (:func:`_parse_listen`), a TCP
address in use, and a Unix socket where a server answers, whose directory is
missing, or whose path is another kind of file (:func:`_unix_listener`); a
stale socket file is replaced, and at exit only our own is removed.

Errors are answered ``SPAMD/1.5 CODE MESSAGE`` with sysexits codes:
64 EX_USAGE (unknown verb), 65 EX_DATAERR (bad body: broken zlib, too big
after decompression, bad TELL class), 76 EX_PROTOCOL (malformed request
line or header, missing or wrong Content-length, truncated body), 69
EX_UNAVAILABLE (Remove), 77 EX_NOPERM (TELL on the read-only shipped model),
74 EX_IOERR (the model could not be saved), 67 EX_NOUSER (a user name refused
for serve.user_model), 73 EX_CANTCREAT (a user model that cannot be created).
A client that says nothing for ``serve.timeout`` seconds is disconnected.

Signals (to the supervisor): SIGTERM and SIGINT stop accepting; every worker
finishes the requests it has accepted, then the supervisor exits 0. SIGHUP
reloads the site model in every worker and drops the cached user models.

Resources: one BLAS thread per process (:func:`nnspam.blas.one_blas_thread`; OpenBLAS
threads made one message's forward pass 0.1 ms -> 20 ms on a busy host) and
two glibc malloc arenas (RSS +20 MB instead of +75 MB over 4,000 hostile
requests). Measured (``scripts/bench/server.py``, 2 cores shared with other
jobs, load average 9-13): see README "Scoring server".
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import queue
import re
import select
import selectors
import signal
import socket
import socketserver
import stat
import sys
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnspam import __version__
from nnspam.blas import one_blas_thread
from nnspam.headers import set_header_fields
from nnspam.pipefilter import Result, Settings, classify, model_scorer
from nnspam.pipefilter import settings as filter_settings
from nnspam.systemd import Watchdog, sd_notify
from nnspam.verdict import is_spam
from nnspam.writer import ModelWriter, model_lock, model_stamp

__all__ = ["ServeSettings", "ServerError", "ModelRegistry", "Worker", "serve_settings",
           "run_server", "score_line", "spamassassin_fields", "user_model_path",
           "inherited_sockets", "resolve_workers",
           "EX_OK", "EX_USAGE", "EX_DATAERR", "EX_NOUSER", "EX_UNAVAILABLE", "EX_SOFTWARE",
           "EX_CANTCREAT", "EX_IOERR", "EX_PROTOCOL", "EX_NOPERM"]

log = logging.getLogger("nnspam.serve")

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOUSER = 67
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_IOERR = 74
EX_PROTOCOL = 76
EX_NOPERM = 77

PROTO = b"SPAMD/1.5"
VERBS = {"PING", "CHECK", "SYMBOLS", "REPORT", "REPORT_IFSPAM", "HEADERS", "PROCESS", "TELL",
         "SKIP"}
MAX_LINE = 8192  # longest request or header line
MAX_HEADERS = 64  # most header lines in one request
CHUNK = 1 << 16
BACKLOG = 128  # clients beyond every worker's max_connections wait here
POLL = 0.25  # seconds between checks of the stop flag
SD_LISTEN_FDS_START = 3
# User names accepted in ``User:`` when serve.user_model is set: nothing
# that could leave the pattern's directory (no "/", NUL, leading dot, "..").
USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+=@-]{0,63}")


class ServerError(Exception):
    """A setting that prevents the server from starting."""


class RequestError(Exception):
    """A bad request: answered ``SPAMD/1.5 code message``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class ServeSettings:
    """The server's settings (``serve:`` in the config, overlaid by options)."""

    filter: Settings
    socket: str | None
    listen: tuple[str, int] | None
    allowed: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    max_size: int = 524288
    timeout: float = 30.0
    score_scale: float = 10.0
    workers: int | None = None  # None/0: one per core
    max_connections: int = 32  # requests served at once per worker
    user_model: str | None = None  # per-user model path pattern (%u, %l, %d, ~)
    user_cache: int = 16  # per-user models kept loaded per worker (LRU)
    spamassassin_headers: bool = False  # add X-Spam-Flag/X-Spam-Status (spamass-milter)
    rule: Any = None  # config learn: (nnspam.correct.rule_from_config), for TELL


def _parse_listen(value: Any, what: str) -> tuple[str, int]:
    """The TCP address of ``--listen`` or ``serve.listen`` (``what``): ``IP:PORT``
    or ``[IPv6]:PORT``. Every check of the address is made here, before the
    model is loaded, so that a bad one is one line naming it (``nnspam serve``
    exits 2) and never a traceback from ``int()`` or ``bind()`` (port 99999
    raised OverflowError there). The port: ASCII digits, 0..65535 (0: the
    kernel picks a free port, named on the start line). The host: an IP
    address (a name could resolve to another interface than meant) and never
    empty: ``:783`` means every address to some programs and loopback to
    others, so it has to be said which."""
    if not isinstance(value, str):
        raise ServerError(f"{what} must be HOST:PORT, not {value!r}")

    def bad(problem: str) -> ServerError:
        return ServerError(f"{what} {value!r}: {problem}")

    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise bad("not [IPv6]:PORT")
        port = rest[1:]
    else:
        host, sep, port = value.rpartition(":")
        if not sep:
            host, port = port, ""
    if not port:
        raise bad("no port (HOST:PORT)")
    if not (port.isascii() and port.isdigit()):
        raise bad(f"port {port[:20]!r} is not a number")
    if len(port) > 5 or int(port) > 65535:
        raise bad(f"port {port if len(port) <= 12 else port[:12] + '...'} is out of range "
                  "(0..65535)")
    if not host:
        raise bad("no host: give an IP address (127.0.0.1 loopback, 0.0.0.0 or [::] every "
                  "address)")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise bad(f"{host[:60]!r} is not an IP address (IPv6: [ADDRESS]:PORT)") from None
    return host, int(port)


def _number(s: dict[str, Any], key: str, kind: type, minimum: float, default: Any = None,
            above: bool = False) -> Any:
    """``serve.KEY`` from the config as ``kind`` (int or float), at least
    ``minimum`` (more than it with ``above``): a bad value is one line naming
    the setting, not a traceback from ``int()``/``float()`` or a server that
    misbehaves later (a timeout of 0 would make every client socket
    non-blocking)."""
    v = s.get(key, default)
    try:
        n = kind(v) if not isinstance(v, bool) else None
    except (TypeError, ValueError, OverflowError):
        n = None
    if n is None or not (n > minimum if above else n >= minimum):
        raise ServerError(f"serve.{key} must be a number {'>' if above else '>='} {minimum}, "
                          f"not {v!r}")
    return n


def serve_settings(cfg: dict[str, Any], model: str | None = None, sock: str | None = None,
                   listen: str | None = None, allow: Sequence[str] | None = None,
                   workers: int | None = None) -> ServeSettings:
    """Settings from the config; ``--socket``/``--listen`` given on the command
    line replace both configured listeners, ``--allow`` the allow list,
    ``--workers`` serve.workers. Under systemd socket activation the
    listeners come from systemd and the configured ones are not used."""
    s = cfg["serve"]
    if sock is not None or listen is not None:
        sock_path, listen_s = sock, listen
    else:
        sock_path, listen_s = s["socket"], s["listen"]
    activated = os.environ.get("LISTEN_PID") == str(os.getpid())
    if activated:
        sock_path = listen_s = None
    elif sock_path is None and listen_s is None:
        raise ServerError("nothing to listen on: give --socket PATH and/or --listen HOST:PORT")
    nets = allow if allow is not None else s["allowed"]
    if not isinstance(nets, (list, tuple)):
        raise ServerError(f"serve.allowed must be a list of networks, not {nets!r}")
    try:
        allowed = [ipaddress.ip_network(a, strict=False) for a in nets]
    except (TypeError, ValueError) as exc:
        raise ServerError(f"serve.allowed: {exc}") from None
    if sock_path is not None and not isinstance(sock_path, str):
        raise ServerError(f"serve.socket must be a path, not {sock_path!r}")
    addr = (_parse_listen(listen_s, "serve.listen" if listen is None else "--listen")
            if listen_s is not None else None)
    if addr is not None:
        ip = ipaddress.ip_address(addr[0])
        if not ip.is_loopback and not any(not n.network_address.is_loopback for n in allowed):
            raise ServerError(f"listening on {ip} (not loopback) needs an explicit allow list of "
                              "client networks (serve.allowed or --allow)")
    try:
        f = filter_settings(cfg, model)
        from nnspam.correct import rule_from_config

        rule = rule_from_config(cfg)
    except ValueError as exc:
        raise ServerError(str(exc)) from None
    n = s.get("workers") if workers is None else workers
    if n is not None and (not isinstance(n, int) or n < 0):
        raise ServerError(f"serve.workers must be a number >= 0 or null, not {n!r}")
    maxc = s.get("max_connections", 32)
    if not isinstance(maxc, int) or maxc < 1:
        raise ServerError(f"serve.max_connections must be a number >= 1, not {maxc!r}")
    user_model = s.get("user_model")
    if user_model is not None and (not isinstance(user_model, str) or "%" not in user_model):
        raise ServerError("serve.user_model must be null or a path pattern with %u, %l or %d")
    return ServeSettings(f, os.path.expanduser(sock_path) if sock_path else None, addr, allowed,
                         _number(s, "max_size", int, 0),
                         _number(s, "timeout", float, 0, above=True),
                         _number(s, "score_scale", float, 0, above=True), n, maxc, user_model,
                         _number(s, "user_cache", int, 0, 16),
                         bool(s.get("spamassassin_headers", False)), rule)


def score_line(spamicity: float | None, threshold: float, scale: float) -> bytes:
    """The ``Spam:`` response header: ``True ; 9.7 / 5.0`` (see the module
    docstring for the mapping); an unclassified message is ``False ; 0.0``."""
    spam = spamicity is not None and is_spam(spamicity, threshold)
    pts = 0.0 if spamicity is None else scale * spamicity
    return f"Spam: {'True' if spam else 'False'} ; {pts:.1f} / {scale * threshold:.1f}".encode()


_stamp = model_stamp  # identity of a model directory's weights on disk: one stat


class ModelSlot(ModelWriter):
    """One model directory in memory, reloaded when its files change on disk
    (:meth:`~nnspam.writer.ModelWriter.refresh`: a half-replaced or broken
    directory keeps the old model; the same broken files are not retried on
    every request) and learned into through the one model writer.

    ``lock`` serialises scoring, learning and reloading of this model within
    one worker process; the writer's exclusive ``flock`` on ``<dir>.lock``
    beside the directory serialises learning across worker processes and with
    every other writer (the daemon, ``nnspam learn``), so that no TELL
    overwrites another's lesson or theirs."""

    def __init__(self, path: Path, model: Any, stamp: Any) -> None:
        super().__init__(path, model, stamp=stamp)
        self.path = path  # as the registry resolved it (a user model's name is never mapped)
        self.lock = threading.Lock()


def user_model_path(pattern: str, user: str) -> Path | None:
    """The per-user model directory for ``user`` from ``serve.user_model``.

    Substitutions: ``%u`` the user name as spamc sends it, ``%l`` its local
    part (before ``@``), ``%d`` its domain (after ``@``, empty without one),
    ``%%`` a percent sign; then a leading ``~`` or ``~name`` is expanded from
    the password database. None when ``~name`` names no account. Raises
    :class:`RequestError` (EX_NOUSER) for a user name that could escape the
    pattern: anything but letters, digits and ``._+=@-``, a leading dot or
    dash, ``..``, more than 64 characters."""
    if not USER_RE.fullmatch(user) or ".." in user:
        raise RequestError(EX_NOUSER, "invalid user name")
    local, _, domain = user.partition("@")
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "%" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append({"u": user, "l": local, "d": domain, "%": "%"}.get(nxt, "%" + nxt))
            i += 2
        else:
            out.append(c)
            i += 1
    path = "".join(out)
    if path.startswith("~"):
        path = os.path.expanduser(path)
        if path.startswith("~"):
            return None
    return Path(path)


class ModelRegistry:
    """The site model and a bounded LRU cache of per-user models.

    Every request costs one ``stat`` of the model it uses (see :func:`_stamp`):
    a model saved by a TELL in another worker process, or by ``nnspam learn``,
    is served from the next request on, without a restart or a signal."""

    def __init__(self, settings: ServeSettings) -> None:
        from nnspam.model import Model, is_shipped, resolve_model_path

        self.settings = settings
        name = settings.filter.model
        self.site_readonly = is_shipped(name)
        path = resolve_model_path(name)
        stamp = _stamp(path)
        self.site = ModelSlot(path, Model.load(path), stamp)
        self.users: OrderedDict[Path, ModelSlot] = OrderedDict()
        self.users_lock = threading.Lock()

    def reload(self) -> None:
        """Load the site model again and forget the cached user models (SIGHUP)."""
        from nnspam.model import Model

        stamp = _stamp(self.site.path)
        model = Model.load(self.site.path)
        with self.site.lock:
            self.site.model, self.site.stamp, self.site.failed = model, stamp, None
        with self.users_lock:
            self.users.clear()

    def _user_path(self, user: str | None) -> Path | None:
        pattern = self.settings.user_model
        if not pattern or not user:
            return None
        return user_model_path(pattern, user)

    def slot_for(self, user: str | None) -> ModelSlot:
        """The model that scores ``user``'s mail: theirs when it exists, else the site's."""
        from nnspam.model import Model

        path = self._user_path(user)
        if path is None:
            return self.site
        with self.users_lock:
            slot = self.users.get(path)
            if slot is not None:
                self.users.move_to_end(path)
                return slot
        stamp = _stamp(path)
        if stamp is None:
            return self.site
        try:
            slot = ModelSlot(path, Model.load(path), stamp)
        except Exception as exc:  # noqa: BLE001 - a broken user model: the site model scores
            log.error("user model %s cannot be loaded, using the site model: %s", path, exc)
            return self.site
        with self.users_lock:
            slot = self.users.setdefault(path, slot)
            self.users.move_to_end(path)
            while len(self.users) > max(self.settings.user_cache, 0):
                self.users.popitem(last=False)
        return slot

    def classify(self, raw: bytes, user: str | None = None) -> Result:
        """Exactly the classification ``nnspam filter`` makes, with ``user``'s model."""
        f = self.settings.filter
        slot = self.slot_for(user)
        with slot.lock:
            slot.refresh()
            return classify(raw, model_scorer(slot.model, f), f.threshold, f.unsure)

    def learn(self, raw: bytes, label: str, user: str | None = None) -> Path:
        """Learn one message into ``user``'s model (the site model without
        ``serve.user_model``) and save it atomically; returns its directory.

        A user without a model gets one: a copy of the site model as it is on
        disk, trained on this message and saved to the user's path (parent
        directories are created). When that directory cannot be created the
        TELL is refused with EX_CANTCREAT and nothing changes."""
        from nnspam.model import Model

        path = self._user_path(user)
        if self.settings.user_model and user and path is None:
            raise RequestError(EX_NOUSER, "no such user for serve.user_model")
        if path is None:
            if self.site_readonly:
                raise RequestError(EX_NOPERM, "the shipped model is read-only; serve a model "
                                   "directory (-m DIR) or set serve.user_model to learn")
            slot = self.site
        else:
            slot = self.slot_for(user)
            if slot is self.site:  # the user has no model yet: start from the site model
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with model_lock(path):
                        if _stamp(path) is None:
                            with self.site.lock:
                                self.site.refresh()
                            new = ModelWriter(path, Model.load(self.site.path), stamp=None)
                            new.learn_payloads([raw], label, self.settings.rule)
                            return path
                except OSError as exc:
                    raise RequestError(EX_CANTCREAT, f"cannot create the user model: "
                                       f"{exc.strerror or exc}") from None
                slot = self.slot_for(user)  # another process created it meanwhile
        with slot.lock:
            try:
                # under the writer lock, on top of what other workers and writers saved
                slot.learn_payloads([raw], label, self.settings.rule)
            except OSError as exc:
                raise RequestError(EX_IOERR, f"cannot save the model: "
                                   f"{exc.strerror or exc}") from None
        return slot.path


class Handler(socketserver.StreamRequestHandler):
    """One connection, one request (as spamd)."""

    server: Context  # type: ignore[assignment]

    def handle(self) -> None:
        st = self.server.settings
        self.request.settimeout(st.timeout)
        peer = self.client_address
        if isinstance(peer, tuple) and not self.server.allowed(peer[0]):
            log.warning("connection from %s refused: not in serve.allowed", peer[0])
            return
        try:
            self._serve_one()
        except RequestError as exc:
            self._send(PROTO + f" {exc.code} {exc.message}\r\n".encode())
        except (TimeoutError, ConnectionError, OSError) as exc:
            log.info("connection dropped: %s", exc)

    def _send(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            pass

    def _line(self) -> bytes:
        line = self.rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise RequestError(EX_PROTOCOL, "Bad header line: line too long")
        if not line.endswith(b"\n"):
            raise RequestError(EX_PROTOCOL, "Bad header line: request ended early")
        return line.rstrip(b"\r\n")

    def _serve_one(self) -> None:
        first = self._line()
        parts = first.split(b" ")
        if len(parts) != 2 or not parts[1].startswith(b"SPAMC/"):
            raise RequestError(EX_PROTOCOL, "Bad header line: (request line)")
        verb = parts[0].decode("ascii", "replace")
        if verb not in VERBS:
            raise RequestError(EX_USAGE, f"Unknown method: {verb[:40]}")
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            line = self._line()
            if not line:
                break
            name, sep, value = line.partition(b":")
            if not sep or not name.strip():
                raise RequestError(EX_PROTOCOL, "Bad header line: (no colon)")
            headers[name.strip().decode("ascii", "replace").lower()] = (
                value.strip().decode("utf-8", "replace"))
        else:
            raise RequestError(EX_PROTOCOL, "Bad header line: too many headers")
        if verb == "SKIP":
            return
        if verb == "PING":
            self._send(PROTO + b" 0 PONG\r\n")
            return
        self._body_verb(verb, headers)

    def _read_exact(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) != n:
            raise RequestError(EX_PROTOCOL, "Bad header line: body shorter than Content-length")
        return data

    def _body_verb(self, verb: str, headers: dict[str, str]) -> None:
        st = self.server.settings
        cl = headers.get("content-length")
        if cl is None or not (cl.isascii() and cl.isdigit()):
            raise RequestError(EX_PROTOCOL, "Bad header line: Content-length missing or invalid")
        length = int(cl)
        compress = headers.get("compress")
        if compress is not None and compress.lower() != "zlib":
            raise RequestError(EX_PROTOCOL, f"Bad header line: Compress: {compress[:20]}")
        if compress is None and length > st.max_size:
            self._pass_through(verb, length)
            return
        if compress is not None and length > st.max_size:
            raise RequestError(EX_DATAERR, "compressed message over serve.max_size")
        body = self._read_exact(length)
        if compress is not None:
            d = zlib.decompressobj()
            try:
                body = d.decompress(body, st.max_size + 1)
            except zlib.error as exc:
                raise RequestError(EX_DATAERR, f"bad zlib data: {exc}") from None
            if len(body) > st.max_size:
                raise RequestError(EX_DATAERR, "message over serve.max_size after decompression")
        if verb == "TELL":
            self._tell(body, headers)
            return
        res = self.server.models.classify(body, headers.get("user"))
        if res.error is not None:
            log.error("classification failed, message passed through: %s", res.error)
        self._answer(verb, body, res.output, res.spamicity)

    def _answer(self, verb: str, original: bytes, marked: bytes, sp: float | None) -> None:
        st = self.server.settings
        f = st.filter
        spam_line = score_line(sp, f.threshold, st.score_scale)
        spam = sp is not None and is_spam(sp, f.threshold)
        if verb == "CHECK":
            self._send(PROTO + b" 0 EX_OK\r\n" + spam_line + b"\r\n\r\n")
            return
        if st.spamassassin_headers and sp is not None and verb in ("PROCESS", "HEADERS"):
            marked = spamassassin_fields(marked, sp, f.threshold, st.score_scale)
        if verb == "PROCESS":
            out = marked
        elif verb == "HEADERS":
            out = _head_of(marked)
        elif verb == "SYMBOLS":
            out = b"NNSPAM_SPAM" if spam else (b"NNSPAM_HAM" if sp is not None else b"")
        elif verb == "REPORT" or (verb == "REPORT_IFSPAM" and spam):
            out = _report(sp, f.threshold, st.score_scale)
        else:  # REPORT_IFSPAM on ham
            out = b""
        self._send(PROTO + b" 0 EX_OK\r\n" + spam_line + b"\r\nContent-length: "
                   + str(len(out)).encode() + b"\r\n\r\n" + out)

    def _pass_through(self, verb: str, length: int) -> None:
        """A message over the size cap: unchanged, unclassified, never held whole."""
        st = self.server.settings
        spam_line = score_line(None, st.filter.threshold, st.score_scale)
        if verb != "PROCESS":
            head = self._read_exact(min(length, st.max_size))
            left = length - len(head)
            while left:
                got = self.rfile.read(min(CHUNK, left))
                if not got:
                    raise RequestError(EX_PROTOCOL, "Bad header line: body shorter than "
                                       "Content-length")
                left -= len(got)
            if verb == "HEADERS":
                self._answer_raw(spam_line, _head_of(head))
            elif verb == "TELL":
                raise RequestError(EX_DATAERR, "message over serve.max_size, not learned")
            else:
                self._answer(verb, b"", b"", None)
            return
        self.wfile.write(PROTO + b" 0 EX_OK\r\n" + spam_line + b"\r\nContent-length: "
                         + str(length).encode() + b"\r\n\r\n")
        left = length
        while left:
            got = self.rfile.read(min(CHUNK, left))
            if not got:
                raise ConnectionError("body shorter than Content-length")
            self.wfile.write(got)
            left -= len(got)
        self.wfile.flush()

    def _answer_raw(self, spam_line: bytes, out: bytes) -> None:
        self._send(PROTO + b" 0 EX_OK\r\n" + spam_line + b"\r\nContent-length: "
                   + str(len(out)).encode() + b"\r\n\r\n" + out)

    def _tell(self, body: bytes, headers: dict[str, str]) -> None:
        if "remove" in headers:
            raise RequestError(EX_UNAVAILABLE, "Remove is not supported: nnspam cannot "
                               "unlearn a message")
        label = headers.get("message-class", "").lower()
        if label not in ("spam", "ham"):
            raise RequestError(EX_DATAERR, "TELL needs Message-class: spam or ham")
        where = [w.strip().lower() for w in headers.get("set", "").split(",") if w.strip()]
        if "local" not in where:
            raise RequestError(EX_DATAERR, "TELL needs Set: local")
        where = self.server.models.learn(body, label, headers.get("user"))
        log.info("learned one message as %s into %s (user %s)", label, where,
                 headers.get("user", "-"))
        self._send(PROTO + b" 0 EX_OK\r\nDidSet: local\r\n\r\n")


SA_FIELDS = ("X-Spam-Flag", "X-Spam-Status")


def spamassassin_fields(marked: bytes, spamicity: float, threshold: float,
                        scale: float) -> bytes:
    """``marked`` (nnspam filter's output) with SpamAssassin's ``X-Spam-Flag: YES`` (spam
    only) and ``X-Spam-Status`` fields added, any earlier ones (forged or from another
    filter) removed: what spamass-milter copies into the message and rejects on
    (``serve.spamassassin_headers``). Scores use the ``Spam:`` line's mapping."""
    spam = is_spam(spamicity, threshold)
    status = (f"{'Yes' if spam else 'No'}, score={scale * spamicity:.1f} "
              f"required={scale * threshold:.1f} tests=NNSPAM_{'SPAM' if spam else 'HAM'} "
              f"autolearn=no version=nnspam-{__version__}")
    fields = ([("X-Spam-Flag", "YES")] if spam else []) + [("X-Spam-Status", status)]
    return set_header_fields(marked, fields, SA_FIELDS)


def _head_of(raw: bytes) -> bytes:
    """``raw`` up to and including its first empty line, found as spamc finds
    it (the first ``\\r\\n\\r\\n`` or ``\\n\\n``): spamc appends the original body
    from the same place, so HEADERS + body is byte for byte the PROCESS output
    (headers are only ever inserted before that point). All of ``raw`` when
    it has no empty line."""
    i, j = raw.find(b"\r\n\r\n"), raw.find(b"\n\n")
    ends = [k + n for k, n in ((i, 4), (j, 2)) if k >= 0]
    if not ends:
        return raw
    if i >= 0 and j >= 0:
        return raw[:i + 4] if i < j else raw[:j + 2]
    return raw[:ends[0]]


def _report(sp: float | None, threshold: float, scale: float) -> bytes:
    if sp is None:
        return b"nnspam: message not classified\r\n"
    return (f"nnspam neural network: spamicity {sp:.3f}, threshold {threshold:.3f} "
            f"(score {scale * sp:.1f} / {scale * threshold:.1f})\r\n").encode()


class Context:
    """What a connection handler needs: the settings, the models, the allow list."""

    def __init__(self, settings: ServeSettings, models: ModelRegistry) -> None:
        self.settings = settings
        self.models = models

    def allowed(self, host: str) -> bool:
        """Is a TCP client at ``host`` in serve.allowed (loopback always is)?"""
        try:
            ip = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if getattr(ip, "ipv4_mapped", None):
            ip = ip.ipv4_mapped  # type: ignore[union-attr]
        return ip.is_loopback or any(ip in n for n in self.settings.allowed)


@dataclass
class Listener:
    """A listening socket and how to name it in the log."""

    sock: socket.socket
    where: str
    unlink: str | None = None  # a Unix socket path we created and remove at exit
    ident: tuple[int, int] | None = None  # its (st_dev, st_ino) when we bound it


def inherited_sockets() -> list[socket.socket] | None:
    """Sockets passed by systemd socket activation (``LISTEN_PID`` is this
    process, ``LISTEN_FDS`` sockets from fd 3 on), or None. The variables
    are removed so that child processes do not take them for theirs."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        n = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)
    socks = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + n):
        s = socket.socket(fileno=fd)
        os.set_inheritable(fd, False)
        socks.append(s)
    return socks or None


def _bind(st: ServeSettings) -> list[Listener]:
    """The listening sockets: systemd's when socket-activated, else ours."""
    got = inherited_sockets()
    if got is not None:
        out = []
        for s in got:
            name = s.getsockname()
            out.append(Listener(s, f"systemd:unix:{name}" if s.family == socket.AF_UNIX
                                else f"systemd:tcp:{name[0]}:{name[1]}"))
        return out
    listeners: list[Listener] = []
    try:
        if st.socket:
            listeners.append(_unix_listener(st.socket))
        if st.listen:
            fam = socket.AF_INET6 if ":" in st.listen[0] else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            listeners.append(Listener(s, ""))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(st.listen)
                s.listen(BACKLOG)
            except OSError as exc:  # EADDRINUSE: a live server has the port
                raise ServerError(f"cannot listen on tcp:{st.listen[0]}:{st.listen[1]}: "
                                  f"{exc.strerror or exc}") from None
            host, port = s.getsockname()[:2]
            listeners[-1].where = f"tcp:{host}:{port}"
    except BaseException:
        _close(listeners)
        raise
    return listeners


def _unix_listener(path: str) -> Listener:
    """Bind and listen on the Unix socket ``path``; never take it from a live server.

    The kernel refuses a second TCP listener on a port, but a Unix socket's
    file can be unlinked and bound again while its server runs on, reachable
    by nobody: spamc then delivers mail unfiltered, without an error. So an
    existing socket file is probed first: if a connection is accepted (or
    the backlog is full) a server is alive there and we refuse; only a
    socket that refuses connections (the file of a server that died) is
    removed and replaced. Any other file is refused and left alone. The
    socket's directory must exist: a mistyped path is refused rather than
    created. Probe and bind happen under an ``flock`` of the directory, so
    that two servers starting at once cannot both replace one stale socket.
    The (st_dev, st_ino) of the new socket is recorded: at exit we remove
    the file only if it is still ours (:func:`_close`). Refusals are
    :class:`ServerError` naming the socket (``nnspam serve`` exits 2, as for
    a TCP address in use)."""
    where = f"unix:{path}"
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise ServerError(f"cannot listen on {where}: the directory {directory} {what}")
    with contextlib.ExitStack() as stack:
        try:
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            pass  # no read permission on the directory: go on without the lock
        else:
            stack.callback(os.close, dfd)
            fcntl.flock(dfd, fcntl.LOCK_EX)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(mode):
                raise ServerError(f"cannot listen on {where}: the file exists and is not a "
                                  "socket")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(2.0)
                try:
                    probe.connect(path)
                except (ConnectionRefusedError, FileNotFoundError):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)  # stale: nobody listens there
                except (BlockingIOError, TimeoutError):  # backlog full: alive
                    raise ServerError(f"cannot listen on {where}: another server is answering "
                                      "there (stop it first)") from None
                except OSError as exc:
                    raise ServerError(f"cannot listen on {where}: cannot tell whether another "
                                      f"server answers there ({exc.strerror})") from None
                else:
                    raise ServerError(f"cannot listen on {where}: another server is answering "
                                      "there (stop it first)")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lst = Listener(s, where)
        try:
            s.bind(path)
            st = os.lstat(path)
            lst.unlink, lst.ident = path, (st.st_dev, st.st_ino)
            s.listen(BACKLOG)
        except OSError as exc:
            _close([lst])
            raise ServerError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    return lst


def _close(listeners: list[Listener]) -> None:
    """Close the listening sockets and remove our Unix socket files, each only
    if it is still the file we bound (same st_dev and st_ino): a socket file
    replaced meanwhile belongs to another server, which must stay reachable."""
    for lst in listeners:
        lst.sock.close()
        if lst.unlink:
            try:
                st = os.lstat(lst.unlink)
                if (st.st_dev, st.st_ino) == lst.ident:
                    os.unlink(lst.unlink)
            except OSError:
                pass


class _AcceptSelector:
    """Waits until a listening socket has a connection. On Linux with epoll's
    EPOLLEXCLUSIVE one waiting worker is woken per connection instead of all
    of them (the losers would find nothing to accept and poll again)."""

    def __init__(self, socks: list[socket.socket]) -> None:
        self.socks = {s.fileno(): s for s in socks}
        for s in socks:
            s.setblocking(False)
        self.ep: Any = None
        self.sel: selectors.BaseSelector | None = None
        if hasattr(select, "epoll") and hasattr(select, "EPOLLEXCLUSIVE"):
            self.ep = select.epoll()
            for fd in self.socks:
                self.ep.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
        else:
            self.sel = selectors.DefaultSelector()
            for s in socks:
                self.sel.register(s, selectors.EVENT_READ)

    def select(self, timeout: float) -> list[socket.socket]:
        """The sockets that are ready, after at most ``timeout`` seconds."""
        if self.ep is not None:
            return [self.socks[fd] for fd, _ in self.ep.poll(timeout)]
        assert self.sel is not None
        return [key.fileobj for key, _ in self.sel.select(timeout)]  # type: ignore[misc]

    def close(self) -> None:
        """Release the epoll/selector (the sockets stay open)."""
        (self.ep or self.sel).close()


class Worker:
    """Accepts connections on the shared listening sockets and serves them.

    One acceptor thread takes a connection only when one of the
    ``max_connections`` handler threads is free (excess clients wait in the
    kernel's listen backlog, where another worker process may take them);
    the handler serves its one request. ``stop`` ends accepting; the
    handlers finish the requests already accepted (the drain) before
    :meth:`run` returns."""

    def __init__(self, listeners: list[Listener], ctx: Context,
                 watchdog: Watchdog | None = None) -> None:
        self.listeners = listeners
        self.ctx = ctx
        self.stopping = False  # a plain flag: set from a signal handler
        # systemd's watchdog, pinged from the accept loop: only the worker that is the
        # service's main process (workers: 1) has one; forked workers do not.
        self.watchdog = watchdog

    def stop(self) -> None:
        """Stop accepting; in-flight requests finish (safe in a signal handler)."""
        self.stopping = True

    def reload(self) -> None:
        """SIGHUP: reload in a thread, so that the signal handler returns at once."""
        def go() -> None:
            try:
                self.ctx.models.reload()
                log.info("model reloaded")
            except Exception as exc:  # noqa: BLE001 - keep serving the old model
                log.error("reload failed, keeping the old model: %s", exc)
        threading.Thread(target=go, daemon=True).start()

    def run(self) -> None:
        """Serve until :meth:`stop`, then drain."""
        n = max(1, self.ctx.settings.max_connections)
        free = threading.Semaphore(n)
        jobs: queue.SimpleQueue[tuple[socket.socket, Any] | None] = queue.SimpleQueue()
        handlers = [threading.Thread(target=self._handle_loop, args=(jobs, free),
                                     name=f"nnspam-serve-{i}") for i in range(n)]
        for t in handlers:
            t.start()
        sel = _AcceptSelector([lst.sock for lst in self.listeners])
        try:
            while not self.stopping:
                if self.watchdog is not None:
                    self.watchdog.ping()  # the accept loop turns: the server is alive
                if not free.acquire(timeout=POLL):
                    continue
                taken = False
                for sock in sel.select(POLL):
                    try:
                        conn, addr = sock.accept()
                    except (BlockingIOError, InterruptedError):
                        continue  # another worker took it
                    except OSError as exc:  # EMFILE and the like: back off
                        log.error("accept failed: %s", exc)
                        time.sleep(POLL)
                        continue
                    conn.setblocking(True)
                    jobs.put((conn, addr))
                    taken = True
                    break
                if not taken:
                    free.release()
        finally:
            sel.close()
            for _ in handlers:
                jobs.put(None)
            for t in handlers:
                t.join()

    def _handle_loop(self, jobs: queue.SimpleQueue, free: threading.Semaphore) -> None:
        while (job := jobs.get()) is not None:
            conn, addr = job
            try:
                Handler(conn, addr, self.ctx)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - one connection's bug never ends the worker
                log.exception("request failed")
            finally:
                _close_conn(conn)
                free.release()


def _close_conn(conn: socket.socket) -> None:
    """Send FIN first and discard what the client already sent but we did not
    read (the rest of a refused request), so the close does not turn into a
    reset that could destroy our answer before the client has read it."""
    try:
        conn.shutdown(socket.SHUT_WR)
        for _ in range(16):
            if not conn.recv(CHUNK, socket.MSG_DONTWAIT):
                break
    except OSError:
        pass
    try:
        conn.close()
    except OSError:
        pass


def resolve_workers(n: int | None) -> int:
    """``serve.workers``: None or 0 means one per CPU core."""
    if not n:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    return max(1, int(n))


def run_server(st: ServeSettings) -> int:
    """Load the model, bind (or take systemd's sockets), then serve until
    SIGTERM/SIGINT (drain, exit 0); SIGHUP reloads the model everywhere.

    With ``workers`` > 1 this process is the supervisor of a pre-fork pool:
    it forks the workers (which share the listening sockets and, copy-on-write,
    the loaded model), restarts any that dies, forwards SIGHUP and, on
    SIGTERM, asks every worker to drain and waits for them."""
    workers = resolve_workers(st.workers)
    _limit_malloc_arenas()
    # One BLAS thread per process (nnspam.blas, as the daemon): scoring one message
    # is a 1 x n_inputs by n_inputs x hidden product, and OpenBLAS's thread hand-off
    # made it 200 times slower on a busy 2-core host (measured: 0.1 ms with one
    # thread, 20 ms with two, load average 10). The forked workers inherit it.
    one_blas_thread()
    try:
        models = ModelRegistry(st)
    except Exception as exc:  # noqa: BLE001 - any load problem is fatal at start
        raise ServerError(f"cannot load the model {st.filter.model}: {exc}") from None
    try:
        listeners = _bind(st)
    except OSError as exc:
        raise ServerError(f"cannot listen: {exc}") from None
    if not listeners:
        raise ServerError("nothing to listen on")
    ctx = Context(st, models)
    where = ", ".join(lst.where for lst in listeners)
    log.info("nnspam serve: listening on %s, model %s, %d worker%s", where, st.filter.model,
             workers, "s" if workers > 1 else "")
    print(f"nnspam serve: listening on {where}", file=sys.stderr, flush=True)
    try:
        if workers == 1:
            worker = Worker(listeners, ctx, Watchdog())
            signal.signal(signal.SIGTERM, lambda *_: worker.stop())
            signal.signal(signal.SIGINT, lambda *_: worker.stop())
            signal.signal(signal.SIGHUP, lambda *_: worker.reload())
            sd_notify("READY=1")
            worker.run()
        else:
            _Supervisor(listeners, ctx, workers).run()
    finally:
        # Stopping already: a second SIGTERM (systemd, a test's stop()) must not kill the
        # interpreter while it finalizes, when Python's own handlers are gone and the
        # default action would end the process with -15. SIG_IGN survives finalization.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sd_notify("STOPPING=1")
        _close(listeners)
    log.info("nnspam serve: stopped")
    return 0


class _Supervisor:
    """The parent of the pre-fork pool (see :func:`run_server`)."""

    def __init__(self, listeners: list[Listener], ctx: Context, n: int) -> None:
        self.listeners = listeners
        self.ctx = ctx
        self.n = n
        self.children: dict[int, float] = {}  # pid -> start time
        self.stopping = False
        self.hup = False

    def _spawn(self) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                worker = Worker(self.listeners, self.ctx)
                signal.signal(signal.SIGTERM, lambda *_: worker.stop())
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides
                signal.signal(signal.SIGHUP, lambda *_: worker.reload())
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                worker.run()
            except BaseException:  # noqa: BLE001 - report, then leave without cleanup
                log.exception("worker failed")
                code = EX_SOFTWARE
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = time.monotonic()

    def _stop(self, *_: Any) -> None:
        self.stopping = True

    def _hup(self, *_: Any) -> None:
        self.hup = True

    def run(self) -> None:
        """Fork the workers, keep them running, then drain them."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._hup)
        for _ in range(self.n):
            self._spawn()
        sd_notify("READY=1")
        watchdog = Watchdog()
        fast_deaths: list[float] = []
        while not self.stopping:
            time.sleep(POLL)
            # Alive while it supervises: a worker that dies or hangs in a crash loop is
            # the supervisor's to replace; a supervisor that stops turning is systemd's.
            watchdog.ping()
            if self.hup:
                self.hup = False
                log.info("SIGHUP: reloading the model in every worker")
                for pid in self.children:
                    _kill(pid, signal.SIGHUP)
            while self.children:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                started = self.children.pop(pid, None)
                if started is None:
                    continue
                log.error("worker %d ended (%s); starting another", pid, _status(status))
                now = time.monotonic()
                fast_deaths = [t for t in fast_deaths if now - t < 10] + [now]
                if len(fast_deaths) > 3 * self.n:  # crashing at once: do not spin
                    time.sleep(1.0)
                if not self.stopping:
                    self._spawn()
        sd_notify("STOPPING=1")
        for pid in self.children:
            _kill(pid, signal.SIGTERM)
        for pid in list(self.children):
            while True:
                try:
                    os.waitpid(pid, 0)
                    break
                except ChildProcessError:
                    break
                except InterruptedError:
                    continue


def _limit_malloc_arenas(n: int = 2) -> None:
    """glibc gives threads their own malloc arenas (up to 8 per core); with
    ``max_connections`` handler threads each arena keeps its own freed
    memory, and a worker's resident set grew by about 75 MB over 4,000
    hostile requests (measured; 20 MB with two arenas). Called before any
    thread exists; a no-op without glibc."""
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(-8, n)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit {os.waitstatus_to_exitcode(status)}"
