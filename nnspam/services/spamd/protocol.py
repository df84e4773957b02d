"""The SPAMC/SPAMD protocol of ``nnspam serve``: one request per connection,
answered as SpamAssassin's spamd answers it.

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
:func:`nnspam.services.scoring.classify` inserts the X-NNSpam headers into the raw
bytes. Messages over ``serve.max_size`` come back unchanged and unclassified
(spamd semantics; ``Spam: False ; 0.0 / 5.0``). With
``serve.spamassassin_headers`` they also carry SpamAssassin's ``X-Spam-Flag``
and ``X-Spam-Status`` (:func:`spamassassin_fields`), which spamass-milter
needs: it copies only those fields from spamc's answer.

SYMBOLS answers ``NNSPAM_SPAM`` or ``NNSPAM_HAM`` and one symbol per word that moved the
spamicity most (``NNSPAM_SPAMMY_CLICK``, ``NNSPAM_HAMMY_WROTE``); REPORT a summary
line and SpamAssassin's report table of the same words (``spamc -R``): ``filter.words``
of them, 10 when that is 0 (:mod:`nnspam.services.explanation`).

TELL with ``Message-class: spam|ham`` and ``Set: local`` learns through
:func:`nnspam.model.correct.correct` (the one correction routine of ``nnspam learn`` and
the daemon) and saves the model atomically; ``Remove: local`` (``spamc -L
forget``) undoes an earlier lesson of the message through the model's correction
journal (:func:`nnspam.model.correct.forget`) and answers ``DidRemove: local`` when
the journal held it.
Learning goes through the one model writer (:mod:`nnspam.model.writer`, shared with
the daemon, ``nnspam learn`` and the SMS store): it holds an exclusive
``flock`` on ``<model dir>.lock`` and starts from the model as last saved, so
concurrent TELLs in different workers, and the corrections of a daemon or
``nnspam learn`` on the same model, all count.

Errors are answered ``SPAMD/1.5 CODE MESSAGE`` with sysexits codes:
64 EX_USAGE (unknown verb), 65 EX_DATAERR (bad body: broken zlib, too big
after decompression, bad TELL class, ``Set: remote``), 76 EX_PROTOCOL (malformed
request line or header, missing or wrong Content-length, truncated body), 77
EX_NOPERM (TELL on the read-only shipped model),
74 EX_IOERR (the model could not be saved), 67 EX_NOUSER (a user name refused
for serve.user_model), 69 EX_UNAVAILABLE (TELL without ``serve.allow_tell``), 73
EX_CANTCREAT (a user model that cannot be created), 75 EX_TEMPFAIL (a TELL while the
model store of a fleet is unreachable: ``store:``, :mod:`nnspam.services.models.fleet`; a TELL
whose model stayed locked until the request's deadline; a client's slow connection
beyond ``serve.max_per_client``; a worker holding too many large messages at once),
65 EX_DATAERR also for a message over ``serve.max_request``, answered before its body
is read.

This module is the protocol alone, no sockets: :func:`read_head` and :func:`check_head`
turn a request's lines into a :class:`Request` (or a :class:`RequestError`), and
:func:`respond` turns a whole request into the answer's bytes. Reading a request under
its deadline, the per-client limits and writing the answer are
:mod:`nnspam.services.spamd.server`'s.

Who may teach (issue 22): TELL is refused with 69 EX_UNAVAILABLE unless the server
runs with ``serve.allow_tell`` (``--allow-tell``, as spamd's), and then with 77
EX_NOPERM to a TCP client outside ``serve.tell_allowed`` (loopback by default; a Unix
socket's clients are whoever its file mode admits). Learning the same message as the
same class again is not done twice (its model's correction journal already has it):
the answer then lacks ``DidSet``, and spamc says the message was already learned, as
with SpamAssassin; so a client that retries a TELL teaches it once. A TELL that does
not get its model's writer lock before the request's deadline learns nothing and is
answered 75 EX_TEMPFAIL.
"""

from __future__ import annotations

import ipaddress
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from nnspam.mail.headers import set_header_fields
from nnspam.services import metrics
from nnspam.services.errors import (
    EX_DATAERR,
    EX_NOPERM,
    EX_PROTOCOL,
    EX_UNAVAILABLE,
    EX_USAGE,
    RequestError,
)
from nnspam.services.explanation import REPORT_WORDS, TopWords, report_table, symbols
from nnspam.services.models.serve_settings import ServeSettings
from nnspam.services.scoring import SA_FIELDS, Result
from nnspam.services.scoring import spamassassin_fields as sa_fields
from nnspam.services.verdict import is_spam, sa_points, sa_threshold
from nnspam.services.verdict import verdict as verdict_of

__all__ = ["Context", "Models", "Request", "check_head", "error_answer", "read_head",
           "respond", "score_line", "spamassassin_fields", "PROTO", "CHUNK"]

log = logging.getLogger("nnspam.serve")

PROTO = b"SPAMD/1.5"
VERBS = {"PING", "CHECK", "SYMBOLS", "REPORT", "REPORT_IFSPAM", "HEADERS", "PROCESS", "TELL",
         "SKIP"}
MAX_LINE = 8192  # longest request or header line
MAX_HEADERS = 64  # most header lines in one request
CHUNK = 1 << 16


class Models(Protocol):
    """What a handler scores and learns with
    (:class:`nnspam.services.models.registry.ModelRegistry`)."""

    def classify(self, raw: bytes, user: str | None = None, words: int = 0) -> Result: ...

    def learn(self, raw: bytes, label: str, user: str | None = None,
              deadline: float | None = None) -> tuple[bool, Path]: ...

    def forget(self, raw: bytes, user: str | None = None,
               deadline: float | None = None) -> tuple[bool, Path]: ...

    def reload(self) -> None: ...  # SIGHUP: load the models again

    # hooks of each worker process as it starts and stops serving (a server calls
    # neither when a models object lacks start_background)
    def start_background(self) -> None: ...

    def stop_background(self) -> None: ...


class Context:
    """What a connection handler needs: the settings, the models, the allow list."""

    def __init__(self, settings: ServeSettings, models: Models) -> None:
        self.settings = settings
        self.models = models

    def allowed(self, host: str) -> bool:
        """Is a TCP client at ``host`` in serve.allowed (loopback always is)?"""
        try:
            ip = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback or any(ip in n for n in self.settings.allowed)

    def check_tell(self, peer: str | None) -> None:
        """Refuse a TELL unless ``serve.allow_tell`` is on and the client (its TCP
        address; None: a Unix socket's client) is in ``serve.tell_allowed``: who may
        teach a model is configured, not assumed (spamd's ``--allow-tell``)."""
        st = self.settings
        if not st.allow_tell:
            raise RequestError(EX_UNAVAILABLE, "TELL commands have not been enabled "
                               "(serve.allow_tell)")
        if peer is None:
            return
        try:
            ip = ipaddress.ip_address(peer.split("%")[0])
        except ValueError:
            ip = None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip is None or not any(ip in n for n in st.tell_allowed):
            log.warning("TELL from %s refused: not in serve.tell_allowed", peer)
            raise RequestError(EX_NOPERM, "TELL not allowed from this client "
                               "(serve.tell_allowed)")


def score_line(spamicity: float | None, threshold: float, scale: float,
               mode: str = "spamicity") -> bytes:
    """The ``Spam:`` response header: ``True ; 9.7 / 5.0`` (points by
    :func:`nnspam.services.verdict.sa_points`); an unclassified message is ``False ; 0.0``."""
    spam = spamicity is not None and is_spam(spamicity, threshold)
    pts = 0.0 if spamicity is None else sa_points(spamicity, threshold, scale, mode)
    return f"Spam: {'True' if spam else 'False'} ; {pts:.1f} / {scale * threshold:.1f}".encode()


def verdict_symbol(spamicity: float, threshold: float,
                   unsure: tuple[float, float] | None) -> str:
    """SYMBOLS' first symbol: NNSPAM_SPAM, NNSPAM_HAM or, inside the unsure band
    (``filter.unsure``), NNSPAM_UNSURE: the verdict the X-NNSpam-Status field states."""
    return "NNSPAM_" + verdict_of(spamicity, threshold, unsure).upper()


@dataclass
class Request:
    """One parsed request: its verb and headers (names lower-cased), the body as sent
    (``length`` bytes; still compressed with ``Compress: zlib``), the TCP client's
    address (None on a Unix socket) and the request's deadline (monotonic)."""

    verb: str
    headers: dict[str, str]
    body: bytes = b""
    peer: str | None = None
    deadline: float | None = None

    @property
    def length(self) -> int:
        """``Content-length`` (0 for PING and SKIP, which carry no body)."""
        cl = self.headers.get("content-length", "0")
        return int(cl) if cl.isascii() and cl.isdigit() else 0


def _line(line: bytes) -> bytes:
    """One request line as read (up to ``MAX_LINE`` + 1 bytes, its newline included)."""
    if len(line) > MAX_LINE:
        raise RequestError(EX_PROTOCOL, "Bad header line: line too long")
    if not line.endswith(b"\n"):
        raise RequestError(EX_PROTOCOL, "Bad header line: request ended early")
    return line.rstrip(b"\r\n")


def read_head(readline: Callable[[], bytes]) -> Request:
    """The request line and headers, read by ``readline`` (which returns one line with
    its newline, at most ``MAX_LINE`` + 1 bytes, or what came before the end of the
    input): a :class:`Request` without its body, or :class:`RequestError`."""
    parts = _line(readline()).split(b" ")
    if len(parts) != 2 or not parts[1].startswith(b"SPAMC/"):
        raise RequestError(EX_PROTOCOL, "Bad header line: (request line)")
    verb = parts[0].decode("ascii", "replace")
    if verb not in VERBS:
        raise RequestError(EX_USAGE, f"Unknown method: {verb[:40]}")
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = _line(readline())
        if not line:
            return Request(verb, headers)
        name, sep, value = line.partition(b":")
        if not sep or not name.strip():
            raise RequestError(EX_PROTOCOL, "Bad header line: (no colon)")
        headers[name.strip().decode("ascii", "replace").lower()] = (
            value.strip().decode("utf-8", "replace"))
    raise RequestError(EX_PROTOCOL, "Bad header line: too many headers")


def check_head(ctx: Context, req: Request) -> int:
    """What must be refused before the body is read, and the body's length to read:
    a missing or bad ``Content-length``, an unknown ``Compress``, a message over the
    hard limit ``serve.max_request`` (or a compressed one over ``serve.max_size``), a
    TELL the server does not take from this client. Refused at once (and the body
    discarded by the caller), a client that writes the whole message before it reads
    gets its answer without sending what would be thrown away into a full buffer."""
    st = ctx.settings
    if req.verb in ("PING", "SKIP"):
        return 0
    cl = req.headers.get("content-length")
    if cl is None or not (cl.isascii() and cl.isdigit()):
        raise RequestError(EX_PROTOCOL, "Bad header line: Content-length missing or invalid")
    length = int(cl)
    compress = req.headers.get("compress")
    if compress is not None and compress.lower() != "zlib":
        raise RequestError(EX_PROTOCOL, f"Bad header line: Compress: {compress[:20]}")
    if req.verb == "TELL":
        ctx.check_tell(req.peer)
    if compress is not None and length > st.max_size:
        raise RequestError(EX_DATAERR, "compressed message over serve.max_size")
    if length > st.max_request:
        raise RequestError(EX_DATAERR, f"message of {length} bytes over serve.max_request "
                           f"({st.max_request}); not read")
    return length


def respond(ctx: Context, req: Request) -> bytes:
    """The answer to a whole request (its body read): b"" for SKIP, which has none.
    :class:`RequestError` for a request to refuse (the caller answers it with
    :func:`error_answer`)."""
    st = ctx.settings
    if req.verb == "SKIP":
        return b""
    if req.verb == "PING":
        return PROTO + b" 0 PONG\r\n"
    body = req.body
    if req.headers.get("compress") is None and len(body) > st.max_size:
        return _over_size(ctx, req)
    if req.headers.get("compress") is not None:
        d = zlib.decompressobj()
        try:
            body = d.decompress(body, st.max_size + 1)
        except zlib.error as exc:
            raise RequestError(EX_DATAERR, f"bad zlib data: {exc}") from None
        if len(body) > st.max_size:
            raise RequestError(EX_DATAERR, "message over serve.max_size after decompression")
    if req.verb == "TELL":
        return _tell(ctx, body, req)
    # SYMBOLS and REPORT name the words that moved the spamicity most (explanation.py)
    words = ((st.filter.words or REPORT_WORDS)
             if req.verb in ("SYMBOLS", "REPORT", "REPORT_IFSPAM") else 0)
    res = ctx.models.classify(body, req.headers.get("user"), words)
    if res.error is not None:
        log.error("classification failed, message passed through: %s", res.error)
    return _answer(ctx, req.verb, res.output, res.spamicity, res.words)


def error_answer(exc: RequestError) -> bytes:
    """``SPAMD/1.5 CODE MESSAGE``: how spamd refuses a request."""
    return PROTO + f" {exc.code} {exc.message}\r\n".encode()


def _answer(ctx: Context, verb: str, marked: bytes, sp: float | None,
            words: TopWords | None = None) -> bytes:
    st = ctx.settings
    f = st.filter
    sa_t = sa_threshold(f.threshold, f.unsure)  # unsure is not spam to SpamAssassin's clients
    spam_line = score_line(sp, sa_t, st.score_scale, st.score_mode)
    spam = sp is not None and is_spam(sp, sa_t)
    if verb == "CHECK":
        return PROTO + b" 0 EX_OK\r\n" + spam_line + b"\r\n\r\n"
    if st.spamassassin_headers and sp is not None and verb in ("PROCESS", "HEADERS"):
        marked = spamassassin_fields(marked, sp, sa_t, st.score_scale, st.score_mode)
    if verb == "PROCESS":
        out = marked
    elif verb == "HEADERS":
        out = _head_of(marked)
    elif verb == "SYMBOLS":
        out = (",".join([verdict_symbol(sp, f.threshold, f.unsure)] + symbols(words or []))
               .encode() if sp is not None else b"")
    elif verb == "REPORT" or (verb == "REPORT_IFSPAM" and spam):
        out = _report(sp, f.threshold, st.score_scale, words, f.unsure, st.score_mode)
    else:  # REPORT_IFSPAM on ham
        out = b""
    return _with_body(spam_line, out)


def _with_body(spam_line: bytes, out: bytes) -> bytes:
    return (PROTO + b" 0 EX_OK\r\n" + spam_line + b"\r\nContent-length: "
            + str(len(out)).encode() + b"\r\n\r\n" + out)


def _over_size(ctx: Context, req: Request) -> bytes:
    """A message over ``serve.max_size`` (spamd semantics): unchanged and unclassified
    (PROCESS gives it back byte for byte, HEADERS its head), never learned."""
    st = ctx.settings
    if req.verb == "TELL":
        raise RequestError(EX_DATAERR, "message over serve.max_size, not learned")
    metrics.scored("skipped")
    spam_line = score_line(None, sa_threshold(st.filter.threshold, st.filter.unsure),
                           st.score_scale, st.score_mode)
    if req.verb == "PROCESS":
        return _with_body(spam_line, req.body)
    if req.verb == "HEADERS":
        return _with_body(spam_line, _head_of(req.body[:st.max_size]))
    return _answer(ctx, req.verb, b"", None)


def _tell(ctx: Context, body: bytes, req: Request) -> bytes:
    """TELL: ``Set: local`` with ``Message-class: spam|ham`` learns the message
    (``spamc -L spam|ham``), ``Remove: local`` forgets an earlier lesson of it
    (``spamc -L forget``: the correction journal, :func:`nnspam.model.correct.forget`);
    both may come in one request (remove first, as spamd). ``DidRemove: local`` is
    answered only when the journal held the message, ``DidSet: local`` only when the
    message was learned (not when its model had learned it as that class already), so
    spamc says "already un/learned" otherwise. Remote reporting (``Set: remote``,
    ``spamc -C``) is not offered."""
    headers = req.headers

    def places(name: str) -> list[str]:
        return [w.strip().lower() for w in headers.get(name, "").split(",") if w.strip()]

    remove, put = places("remove"), places("set")
    if not remove and not put:
        raise RequestError(EX_DATAERR, "TELL needs Set: local or Remove: local")
    if any(w != "local" for w in remove + put):
        raise RequestError(EX_DATAERR, "TELL: only local learning (Set: local, Remove: "
                           "local); nnspam reports to no remote service")
    label = headers.get("message-class", "").lower()
    if put and label not in ("spam", "ham"):
        raise RequestError(EX_DATAERR, "TELL needs Message-class: spam or ham")
    user = headers.get("user")
    who = f"user {user or '-'}, client {req.peer or 'unix'}"
    answer = b""
    if remove:
        forgot, where = ctx.models.forget(body, user, deadline=req.deadline)
        log.info("%s one message in %s (%s)", "forgot" if forgot else
                 "nothing to forget for", where, who)
        answer += b"DidRemove: local\r\n" if forgot else b""
    if put:
        learned, where = ctx.models.learn(body, label, user, deadline=req.deadline)
        log.info("%s one message as %s into %s (%s)", "learned" if learned else
                 "already learned", label, where, who)
        answer += b"DidSet: local\r\n" if learned else b""
    return PROTO + b" 0 EX_OK\r\n" + answer + b"\r\n"


def spamassassin_fields(marked: bytes, spamicity: float, threshold: float,
                        scale: float, mode: str = "spamicity") -> bytes:
    """``marked`` (nnspam filter's output) with SpamAssassin's ``X-Spam-Flag: YES`` (spam
    only), ``X-Spam-Status`` and ``X-Spam-Level`` fields
    (:func:`nnspam.services.scoring.spamassassin_fields`, the one definition) added,
    any earlier ones (forged or from another filter) removed: what spamass-milter copies
    into the message and rejects on (``serve.spamassassin_headers``). Scores use the
    ``Spam:`` line's mapping."""
    return set_header_fields(marked, sa_fields(spamicity, threshold, scale, mode), SA_FIELDS)


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


def _report(sp: float | None, threshold: float, scale: float,
            words: TopWords | None = None, unsure: tuple[float, float] | None = None,
            mode: str = "spamicity") -> bytes:
    """REPORT's text: one summary line, then SpamAssassin's table of the verdict (as
    SYMBOLS names it) and the words that moved it
    (:func:`nnspam.services.explanation.report_table`)."""
    if sp is None:
        return b"nnspam: message not classified\r\n"
    rule = verdict_symbol(sp, threshold, unsure)
    return (f"nnspam neural network: spamicity {sp:.3f}, threshold {threshold:.3f} "
            f"(score {sa_points(sp, threshold, scale, mode):.1f} / {scale * threshold:.1f})"
            "\r\n\r\n"
            + report_table(sp, threshold, scale, rule, words, mode)).encode("ascii", "replace")
