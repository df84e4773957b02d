"""A small SPAMC/SPAMD protocol client, and ``nnspam filter``'s fast path
through a running scoring server (``nnspam serve``).

Why: a pipe filter runs once per delivered message, and a fresh Python
process that imports NumPy and loads the model costs hundreds of
milliseconds; a running ``nnspam serve`` answers in a few. So when
``filter.server`` (or ``--server``) names a server, ``nnspam filter`` sends
the message there with a ``PROCESS`` request and writes what comes back.
This module imports only the standard library and the filter's own lean
modules (``nnspam.services.delivery.pipefilter``, ``nnspam.services.scoring``,
``nnspam.mail.headers``); never NumPy.

The output is the same either way. The server runs the same
:func:`nnspam.services.scoring.classify` as the filter; the answer is used only
if it is exactly the input with one ``X-NNSpam-Status`` (and, for spam,
``X-NNSpam-Flag: YES``) field inserted by the filter's own header code, with
the filter's threshold and nnspam version, and with ``Spam: True|False``
agreeing with it; with ``filter.words`` > 0 also an ``X-NNSpam-Words`` field
of at most that many words (the server's, which must be configured alike),
and without it none. Anything else - no server configured, connection refused,
timeout (``filter.server_timeout`` for the whole exchange), an error code, a
malformed or inconsistent answer, a message the server passed through
unclassified - and the message is classified in-process as if no server
were configured. Messages over ``filter.max_size`` never go to the server:
they take the in-process path, which passes them through unclassified
without loading the model. An explicit ``-m MODEL`` without ``--server``
also classifies in-process, since a server cannot be told which model to use.

Exit codes are the in-process filter's: with ``--verdict-exit`` 0 spam, 1
ham, 2 unsure, 3 error. The verdict is read from the returned status field
(its spamicity has three decimals); when an unsure band is configured and
that rounded spamicity is too close to an edge of the band to tell which
side it is on, the message is classified in-process instead.

Addresses: a path (containing ``/``) is a Unix socket; ``HOST:PORT`` (or
``[V6]:PORT``) is TCP. Several comma-separated addresses are tried in order,
as ``spamc -d host1,host2`` does.
"""

from __future__ import annotations

import io
import os
import re
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from nnspam import __version__
from nnspam.mail.headers import set_header_fields, tag_subject
from nnspam.services import scoring
from nnspam.services.delivery import pipefilter
from nnspam.services.verdict import HAM, SPAM, UNSURE, sa_points, sa_threshold
from nnspam.services.verdict import verdict as verdict_of

__all__ = ["SpamcError", "Reply", "parse_addresses", "request", "process", "tell", "ping",
           "via_server", "run", "main"]

MAX_HEAD = 65536  # longest response head (status line and header lines) accepted


class SpamcError(Exception):
    """The server could not be reached or gave an unusable answer."""


@dataclass
class Reply:
    """A spamd response: ``code`` (0 = EX_OK), ``message`` of the status line,
    ``headers`` (lower-case names), ``body``; from a ``Spam:`` header,
    ``spam`` (True/False), ``score`` and ``threshold`` (None without one)."""

    code: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    spam: bool | None = None
    score: float | None = None
    threshold: float | None = None


def parse_addresses(value: str | Sequence[str] | None) -> list[tuple[int, Any]]:
    """``"/run/nnspam/nnspam.sock"``, ``"127.0.0.1:783"``, ``"[::1]:783"``, a
    comma-separated string of them, or a list: (address family, socket
    address) pairs in order. ``None``, ``""`` and ``"none"`` give ``[]``.
    Raises ValueError for an address that is neither a path nor HOST:PORT."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[tuple[int, Any]] = []
    for item in (str(i).strip() for i in items):
        if not item or item.lower() == "none":
            continue
        if "/" in item:
            out.append((socket.AF_UNIX, os.path.expanduser(item)))
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"server address {item!r} is neither a socket path nor HOST:PORT")
        v6 = host.startswith("[") and host.endswith("]")
        out.append((socket.AF_INET6 if v6 else socket.AF_INET,
                    (host[1:-1] if v6 else host, int(port))))
    return out


def _connect(family: int, addr: Any, deadline: float) -> socket.socket:
    if family == socket.AF_UNIX:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(max(0.001, deadline - time.monotonic()))
            s.connect(addr)
        except BaseException:
            s.close()
            raise
        return s
    return socket.create_connection(addr, timeout=max(0.001, deadline - time.monotonic()))


_SPAM = re.compile(r"(True|False|Yes|No)\s*;\s*(-?[0-9.]+)\s*/\s*(-?[0-9.]+)\s*$", re.I)


def _parse(data: bytes) -> Reply:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        # PING's answer and error answers are a status line alone.
        head, body = data.rstrip(b"\r\n"), b""
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or not status[0].startswith(b"SPAMD/") or not status[1].isdigit():
        raise SpamcError(f"not a spamd answer: {lines[0][:60]!r}")
    rep = Reply(int(status[1]), status[2].decode("latin-1") if len(status) > 2 else "")
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise SpamcError(f"bad header line in the answer: {line[:60]!r}")
        rep.headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    if "content-length" in rep.headers:
        cl = rep.headers["content-length"]
        if not cl.isdigit() or int(cl) != len(body):
            raise SpamcError(f"answer body is {len(body)} bytes, Content-length says {cl}")
    elif body:
        raise SpamcError("answer has a body but no Content-length")
    rep.body = body
    if "spam" in rep.headers:
        m = _SPAM.match(rep.headers["spam"])
        if not m:
            raise SpamcError(f"bad Spam: header {rep.headers['spam'][:60]!r}")
        rep.spam = m.group(1).lower() in ("true", "yes")
        rep.score, rep.threshold = float(m.group(2)), float(m.group(3))
    return rep


def request(addr: tuple[int, Any], verb: str, body: bytes | None = None,
            headers: Sequence[tuple[str, str]] = (), timeout: float = 5.0,
            max_answer: int | None = None) -> Reply:
    """One request/response exchange (``VERB SPAMC/1.5``) with the server at
    ``addr`` (an item of :func:`parse_addresses`). ``timeout`` bounds the
    whole exchange, connect included. ``max_answer`` bounds the answer's size
    (default: the body's size plus 64 KiB). Raises :class:`SpamcError` on
    any failure; a non-zero spamd code is returned in :attr:`Reply.code`."""
    deadline = time.monotonic() + timeout
    lines = [f"{verb} SPAMC/1.5"]
    if body is not None:
        lines.append(f"Content-length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in headers]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + (body or b"")
    limit = max_answer if max_answer is not None else len(body or b"") + MAX_HEAD
    try:
        with _connect(addr[0], addr[1], deadline) as s:
            s.settimeout(max(0.001, deadline - time.monotonic()))
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            parts: list[bytes] = []
            have = 0
            while True:
                s.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = s.recv(65536)
                if not chunk:
                    break
                parts.append(chunk)
                have += len(chunk)
                if have > limit:
                    raise SpamcError(f"answer longer than {limit} bytes")
    except OSError as exc:  # refused, no such socket, timeout, reset
        raise SpamcError(f"{exc.__class__.__name__}: {exc}") from None
    if not parts:
        raise SpamcError("the server closed the connection without an answer")
    return _parse(b"".join(parts))


def _user() -> str:
    """The invoking user's name, as spamc sends it in ``User:``."""
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return os.environ.get("USER", "nobody")


def process(addr: tuple[int, Any], raw: bytes, user: str | None = None,
            timeout: float = 5.0) -> Reply:
    """``PROCESS``: the message back with the server's headers added."""
    hdrs = [("User", user)] if user else []
    return request(addr, "PROCESS", raw, hdrs, timeout)


def tell(addr: tuple[int, Any], raw: bytes, label: str, user: str | None = None,
         timeout: float = 60.0) -> Reply:
    """``TELL`` (what ``spamc -L spam|ham`` sends): learn ``raw`` as ``label``."""
    hdrs = [("Message-class", label), ("Set", "local")] + ([("User", user)] if user else [])
    return request(addr, "TELL", raw, hdrs, timeout)


def ping(addr: tuple[int, Any], timeout: float = 5.0) -> bool:
    """Does a spamd-protocol server answer PONG at ``addr``?"""
    try:
        return request(addr, "PING", None, (), timeout).message.startswith("PONG")
    except SpamcError:
        return False


# -- nnspam filter through the server ------------------------------------------------

_STATUS = re.compile(rb"(?:^|\n)X-NNSpam-Status: ((Yes|No|Unsure), spamicity=([01]\.[0-9]{3}), "
                     rb"threshold=([01]\.[0-9]{3}), version=([!-~]+))\r?\n")
_SA_STATUS = re.compile(rb"(?:^|\n)X-Spam-Status: ((Yes|No), score=([0-9]+\.[0-9]) "
                        rb"required=([0-9]+\.[0-9]) tests=NNSPAM_(?:SPAM|HAM) autolearn=no "
                        rb"version=nnspam-([!-~]+))\r?\n")
_SA_LEVEL = re.compile(rb"(?:^|\n)X-Spam-Level: (\**)\r?\n")
_WORDS = re.compile(rb"(?:^|\n)X-NNSpam-Words: ([ -~]+)\r?\n")


def via_server(raw: bytes, addrs: Sequence[tuple[int, Any]], settings: scoring.FilterSettings,
               timeout: float, user: str | None = None,
               log: Any = None) -> tuple[bytes, str] | None:
    """(output, verdict) for ``raw`` from the first server that gives an
    answer identical to what the in-process filter would write (see the
    module docstring), or None: then classify in-process."""
    for addr in addrs:
        try:
            rep = process(addr, raw, user, timeout)
        except SpamcError as exc:
            if log is not None:
                log(f"nnspam filter: server {addr[1]}: {exc}")
            continue
        got = _check(raw, rep, settings)
        if got is not None:
            return got
        if log is not None:
            log(f"nnspam filter: server {addr[1]}: answer not usable "
                f"(code {rep.code} {rep.message[:60]})")
    return None


def _check(raw: bytes, rep: Reply, s: scoring.FilterSettings) -> tuple[bytes, str] | None:
    if rep.code != 0 or rep.spam is None or "content-length" not in rep.headers:
        return None
    m = _STATUS.search(rep.body)
    if m is None:
        return None
    value, word, sp_s, thr_s, ver = (g.decode("ascii") for g in m.groups())
    if thr_s != f"{s.threshold:.3f}" or ver != __version__:
        return None
    sp = float(sp_s)
    if s.unsure is not None:
        lo, hi = s.unsure
        if min(abs(sp - lo), abs(sp - hi)) <= 0.0005 + 1e-9:
            return None  # rounded to 3 decimals: cannot tell the side of the edge
    # The word the in-process filter would write: Yes/No by the server's unrounded score
    # (its Spam: line), Unsure inside our band. A server with another band disagrees.
    inside = s.unsure is not None and verdict_of(sp, s.threshold, s.unsure) == UNSURE
    if word != ("Unsure" if inside else "Yes" if rep.spam else "No"):
        return None
    fields = [(scoring.STATUS, value)] + ([(scoring.FLAG, "YES")] if word == "Yes" else [])
    if s.words > 0:  # the server's X-NNSpam-Words, of at most filter.words words
        w = _WORDS.search(rep.body)
        if w is None or w.group(1).count(b"), ") >= s.words:
            return None
        fields.append((scoring.WORDS, w.group(1).decode("ascii")))
    want = scoring.mark(raw, fields)
    if s.spamassassin is not None:  # SpamAssassin's fields, from the unrounded score:
        sa, level = _SA_STATUS.search(rep.body), _SA_LEVEL.search(rep.body)
        if sa is None or level is None:  # checked against ours, then taken as they are
            return None
        sa_value, yes, score, need, ver = (g.decode("ascii") for g in sa.groups())
        stars = len(level.group(1))
        scale = s.spamassassin
        sa_t = sa_threshold(s.threshold, s.unsure)
        # the points of the spamicity the status field gives (3 decimals: +-0.0005)
        lo, hi = (sa_points(min(max(sp + d, 0.0), 1.0), sa_t, scale, s.score_mode)
                  for d in (-0.0006, 0.0006))
        pts = float(score)
        if ((yes == "Yes") != rep.spam or ver != __version__
                or need != f"{scale * sa_t:.1f}"
                or not lo - 0.051 <= pts <= hi + 0.051
                or stars not in (min(max(int(pts), 0), 50), min(max(int(pts - 0.05), 0), 50))):
            return None
        sa_fields = ([("X-Spam-Flag", "YES")] if yes == "Yes" else []) + [
            ("X-Spam-Status", sa_value), ("X-Spam-Level", "*" * stars)]
        want = set_header_fields(want, sa_fields, scoring.SA_FIELDS)
    if s.rewrite_subject and word == "Yes":  # as the in-process filter tags a spam
        want = tag_subject(want, s.rewrite_subject)
    if want != rep.body:
        return None
    verdict = UNSURE if word == "Unsure" else SPAM if word == "Yes" else HAM
    return rep.body, verdict


class _Prefixed:
    """Bytes already read, then the rest of a stream: hands the in-process
    filter a message whose first bytes this module has consumed."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self.head, self.rest = head, rest

    def read(self, n: int = -1) -> bytes:
        if self.head:
            k = len(self.head) if n is None or n < 0 else n
            out, self.head = self.head[:k], self.head[k:]
            return out
        return self.rest.read(n)


def build_parser() -> Any:
    """``nnspam filter``'s parser with the ``--server`` option added."""
    p = pipefilter.build_parser()
    add_arguments(p)
    return p


def add_arguments(p: Any) -> None:
    """The server option of ``nnspam filter`` (also used by ``nnspam --help``)."""
    p.add_argument("--server", metavar="ADDR",
                   help="classify through this nnspam serve (socket path or HOST:PORT, "
                   "comma-separated to fail over; 'none' = in-process); default: the "
                   "filter.server setting. Falls back to in-process if it does not answer")


def run(args: Any, inp: BinaryIO | None = None, out: BinaryIO | None = None) -> int:
    """``nnspam filter`` with parsed arguments: through the server when one is
    configured and answers, else :func:`nnspam.services.delivery.pipefilter.run` (in-process)."""
    inp = inp if inp is not None else sys.stdin.buffer
    out = out if out is not None else sys.stdout.buffer

    def log(msg: str) -> None:
        try:
            print(msg, file=sys.stderr, flush=True)
        except OSError:
            pass

    server = getattr(args, "server", None)
    try:
        from nnspam.config import load_config

        cfg = load_config(args.config)
        settings = scoring.settings(cfg, args.model)
        if server is None and args.model is not None:
            server = "none"  # -m names a model the configured server may not serve
        addrs = parse_addresses(server if server is not None else cfg["filter"]["server"])
        timeout = float(cfg["filter"]["server_timeout"])
    except ValueError as exc:  # a bad server address: say so, classify in-process
        log(f"nnspam filter: {exc}; classifying in-process")
        addrs = []
    except Exception:  # noqa: BLE001 - the in-process path reports config errors itself
        addrs = []
    if not addrs:
        return pipefilter.run(args, inp, out)
    try:
        raw = pipefilter.read_upto(inp, settings.max_size)
    except OSError as exc:
        log(f"nnspam filter: cannot read the input ({exc}); exit {pipefilter.EX_TEMPFAIL}")
        return pipefilter.EX_TEMPFAIL
    if len(raw) > settings.max_size:
        return pipefilter.run(args, _Prefixed(raw, inp), out)
    got = via_server(raw, addrs, settings, timeout, _user(), log)
    if got is None:
        return pipefilter.run(args, io.BytesIO(raw), out)
    output, verdict = got
    del raw
    try:
        out.write(output)
        out.flush()
    except OSError as exc:
        log(f"nnspam filter: cannot write the output ({exc}); exit {pipefilter.EX_TEMPFAIL}")
        pipefilter.quiet_stdout()
        return pipefilter.EX_TEMPFAIL
    if args.verdict_exit:
        return pipefilter.VERDICT_EXIT[verdict]
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``nnspam filter ...`` (called by :func:`nnspam.front.cli.main` before the rest
    of the command line is built, to keep start-up cheap)."""
    return run(build_parser().parse_args(argv))
