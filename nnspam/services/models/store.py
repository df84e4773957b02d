"""The fleet's model store in Redis (config ``store: redis://HOST:PORT/DB``): versioned
model bytes, the stream of corrections, the learner's lease.

Keys (all under ``nnspam:``; one fleet per Redis database):

``nnspam:versions`` (hash)
    model name -> its current version. ``site`` is the site model, ``user:NAME`` a
    per-user model (``NAME``: ``serve.user_model`` expanded for the user). A version
    is ``N-TAG``: a counter and a random tag, so that a Redis that lost its data
    and was seeded again never hands out a version a server already has for other
    bytes. Servers compare versions for equality only.
``nnspam:model:NAME:VERSION`` (hash)
    one version of a model: its files' bytes, never a pickle (the site model:
    ``model.json``, ``weights.npz``, ``journal.npz``; a per-user model: its delta
    against the site model, :mod:`nnspam.model.delta`), ``kind`` (``full`` or
    ``delta``), ``base`` (the site version a delta was made on) and ``applied`` (the
    id of the last correction of the stream learned into it). The previous version
    expires 60 s after a new one is published: a server that read the version just
    before still finds its bytes.
``nnspam:epoch`` (counter)
    incremented by every publication: one ``GET`` tells a server whether anything
    changed (``nnspam:published`` also gets a pub/sub message ``NAME VERSION``).
``nnspam:corrections`` (stream, consumer group ``learners``)
    the corrections told to any server (TELL) or ``nnspam learn``: ``model``, ``op``
    (``spam``, ``ham``, ``forget``, or ``replace``: a new site model from ``nnspam
    store push``, its files in fields ``file:NAME``), ``msg`` (the message's bytes), ``rule`` (the
    ``learn:`` rule of the teller, JSON), ``source``, ``reply`` (``1``: the teller waits
    for ``nnspam:reply:ID``). Entries are deleted once learned.
``nnspam:learner`` (string with expiry)
    the lease of the one learner: its holder's token. Publication is fenced by it:
    a learner whose lease expired (a pause longer than the lease) cannot publish.

Every Redis problem reaches callers as :class:`StoreUnavailable` (no connection,
timeout), :class:`NotRedis` (something that is not Redis answers at that address) or
:class:`StoreError` (anything else); the ``redis`` client is imported when a store is
opened, never on the pipe filter's path.

The URL is checked whole before anything uses it (:func:`check_url`, applied by the
config's validation and by :class:`Store`): host, port 1..65535, database number, IPv6
brackets, a ``unix://`` socket path and the query parameters, as redis-py reads them, so
that a mistyped ``store:`` is a one-line config error in every command rather than a
``ValueError`` from deep in the client. Commands have short timeouts
(:data:`CONNECT_TIMEOUT`, :data:`COMMAND_TIMEOUT`): an address that accepts connections
and never answers (a wrong port, a firewall that drops packets) is reported within a
few seconds instead of holding a start-up for the long read timeout of the blocking
commands, which a second connection pool keeps for them alone.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

from nnspam.config import redact_url, store_url_problem

__all__ = ["PREFIX", "LeaseLost", "NotRedis", "Outage", "Store", "StoreError",
           "StoreUnavailable", "VersionMoved", "check_url", "redact"]

log = logging.getLogger("nnspam.store")

PREFIX = "nnspam:"
SITE = "site"
OLD_VERSION_TTL = 60  # seconds the previous version of a model stays readable
GROUP = "learners"
CONNECT_TIMEOUT = 3.0  # seconds to open a connection to Redis
COMMAND_TIMEOUT = 5.0  # seconds Redis has to answer a (non-blocking) command


class StoreError(Exception):
    """A store operation failed for a reason other than the connection."""


class StoreUnavailable(StoreError):
    """Redis cannot be reached (refused, reset, timed out)."""


class LeaseLost(StoreError):
    """This process no longer holds the learner's lease: it must not publish."""


class VersionMoved(StoreError):
    """The model's version changed under the learner (a store seeded again)."""


class NotRedis(StoreError):
    """What answers at the store's address is not Redis (a web server, a TLS port): a
    wrong ``store:`` setting, which waiting will not mend."""


def check_url(url: Any) -> str | None:
    """What is wrong with a ``store`` setting, or None (the one check,
    :func:`nnspam.config.store_url_problem`, which the config's validation applies: the
    whole URL as redis-py reads it). The answer completes "store ..."."""
    return store_url_problem(url)


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs; also for a
    URL too malformed to parse (:func:`nnspam.config.redact_url`)."""
    return redact_url(url)


class Outage:
    """Logs a store outage once per process, and its end once: a server under load
    would otherwise write one error per request while Redis is away."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.down = False
        self.since = 0.0
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> None:
        """Redis could not be reached: log it if this starts an outage."""
        with self._lock:
            if self.down:
                return
            self.down, self.since = True, time.monotonic()
        log.error("model store %s unreachable (%s): classifying with the models loaded, "
                  "TELL answers EX_TEMPFAIL (75) until it is back", self.where, exc)

    def ok(self) -> None:
        """Redis answered: log the end of an outage."""
        if not self.down:
            return
        with self._lock:
            if not self.down:
                return
            self.down = False
            took = time.monotonic() - self.since
        log.warning("model store %s is back after %.1f s", self.where, took)


# Publication: fenced by the lease (ARGV[1], '' for a seed, which needs none) and a
# compare-and-set on the current version (ARGV[3], '' for none).
_PUBLISH = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local cur = redis.call('HGET', KEYS[2], ARGV[2])
if (cur or '') ~= ARGV[3] then return -2 end
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], unpack(ARGV, 7))
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
if cur then redis.call('EXPIRE', ARGV[6] .. cur, tonumber(ARGV[5])) end
redis.call('INCR', KEYS[4])
redis.call('PUBLISH', KEYS[5], ARGV[2] .. ' ' .. ARGV[4])
return 1
"""
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if cur then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Store:
    """One process's connection to the fleet's Redis (thread-safe: redis-py's pool;
    a forked child opens its own connections).

    Two connection pools: one for the commands Redis answers at once, with short
    timeouts (:data:`CONNECT_TIMEOUT`, :data:`COMMAND_TIMEOUT`), and one for the
    blocking reads (:meth:`wait_reply`, :meth:`read`), whose socket timeout is
    ``timeout``: the longest a blocking read may wait. A URL :func:`check_url` refuses
    is a :class:`StoreError` here too (a URL that did not come through the config)."""

    def __init__(self, url: str, prefix: str = PREFIX, timeout: float = 10.0) -> None:
        if (problem := check_url(url)) is not None:
            raise StoreError(f"store {problem}")
        import redis

        self._redis_mod = redis
        self.url = url
        self.where = redact(url)  # for messages: without the password
        self.prefix = prefix
        self.r = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT,
                                      socket_timeout=COMMAND_TIMEOUT, retry_on_timeout=False)
        self.blocking = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT,
                                             socket_timeout=max(timeout, COMMAND_TIMEOUT),
                                             retry_on_timeout=False)
        self.k_versions = prefix + "versions"
        self.k_epoch = prefix + "epoch"
        self.k_stream = prefix + "corrections"
        self.k_lease = prefix + "learner"
        self.k_channel = prefix + "published"
        self._publish = self.r.register_script(_PUBLISH)
        self._acquire = self.r.register_script(_ACQUIRE)
        self._renew = self.r.register_script(_RENEW)
        self._release = self.r.register_script(_RELEASE)

    def __repr__(self) -> str:
        return f"Store({self.where!r})"

    # -- errors -------------------------------------------------------------
    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        """Run one client call, its errors as StoreUnavailable / NotRedis / StoreError."""
        try:
            return fn(*args, **kw)
        except Exception as exc:  # noqa: BLE001 - _error sorts it (an unknown one as it is)
            raise self._error(exc) from None

    def _error(self, exc: Exception) -> Exception:
        """The store's exception for one of the client's (others unchanged)."""
        ex = self._redis_mod.exceptions
        if isinstance(exc, ex.TimeoutError):
            took = CONNECT_TIMEOUT if "connecting" in str(exc) else COMMAND_TIMEOUT
            return StoreUnavailable(f"no answer within {took:g} s ({exc})")
        if isinstance(exc, ex.InvalidResponse):  # bytes that are not Redis's protocol
            return NotRedis(self._not_redis(str(exc).removeprefix("Protocol Error: ")))
        if isinstance(exc, ex.ConnectionError | OSError):
            # A server that closes the connection without a word may be a Redis going
            # down, or a server of another protocol that gave up on our command:
            # ask it once, in plain words.
            if "closed" in str(exc) and (answer := self._probe()) is not None:
                return NotRedis(self._not_redis(answer))
            return StoreUnavailable(str(exc) or exc.__class__.__name__)
        if isinstance(exc, ex.RedisError):
            return StoreError(str(exc))
        return exc

    def _not_redis(self, answer: str) -> str:
        return (f"the server at {self.where} does not speak Redis (it answered "
                f"{answer[:60]}): store: must be the address of a Redis server")

    def _probe(self) -> str | None:
        """The start of what the server at a ``redis://`` address answers to an inline
        PING, when that is not Redis's answer (``+PONG``, or an error line: ``-NOAUTH``,
        ``-DENIED``...); None when it is, or when nothing or no connection came."""
        kw = self.r.connection_pool.connection_kwargs
        if not self.url.lower().startswith("redis://"):  # TLS, or a Unix socket
            return None
        try:
            with socket.create_connection((kw.get("host", "localhost"), kw.get("port", 6379)),
                                          timeout=CONNECT_TIMEOUT) as sock:
                sock.sendall(b"PING\r\n")
                got = sock.recv(64)
        except OSError:
            return None
        if not got or got[:1] in (b"+", b"-"):
            return None
        return repr(got.split(b"\n", 1)[0].strip())

    def model_key(self, name: str, version: str) -> str:
        """The key of one version of a model."""
        return f"{self.prefix}model:{name}:{version}"

    # -- versions and models -----------------------------------------------
    def ping(self) -> bool:
        """True when Redis answers."""
        return bool(self._call(self.r.ping))

    def epoch(self) -> int:
        """The publication counter (0 in a new store)."""
        v = self._call(self.r.get, self.k_epoch)
        return int(v) if v is not None else 0

    def versions(self) -> dict[str, str]:
        """Every model's current version."""
        raw = self._call(self.r.hgetall, self.k_versions)
        return {k.decode(): v.decode() for k, v in raw.items()}

    def version(self, name: str) -> str | None:
        """One model's current version (None: no such model)."""
        v = self._call(self.r.hget, self.k_versions, name)
        return v.decode() if v is not None else None

    def fetch(self, name: str, version: str | None = None) -> tuple[str, dict[str, bytes]] | None:
        """(version, fields) of a model: the given version, or the current one (None
        when there is no such model, or that version expired)."""
        for _ in range(3):
            v = version if version is not None else self.version(name)
            if v is None:
                return None
            raw = self._call(self.r.hgetall, self.model_key(name, v))
            if raw:
                return v, {k.decode(): val for k, val in raw.items()}
            if version is not None:
                return None
        return None

    def publish(self, name: str, files: Mapping[str, bytes], *, token: str = "",
                expect: str | None = None, meta: Mapping[str, str] | None = None) -> str:
        """Store a new version of ``name`` and make it current; returns it.

        ``token``: the learner's lease, which must still be held (LeaseLost); ''
        for a seed. ``expect``: the version it must replace (None: the model must
        not exist yet), else VersionMoved."""
        n = 1
        if expect:
            head = expect.split("-", 1)[0]
            n = int(head) + 1 if head.isdigit() else 1
        new = f"{n}-{secrets.token_hex(4)}"
        fields: list[Any] = []
        for k, v in {**(meta or {}), **files}.items():
            fields += [k, v]
        got = self._call(self._publish,
                         keys=[self.k_lease, self.k_versions, self.model_key(name, new),
                               self.k_epoch, self.k_channel],
                         args=[token, name, expect or "", new, OLD_VERSION_TTL,
                               f"{self.prefix}model:{name}:", *fields])
        if got == -1:
            raise LeaseLost("the learner's lease is held by another process")
        if got == -2:
            raise VersionMoved(f"{name}: the version changed meanwhile")
        return new

    def seed(self, name: str, files: Mapping[str, bytes],
             meta: Mapping[str, str] | None = None) -> str | None:
        """Publish ``files`` as the first version of ``name`` unless it exists
        (another server seeded first): the new version, or None."""
        try:
            return self.publish(name, files, expect=None, meta=meta)
        except VersionMoved:
            return None

    # -- the corrections stream --------------------------------------------
    def add_correction(self, model: str, op: str, msg: bytes, rule: Mapping[str, Any] | None,
                       source: str, reply: bool = False,
                       extra: Mapping[str, bytes] | None = None) -> str:
        """Append a correction to the stream (durable as Redis is: with ``appendonly``
        on, once this returns); returns its id. ``extra``: more fields (a new site
        model's files, ``file:NAME``, for op ``replace``)."""
        fields = {"model": model, "op": op, "msg": msg, "source": source,
                  "rule": json.dumps(dict(rule or {})), "reply": "1" if reply else "0",
                  "time": f"{time.time():.3f}", **(extra or {})}
        got = self._call(self.r.xadd, self.k_stream, fields)
        return got.decode() if isinstance(got, bytes) else str(got)

    def wait_reply(self, entry: str, timeout: float) -> str | None:
        """The learner's answer to a correction (None after ``timeout`` seconds)."""
        got = self._call(self.blocking.blpop, [self.prefix + "reply:" + entry],
                         timeout=timeout)
        return got[1].decode() if got else None

    def reply(self, entry: str, answer: str) -> None:
        """Answer a correction whose teller waits (kept 60 s)."""
        key = self.prefix + "reply:" + entry
        pipe = self.r.pipeline()
        pipe.rpush(key, answer)
        pipe.expire(key, 60)
        self._call(pipe.execute)

    def ensure_group(self) -> None:
        """Create the stream and its consumer group if missing (read from the start:
        corrections told before the first learner ran are learned too)."""
        ex = self._redis_mod.exceptions
        try:
            self.r.xgroup_create(self.k_stream, GROUP, id="0", mkstream=True)
        except ex.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise StoreError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - _error sorts it (an unknown one as it is)
            raise self._error(exc) from None

    def claim_all(self, consumer: str) -> int:
        """Take over every correction delivered to a learner that did not finish it
        (a dead server's): the new lease holder is the only consumer."""
        start, n = "0-0", 0
        while True:
            # (with justid=True the client returns the ids alone, without the cursor)
            got = self._call(self.r.xautoclaim, self.k_stream, GROUP, consumer, 0, start,
                             count=100)
            start = got[0].decode() if isinstance(got[0], bytes) else str(got[0])
            n += len(got[1])
            if start == "0-0":
                return n

    def read(self, consumer: str, count: int, block_ms: int,
             pending: bool) -> list[tuple[str, dict[str, bytes]]]:
        """Corrections for this learner: its own unfinished ones (``pending``) or new
        ones, oldest first."""
        ex = self._redis_mod.exceptions
        try:
            got = self.blocking.xreadgroup(
                GROUP, consumer, {self.k_stream: "0" if pending else ">"}, count=count,
                block=None if pending else block_ms)
        except ex.ResponseError as exc:
            if "NOGROUP" in str(exc):  # a Redis that lost its data: make it again
                self.ensure_group()
                return []
            raise StoreError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - _error sorts it (an unknown one as it is)
            raise self._error(exc) from None
        # RESP2, the protocol of these clients: [[stream, [(id, fields), ...]]], or None
        # when the block timed out (RESP3 would answer a dict)
        assert not isinstance(got, dict)
        out = []
        for _, entries in got or []:
            for eid, fields in entries:
                if not fields:  # deleted meanwhile
                    continue
                out.append((eid.decode() if isinstance(eid, bytes) else str(eid),
                            {k.decode(): v for k, v in fields.items()}))
        return out

    def done(self, ids: list[str]) -> None:
        """Acknowledge learned corrections and delete them from the stream."""
        if not ids:
            return
        pipe = self.r.pipeline()
        pipe.xack(self.k_stream, GROUP, *ids)
        pipe.xdel(self.k_stream, *ids)
        self._call(pipe.execute)

    def backlog(self) -> int:
        """Corrections in the stream not yet learned."""
        return int(self._call(self.r.xlen, self.k_stream))

    # -- the learner's lease -------------------------------------------------
    def acquire(self, token: str, ttl_ms: int) -> bool:
        """Take the learner's lease if nobody holds it (or we still do)."""
        return bool(self._call(self._acquire, keys=[self.k_lease], args=[token, ttl_ms]))

    def renew(self, token: str, ttl_ms: int) -> bool:
        """Extend our lease; False when it is no longer ours."""
        return bool(self._call(self._renew, keys=[self.k_lease], args=[token, ttl_ms]))

    def release(self, token: str) -> None:
        """Give the lease up (at a clean stop: another server takes over at once)."""
        self._call(self._release, keys=[self.k_lease], args=[token])

    def holder(self) -> str | None:
        """The token of the lease holder, or None."""
        v = self._call(self.r.get, self.k_lease)
        return v.decode() if v is not None else None
