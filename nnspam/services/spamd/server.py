"""``nnspam serve``: a scoring server that speaks SpamAssassin's SPAMC/SPAMD
protocol, so that ``spamc`` (and everything built on it: procmail and
maildrop recipes, Exim's ``spam =`` condition, spamass-milter, IMAPSieve
learning with ``spamc -L``) uses nnspam without a Python start per message.

The request side is :mod:`nnspam.services.spamd.protocol` (protocol, verbs, errors), the
models :mod:`nnspam.services.models.registry` (site and per-user models), the sockets
:mod:`nnspam.services.spamd.listeners` and the settings
:mod:`nnspam.services.models.serve_settings`; this module runs them: the workers, their
supervisor and the signals.

Workers (pre-fork): the supervisor process loads the model, binds the
sockets (or takes them from systemd socket activation: ``LISTEN_FDS`` /
``LISTEN_PID``), sends ``READY=1`` to ``$NOTIFY_SOCKET`` (``Type=notify``;
:mod:`nnspam.services.systemd`, as the daemon; with ``WatchdogSec=`` also ``WATCHDOG=1``
at half the interval while its loop turns) and forks ``serve.workers``
processes (default one per core) that share the listening sockets and,
copy-on-write, the loaded model. Each worker reads requests and writes answers
in one asyncio loop and scores in ``serve.max_connections`` handler threads
(:class:`Worker`: a whole-request deadline, ``serve.max_per_client``, requests read
whole up to ``serve.max_request``). A worker
that dies is replaced. Every request costs one ``stat`` of the model's
``weights.npz`` (inode, mtime, size): a model saved by a TELL in another
worker, or by ``nnspam learn``, is loaded on the next request, no signal
needed. With ``workers: 1`` the supervisor serves by itself.

A fleet (config ``store: redis://...``): the models live in Redis instead, and each
worker runs a watcher and a learner thread (:mod:`nnspam.services.models.fleet`, started
and stopped by the registry's ``start_background``/``stop_background`` hooks).

Metrics (``--metrics HOST:PORT``, off by default): the supervisor serves Prometheus'
``/metrics`` with the sums of every worker, live or dead (:mod:`nnspam.services.metrics`,
set up before the fork; reaped workers are marked dead there).

Signals (to the supervisor): SIGTERM and SIGINT stop accepting; every worker
finishes the requests it has accepted, then the supervisor exits 0. SIGHUP
reloads the site model in every worker and drops the cached user models.

Resources: one BLAS thread per process (:func:`nnspam.services.blas.one_blas_thread`; OpenBLAS
threads made one message's forward pass 0.1 ms -> 20 ms on a busy host) and
two glibc malloc arenas (RSS +20 MB instead of +75 MB over 4,000 hostile
requests). Measured (``scripts/bench/server.py``, 2 cores shared with other
jobs, load average 9-13): see docs/guides/server.md "Scoring server".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nnspam.services import metrics
from nnspam.services.blas import one_blas_thread
from nnspam.services.errors import EX_PROTOCOL, EX_SOFTWARE, EX_TEMPFAIL, RequestError, ServerError
from nnspam.services.models.registry import ModelRegistry
from nnspam.services.models.serve_settings import ServeSettings
from nnspam.services.spamd.listeners import Listener, bind_listeners, close_listeners
from nnspam.services.spamd.protocol import (
    CHUNK,
    MAX_HEADERS,
    MAX_LINE,
    Context,
    Request,
    check_head,
    error_answer,
    read_head,
    respond,
)
from nnspam.services.systemd import Watchdog, sd_notify

__all__ = ["Worker", "run_server", "resolve_workers"]

log = logging.getLogger("nnspam.serve")

POLL = 0.25  # seconds between checks of the stop flag


WRITE_GRACE = 2.0  # seconds to write an answer whose work ran up to the request's deadline
LINGER = 1.0  # seconds to wait for the client's end after the answer, before closing
BUFFER_BUDGET = 4  # bodies held at once per worker: up to this many x serve.max_request
WARN_EVERY = 60.0  # seconds between two log lines about one client's refused connections
# A connection still sending its request after this many seconds may be closed to make room
# for a new one of its client: a real client sends a request in milliseconds, and the new
# connection of a burst must not push out the request that came just before it.
EVICT_AFTER = 1.0


class _Conn:
    """One open connection: its client (an IP address, or ``uid:N`` on a Unix
    socket), its task, whether it is still sending its request."""

    __slots__ = ("key", "task", "reading", "evicted", "started", "since")

    def __init__(self, key: str) -> None:
        self.key = key
        self.task: asyncio.Task | None = None
        self.reading = True
        self.evicted = False
        self.started = False  # its task has begun (and will close its socket itself)
        self.since = time.monotonic()


class Worker:
    """Accepts connections on the shared listening sockets and serves them.

    One asyncio loop reads every request and writes every answer; the scoring and
    learning run in ``serve.max_connections`` handler threads. Reading takes no
    thread, so a client that sends slowly (or not at all) holds only its connection,
    and only until its request's deadline: ``serve.timeout`` seconds from the
    connection to the answer's last byte, however often it sends a byte (issue 22:
    70 clients sending a byte every 20 s held every handler of the old thread per
    connection server, and for 65 s spamc got its mail back unfiltered). A client
    (an IP address; on the Unix socket, a user id) keeps at most ``serve.max_per_client``
    connections in a worker that are still sending their request a second after they
    came: beyond that its oldest ones are closed with EX_TEMPFAIL. New connections are
    always taken (up to what the worker's descriptors allow), so a burst of requests from
    the MTA's address is never refused because an attacker there holds slow ones.
    A request is read whole before it is answered, as spamd does (up to
    ``serve.max_request``; a longer one is refused at once and its body discarded),
    so a client that writes a big message before it reads never waits on us.

    When its handlers are all busy and as many requests wait for them, a worker stops
    accepting for a while, so that other workers take the new connections. ``stop``
    ends accepting; the requests already accepted finish (the drain) before
    :meth:`run` returns."""

    def __init__(self, listeners: list[Listener], ctx: Context,
                 watchdog: Watchdog | None = None) -> None:
        self.listeners = listeners
        self.ctx = ctx
        self.stopping = False  # a plain flag: set from a signal handler
        # systemd's watchdog, pinged from the loop: only the worker that is the
        # service's main process (workers: 1) has one; forked workers do not.
        self.watchdog = watchdog
        self.conns: dict[_Conn, None] = {}  # open connections, oldest first
        self.busy = 0  # requests handed to the handler threads and not yet answered
        self.buffered = 0  # bytes of request bodies being read or held
        self.warned: dict[str, float] = {}
        self.max_open = _max_open()

    def stop(self) -> None:
        """Stop accepting; in-flight requests finish (safe in a signal handler)."""
        self.stopping = True

    def reload(self) -> None:
        """SIGHUP: reload in a thread, so that the signal handler returns at once."""
        def go() -> None:
            try:
                self.ctx.models.reload()
                log.info("model reloaded")
                metrics.reloaded("signal")
            except Exception as exc:  # noqa: BLE001 - keep serving the old model
                log.error("reload failed, keeping the old model: %s", exc)
                metrics.error("reload")
        threading.Thread(target=go, daemon=True).start()

    def run(self) -> None:
        """Serve until :meth:`stop`, then drain."""
        asyncio.run(self._main())

    async def _main(self) -> None:
        st = self.ctx.settings
        n = max(1, st.max_connections)
        metrics.handler_threads(n)
        self.pool = ThreadPoolExecutor(n, thread_name_prefix="nnspam-serve")
        self.room = asyncio.Event()
        self.room.set()
        # the registry's threads of this process (a fleet's watcher and learner)
        background = getattr(self.ctx.models, "start_background", None)
        if background is not None:
            background()
        acceptors = [asyncio.create_task(self._accept(lst.sock)) for lst in self.listeners]
        try:
            while not self.stopping:
                if self.watchdog is not None:
                    self.watchdog.ping()  # the loop turns: the server is alive
                self._limit_slow_clients()
                await asyncio.sleep(POLL)
        finally:
            for a in acceptors:
                a.cancel()
            await asyncio.gather(*acceptors, return_exceptions=True)
            tasks = [c.task for c in self.conns if c.task is not None]
            if tasks:  # the drain: each ends by its own deadline
                await asyncio.wait(tasks, timeout=st.timeout + WRITE_GRACE + LINGER + 5)
            self.pool.shutdown(wait=True)
            if background is not None:
                self.ctx.models.stop_background()

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        n = max(1, self.ctx.settings.max_connections)
        while True:
            while self.busy >= 2 * n:  # all handlers busy, as many waiting: let others take it
                self.room.clear()
                await self.room.wait()
            try:
                conn, addr = await loop.sock_accept(sock)
            except (BlockingIOError, InterruptedError):
                continue  # another worker took it
            except OSError as exc:  # EMFILE and the like: back off
                log.error("accept failed: %s", exc)
                await asyncio.sleep(POLL)
                continue
            self._start(conn, addr)

    # -- who gets a connection -------------------------------------------------------
    def _start(self, conn: socket.socket, addr: Any) -> None:
        rec = _Conn(_client_key(conn, addr))
        refused = len(self.conns) >= self.max_open and not self._evict(None, 1)
        if refused:
            self._warn("-", "this worker's connections are all taken: refused a new one")
        self.conns[rec] = None
        rec.task = asyncio.get_running_loop().create_task(self._serve(conn, addr, rec, refused))
        rec.task.add_done_callback(lambda _t: self._done(rec, conn))

    def _done(self, rec: _Conn, conn: socket.socket) -> None:
        """A connection's task ended, however (even cancelled before it began: then its
        socket is closed here, else the client would wait for an answer until its own
        timeout)."""
        self.conns.pop(rec, None)
        if not rec.started:
            conn.close()

    def _slow(self, now: float) -> dict[str, list[_Conn]]:
        """Connections still sending their request ``EVICT_AFTER`` seconds after they
        came, by client, oldest first."""
        out: dict[str, list[_Conn]] = {}
        for c in self.conns:
            if c.since > now - EVICT_AFTER:
                break  # oldest first: the rest are younger still
            if c.reading and c.started and not c.evicted:
                out.setdefault(c.key, []).append(c)
        return out

    def _evict(self, key: str | None, n: int) -> bool:
        """Close the ``n`` oldest slow connections (of client ``key``; None: of anyone)
        with EX_TEMPFAIL; whether there were any."""
        slow = self._slow(time.monotonic())
        victims = (slow.get(key, []) if key is not None else
                   sorted((c for cs in slow.values() for c in cs), key=lambda c: c.since))
        for c in victims[:n]:
            c.evicted = True
            if c.task is not None:
                c.task.cancel()
        return bool(victims[:n])

    def _limit_slow_clients(self) -> None:
        """``serve.max_per_client``, checked every ``POLL`` seconds: a client with more
        connections still sending their requests after ``EVICT_AFTER`` seconds loses its
        oldest ones. Only slow connections count: a burst of new requests from the MTA's
        address is never refused for the slow ones of an attacker beside it, and the slow
        ones can hold no more than the limit for longer than a second."""
        for key, cs in self._slow(time.monotonic()).items():
            over = len(cs) - self.ctx.settings.max_per_client
            if over > 0:
                self._evict(key, over)
                self._warn(key, f"{len(cs)} connections still sending their requests after "
                           f"{EVICT_AFTER:g} s: closed the {over} oldest")

    def _warn(self, key: str, what: str) -> None:
        now = time.monotonic()
        if now - self.warned.get(key, -WARN_EVERY) >= WARN_EVERY:
            self.warned[key] = now
            if len(self.warned) > 4096:
                self.warned = {k: t for k, t in self.warned.items() if now - t < WARN_EVERY}
            log.warning("client %s: %s (serve.max_per_client %d; logged once a minute per "
                        "client)", key, what, self.ctx.settings.max_per_client)
        metrics.error("refused")

    # -- one connection -----------------------------------------------------------------
    async def _serve(self, conn: socket.socket, addr: Any, rec: _Conn, refused: bool) -> None:
        rec.started = True
        loop = asyncio.get_running_loop()
        st = self.ctx.settings
        deadline = loop.time() + st.timeout
        peer = addr[0] if isinstance(addr, tuple) and addr else None
        writer = None
        try:
            if conn.family == socket.AF_UNIX:
                reader, writer = await asyncio.open_unix_connection(sock=conn, limit=CHUNK)
            else:
                reader, writer = await asyncio.open_connection(sock=conn, limit=CHUNK)
            if peer is not None and not self.ctx.allowed(peer):
                log.warning("connection from %s refused: not in serve.allowed", peer)
                metrics.error("refused")
                return
            if refused:
                await self._send(writer, error_answer(_too_many()), deadline)
                await _linger(reader, writer)
                return
            await self._exchange(reader, writer, rec, peer, deadline)
        except asyncio.CancelledError:
            if not rec.evicted:
                raise
            if writer is not None:  # made room for a newer connection of this client
                metrics.request_error(EX_TEMPFAIL)
                with contextlib.suppress(Exception):
                    writer.write(error_answer(_too_many()))
        except Exception:  # noqa: BLE001 - one connection's bug never ends the worker
            log.exception("request failed")
            metrics.error("handler")
        finally:
            if writer is not None:
                writer.close()
            else:
                conn.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        rec: _Conn, peer: str | None, deadline: float) -> None:
        """Read one request by ``deadline``, answer it, close gracefully."""
        st = self.ctx.settings
        reserved = 0
        left = 0  # bytes of a refused request's body still to come
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    req = read_head(_LineReader(await _head_lines(reader)))
                    req.peer, req.deadline = peer, deadline
                    left = check_head(self.ctx, req)
                    if left:
                        if self.buffered + left > BUFFER_BUDGET * st.max_request:
                            raise RequestError(EX_TEMPFAIL, "the server holds too many large "
                                               "messages now; try again")
                        reserved, self.buffered = left, self.buffered + left
                        req.body = await reader.readexactly(left)
                        left = 0
            except TimeoutError:
                log.info("request not complete within serve.timeout (%gs): connection "
                         "closed", st.timeout)
                metrics.error("connection")
                return
            except asyncio.IncompleteReadError:
                raise RequestError(EX_PROTOCOL, "Bad header line: body shorter than "
                                   "Content-length") from None
            rec.reading = False
            if rec.evicted:  # chosen to make room as it finished reading: serve it anyway
                rec.evicted = False
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    task.uncancel()
            self.busy += 1
            try:
                out = await asyncio.get_running_loop().run_in_executor(
                    self.pool, _respond, self.ctx, req)
            finally:
                self.busy -= 1
                self.room.set()
                self.buffered -= reserved
                reserved = 0
            if out:
                await self._send(writer, out, max(deadline, asyncio.get_running_loop().time()
                                                  + WRITE_GRACE))
        except RequestError as exc:
            metrics.request_error(exc.code)
            await self._send(writer, error_answer(exc), deadline)
            if left:  # the refused body: read and dropped, so the client can read the answer
                await _discard(reader, left, deadline)
        except (ConnectionError, OSError) as exc:
            log.info("connection dropped: %s", exc)
            metrics.error("connection")
            return
        finally:
            self.buffered -= reserved
        await _linger(reader, writer)

    async def _send(self, writer: asyncio.StreamWriter, data: bytes, deadline: float) -> None:
        try:
            async with asyncio.timeout_at(deadline):
                writer.write(data)
                await writer.drain()
        except (TimeoutError, ConnectionError, OSError) as exc:
            log.info("answer not delivered: %s", exc or "client too slow")
            metrics.error("connection")


async def _head_lines(reader: asyncio.StreamReader) -> list[bytes]:
    """The request line and header lines up to the empty one, each with its newline
    (a line longer than ``MAX_LINE``, more than ``MAX_HEADERS`` lines, or the end of
    the input stop the reading: :func:`~nnspam.services.spamd.protocol.read_head` names the
    error)."""
    lines: list[bytes] = []
    while len(lines) < MAX_HEADERS + 2:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            lines.append(exc.partial[:MAX_LINE])  # no newline: "request ended early"
            break
        except asyncio.LimitOverrunError:
            lines.append(b"x" * (MAX_LINE + 1))  # "line too long"
            break
        if len(line) > MAX_LINE:
            lines.append(line)
            break
        lines.append(line)
        if len(lines) > 1 and line in (b"\r\n", b"\n"):
            break
    return lines


class _LineReader:
    """``readline`` over lines already read (for :func:`read_head`)."""

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = iter(lines)

    def __call__(self) -> bytes:
        return next(self.lines, b"")


def _too_many() -> RequestError:
    return RequestError(EX_TEMPFAIL, "too many connections from this client; try again")


def _respond(ctx: Context, req: Request) -> bytes:
    """:func:`~nnspam.services.spamd.protocol.respond` in a handler thread: an error answered as
    spamd would, a bug logged and the connection closed without an answer."""
    with metrics.in_progress():
        try:
            return respond(ctx, req)
        except RequestError as exc:
            metrics.request_error(exc.code)
            return error_answer(exc)
        except Exception:  # noqa: BLE001 - one request's bug never ends the worker
            log.exception("request failed")
            metrics.error("handler")
            return b""


async def _discard(reader: asyncio.StreamReader, n: int, deadline: float) -> None:
    """Read and drop ``n`` bytes (a refused request's body) by ``deadline``."""
    try:
        async with asyncio.timeout_at(deadline):
            while n > 0:
                got = await reader.read(min(CHUNK, n))
                if not got:
                    return
                n -= len(got)
    except (TimeoutError, ConnectionError, OSError):
        pass


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send FIN, then wait (up to ``LINGER`` s) for the client's end, dropping what it
    still sends: closing with unread input would send a reset that could destroy the
    answer before the client has read it."""
    try:
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(LINGER):
            while await reader.read(CHUNK):
                pass
    except (TimeoutError, ConnectionError, OSError):
        pass


def _client_key(conn: socket.socket, addr: Any) -> str:
    """Who a connection is from, for ``serve.max_per_client``: its IP address over
    TCP; on a Unix socket the client's user id (``SO_PEERCRED``)."""
    if isinstance(addr, tuple) and addr:
        return str(addr[0])
    try:
        cred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return f"uid:{struct.unpack('3i', cred)[1]}"
    except (OSError, AttributeError):
        return "unix"


def _max_open() -> int:
    """Connections a worker keeps open at once: what its descriptor limit allows,
    leaving room for model files, logs and the store (at most 4,096)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            soft = 65536
    except (ImportError, OSError, ValueError):
        soft = 1024
    return max(16, min(4096, soft - 64))


def resolve_workers(n: int | None) -> int:
    """``serve.workers``: None or 0 means one per CPU core."""
    if not n:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    return max(1, int(n))


def run_server(st: ServeSettings, metrics_at: tuple[str, int] | None = None) -> int:
    """Load the model, bind (or take systemd's sockets), then serve until
    SIGTERM/SIGINT (drain, exit 0); SIGHUP reloads the model everywhere.

    With ``workers`` > 1 this process is the supervisor of a pre-fork pool:
    it forks the workers (which share the listening sockets and, copy-on-write,
    the loaded model), restarts any that dies, forwards SIGHUP and, on
    SIGTERM, asks every worker to drain and waits for them.

    ``metrics_at`` (``--metrics``): serve Prometheus metrics of every worker there
    (:mod:`nnspam.services.metrics`, multiprocess mode, set up before the fork)."""
    workers = resolve_workers(st.workers)
    _limit_malloc_arenas()
    # One BLAS thread per process (nnspam.services.blas, as the daemon): scoring one message
    # is a 1 x n_inputs by n_inputs x hidden product, and OpenBLAS's thread hand-off
    # made it 200 times slower on a busy 2-core host (measured: 0.1 ms with one
    # thread, 20 ms with two, load average 10). The forked workers inherit it.
    one_blas_thread()
    try:
        if st.store:  # a fleet: the models live in Redis (nnspam.services.models.fleet)
            from nnspam.services.models.fleet import FleetRegistry

            models: ModelRegistry = FleetRegistry(st)
        else:
            models = ModelRegistry(st)
    except ServerError:
        raise
    except Exception as exc:  # noqa: BLE001 - any load problem is fatal at start
        from nnspam.services.models.store import NotRedis

        if isinstance(exc, NotRedis):  # the store's address is wrong, not the model
            raise ServerError(f"store: {exc}") from None
        raise ServerError(f"cannot load the model {st.filter.model}: {exc}") from None
    try:
        listeners = bind_listeners(st)
    except OSError as exc:
        raise ServerError(f"cannot listen: {exc}") from None
    if not listeners:
        raise ServerError("nothing to listen on")
    exporter = None
    if metrics_at is not None:
        try:
            exporter = metrics.start(metrics_at, "serve", multiprocess=True)
        except metrics.MetricsError as exc:
            close_listeners(listeners)
            raise ServerError(str(exc)) from None
    ctx = Context(st, metrics.instrument(models))
    where = ", ".join(lst.where for lst in listeners)
    log.info("nnspam serve: listening on %s, model %s, %d worker%s", where, st.filter.model,
             workers, "s" if workers > 1 else "")
    print(f"nnspam serve: listening on {where}", file=sys.stderr, flush=True)
    if exporter is not None:
        print(f"nnspam serve: metrics on {exporter.where}", file=sys.stderr, flush=True)
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
        close_listeners(listeners)
        if exporter is not None:
            exporter.close()
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
                metrics.worker_ended(pid, expected=False)
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
            metrics.worker_ended(pid, expected=True)


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
