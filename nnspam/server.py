"""``nnspam serve``: a scoring server that speaks SpamAssassin's SPAMC/SPAMD
protocol, so that ``spamc`` (and everything built on it: procmail and
maildrop recipes, Exim's ``spam =`` condition, spamass-milter, IMAPSieve
learning with ``spamc -L``) uses nnspam without a Python start per message.

Protocol (spamd/PROTOCOL of SpamAssassin): a request is ``VERB SPAMC/1.x``,
header lines ``Name: value``, an empty line and ``Content-length`` bytes of
body. Verbs: PING, CHECK, SYMBOLS, REPORT, REPORT_IFSPAM, HEADERS, PROCESS,
TELL and SKIP. Request headers: ``Content-length``, ``User`` (accepted; one
site model serves every user for now), ``Compress: zlib`` (``spamc -z``),
``Message-class``, ``Set`` and ``Remove`` (TELL).

Score mapping: spamd reports ``score / threshold`` in points. nnspam reports
``score = 10 * spamicity`` and ``threshold = 10 * threshold`` (both with one
decimal, as spamd), so the shipped threshold 0.5 is ``5.0`` exactly as in
SpamAssassin and ``spamc -c`` prints e.g. ``9.7/5.0`` and exits 1 for spam,
0 for ham. The ``True``/``False`` verdict is taken from the unrounded
spamicity (``spamicity >= threshold``), as the X-NNSpam headers are.

PROCESS and HEADERS return exactly what ``nnspam filter`` writes: the same
:func:`nnspam.pipefilter.classify` inserts the X-NNSpam headers into the raw
bytes. Messages over ``serve.max_size`` come back unchanged and unclassified
(spamd semantics; ``Spam: False ; 0.0 / 5.0``).

TELL with ``Message-class: spam|ham`` and ``Set: local`` learns through
:func:`nnspam.training.learn` (the correction path of ``nnspam learn`` and
the daemon) and saves the model atomically; ``Remove: local`` (``spamc -L
forget``) is answered EX_UNAVAILABLE: a network cannot unlearn one message.

Errors are answered ``SPAMD/1.5 CODE MESSAGE`` with sysexits codes:
64 EX_USAGE (unknown verb), 65 EX_DATAERR (bad body: broken zlib, too big
after decompression, bad TELL class), 76 EX_PROTOCOL (malformed request
line or header, missing or wrong Content-length, truncated body), 69
EX_UNAVAILABLE (Remove), 77 EX_NOPERM (TELL on the read-only shipped model),
74 EX_IOERR (the model could not be saved), 70 EX_SOFTWARE (anything else).
A client that says nothing for ``serve.timeout`` seconds is disconnected.

Signals: SIGTERM and SIGINT stop accepting, let in-flight requests finish and
exit 0; SIGHUP reloads the model from disk.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import socketserver
import stat
import sys
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nnspam.pipefilter import Result, Settings, _settings, classify

__all__ = ["ServeSettings", "ServerError", "ScoringServer", "serve_settings", "run_server",
           "score_line", "EX_OK", "EX_USAGE", "EX_DATAERR", "EX_UNAVAILABLE", "EX_SOFTWARE",
           "EX_IOERR", "EX_PROTOCOL", "EX_NOPERM"]

log = logging.getLogger("nnspam.serve")

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_IOERR = 74
EX_PROTOCOL = 76
EX_NOPERM = 77

PROTO = b"SPAMD/1.5"
VERBS = {"PING", "CHECK", "SYMBOLS", "REPORT", "REPORT_IFSPAM", "HEADERS", "PROCESS", "TELL",
         "SKIP"}
MAX_LINE = 8192  # longest request or header line
MAX_HEADERS = 64  # most header lines in one request
CHUNK = 1 << 16


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
    learn_epochs: int = 3


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ServerError(f"listen address {value!r} is not HOST:PORT")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def serve_settings(cfg: dict[str, Any], model: str | None = None, sock: str | None = None,
                   listen: str | None = None, allow: Sequence[str] | None = None) -> ServeSettings:
    """Settings from the config; ``--socket``/``--listen`` given on the command
    line replace both configured listeners, ``--allow`` the allow list."""
    s = cfg["serve"]
    if sock is not None or listen is not None:
        sock_path, listen_s = sock, listen
    else:
        sock_path, listen_s = s["socket"], s["listen"]
    if sock_path is None and listen_s is None:
        raise ServerError("nothing to listen on: give --socket PATH and/or --listen HOST:PORT")
    try:
        allowed = [ipaddress.ip_network(a, strict=False)
                   for a in (allow if allow is not None else s["allowed"])]
    except ValueError as exc:
        raise ServerError(f"serve.allowed: {exc}") from None
    addr = _parse_listen(listen_s) if listen_s is not None else None
    if addr is not None:
        try:
            ip = ipaddress.ip_address(addr[0])
        except ValueError:
            raise ServerError(f"listen address {addr[0]!r} must be an IP address") from None
        if not ip.is_loopback and not any(not n.network_address.is_loopback for n in allowed):
            raise ServerError(f"listening on {ip} (not loopback) needs an explicit allow list of "
                              "client networks (serve.allowed or --allow)")
    try:
        f = _settings(cfg, model)
    except ValueError as exc:
        raise ServerError(str(exc)) from None
    return ServeSettings(f, os.path.expanduser(sock_path) if sock_path else None, addr, allowed,
                         int(s["max_size"]), float(s["timeout"]), float(s["score_scale"]),
                         int(s["learn_epochs"]))


def score_line(spamicity: float | None, threshold: float, scale: float) -> bytes:
    """The ``Spam:`` response header: ``True ; 9.7 / 5.0`` (see the module
    docstring for the mapping); an unclassified message is ``False ; 0.0``."""
    spam = spamicity is not None and spamicity >= threshold
    pts = 0.0 if spamicity is None else scale * spamicity
    return f"Spam: {'True' if spam else 'False'} ; {pts:.1f} / {scale * threshold:.1f}".encode()


class ModelHolder:
    """The loaded model behind a lock: scoring, learning and reloading take turns."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        self.model = self._load()

    def _load(self) -> Any:
        from nnspam.model import Model

        return Model.load(self.settings.filter.model)

    def reload(self) -> None:
        """Load the model from disk again (SIGHUP)."""
        model = self._load()
        with self.lock:
            self.model = model

    def classify(self, raw: bytes) -> Result:
        """Exactly the classification ``nnspam filter`` makes."""
        from nnspam.model import spamicity

        f = self.settings.filter
        with self.lock:
            model = self.model

            def score(data: bytes) -> float:
                return float(spamicity(model.outputs([model.tokens(data)]), f.ham_factor,
                                       f.spam_factor)[0])
            return classify(raw, score, f.threshold, f.unsure)

    def learn(self, raw: bytes, label: str) -> None:
        """Learn one message and save the model atomically."""
        from nnspam.model import resolve_model_path
        from nnspam.training import learn

        name = self.settings.filter.model
        if str(name).startswith("default"):
            raise RequestError(EX_NOPERM, "the shipped model is read-only; serve a model "
                               "directory (-m DIR) to learn")
        with self.lock:
            learn(self.model, [raw], label, epochs=self.settings.learn_epochs)
            try:
                self.model.save(resolve_model_path(name))
            except OSError as exc:
                raise RequestError(EX_IOERR, f"cannot save the model: {exc}") from None


class Handler(socketserver.StreamRequestHandler):
    """One connection, one request (as spamd)."""

    server: ScoringServer

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
        if cl is None or not cl.isdigit():
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
        res = self.server.models.classify(body)
        if res.error is not None:
            log.error("classification failed, message passed through: %s", res.error)
        self._answer(verb, body, res.output, res.spamicity)

    def _answer(self, verb: str, original: bytes, marked: bytes, sp: float | None) -> None:
        st = self.server.settings
        f = st.filter
        spam_line = score_line(sp, f.threshold, st.score_scale)
        is_spam = sp is not None and sp >= f.threshold
        if verb == "CHECK":
            self._send(PROTO + b" 0 EX_OK\r\n" + spam_line + b"\r\n\r\n")
            return
        if verb == "PROCESS":
            out = marked
        elif verb == "HEADERS":
            out = _head_of(marked)
        elif verb == "SYMBOLS":
            out = b"NNSPAM_SPAM" if is_spam else (b"NNSPAM_HAM" if sp is not None else b"")
        elif verb == "REPORT" or (verb == "REPORT_IFSPAM" and is_spam):
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
        self.server.models.learn(body, label)
        log.info("learned one message as %s (user %s)", label, headers.get("user", "-"))
        self._send(PROTO + b" 0 EX_OK\r\nDidSet: local\r\n\r\n")


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


class ScoringServer(socketserver.ThreadingMixIn, socketserver.BaseServer):
    """Marker base: the listening classes below add the socket family."""

    settings: ServeSettings
    models: ModelHolder
    daemon_threads = False
    block_on_close = True

    def allowed(self, host: str) -> bool:
        """Is a TCP client at ``host`` in serve.allowed (loopback always is)?"""
        try:
            ip = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if getattr(ip, "ipv4_mapped", None):
            ip = ip.ipv4_mapped  # type: ignore[union-attr]
        return ip.is_loopback or any(ip in n for n in self.settings.allowed)


class _TCPServer(ScoringServer, socketserver.TCPServer):
    allow_reuse_address = True


class _TCP6Server(_TCPServer):
    address_family = socket.AF_INET6


class _UnixServer(ScoringServer, socketserver.UnixStreamServer):
    pass


def _make_servers(st: ServeSettings, models: ModelHolder) -> list[ScoringServer]:
    servers: list[ScoringServer] = []
    if st.socket:
        try:
            if stat.S_ISSOCK(os.lstat(st.socket).st_mode):
                os.unlink(st.socket)  # a stale socket of an earlier run
        except FileNotFoundError:
            pass
        os.makedirs(os.path.dirname(os.path.abspath(st.socket)), exist_ok=True)
        servers.append(_UnixServer(st.socket, Handler))
    if st.listen:
        cls = _TCP6Server if ":" in st.listen[0] else _TCPServer
        servers.append(cls(st.listen, Handler))
    for s in servers:
        s.settings, s.models = st, models
    return servers


def run_server(st: ServeSettings, ready: Any = None) -> int:
    """Serve until SIGTERM/SIGINT (drain, exit 0); SIGHUP reloads the model."""
    try:
        models = ModelHolder(st)
    except Exception as exc:  # noqa: BLE001 - any load problem is fatal at start
        raise ServerError(f"cannot load the model {st.filter.model}: {exc}") from None
    try:
        servers = _make_servers(st, models)
    except OSError as exc:
        raise ServerError(f"cannot listen: {exc}") from None
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2},
                                daemon=True) for s in servers]
    for t in threads:
        t.start()
    stop = threading.Event()

    def on_term(signum: int, frame: Any) -> None:
        stop.set()

    def on_hup(signum: int, frame: Any) -> None:
        def reload() -> None:
            try:
                models.reload()
                log.info("model reloaded")
            except Exception as exc:  # noqa: BLE001 - keep serving the old model
                log.error("reload failed, keeping the old model: %s", exc)
        threading.Thread(target=reload, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    where = [f"unix:{st.socket}"] if st.socket else []
    for s in servers:
        if isinstance(s, socketserver.TCPServer) and not isinstance(s, _UnixServer):
            host, port = s.server_address[:2]
            where.append(f"tcp:{host}:{port}")
    log.info("nnspam serve: listening on %s, model %s", ", ".join(where), st.filter.model)
    print("nnspam serve: listening on " + ", ".join(where), file=sys.stderr, flush=True)
    _sd_notify(b"READY=1")
    if ready is not None:
        ready(servers)
    while not stop.wait(0.5):
        pass
    _sd_notify(b"STOPPING=1")
    for s in servers:
        s.shutdown()
    for s in servers:
        s.server_close()  # joins the request threads: in-flight requests finish
    if st.socket:
        try:
            os.unlink(st.socket)
        except OSError:
            pass
    log.info("nnspam serve: stopped")
    return 0


def _sd_notify(msg: bytes) -> None:
    """systemd's notify protocol (Type=notify), when NOTIFY_SOCKET is set."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(msg, addr)
    except OSError:
        pass
