"""``nnspam serve``: a scoring server that speaks SpamAssassin's SPAMC/SPAMD
protocol, so that ``spamc`` (and everything built on it: procmail and
maildrop recipes, Exim's ``spam =`` condition, spamass-milter, IMAPSieve
learning with ``spamc -L``) uses nnspam without a Python start per message.

The request side is :mod:`nnspam.services.spamd` (protocol, verbs, errors), the
models :mod:`nnspam.services.registry` (site and per-user models), the sockets
:mod:`nnspam.services.listeners` and the settings :mod:`nnspam.services.serve_settings`;
this module runs them: the workers, their supervisor and the signals.

Workers (pre-fork): the supervisor process loads the model, binds the
sockets (or takes them from systemd socket activation: ``LISTEN_FDS`` /
``LISTEN_PID``), sends ``READY=1`` to ``$NOTIFY_SOCKET`` (``Type=notify``;
:mod:`nnspam.services.systemd`, as the daemon; with ``WatchdogSec=`` also ``WATCHDOG=1``
at half the interval while its loop turns) and forks ``serve.workers``
processes (default one per core) that share the listening sockets and,
copy-on-write, the loaded model. Each worker accepts
only while one of its ``serve.max_connections`` handler threads is free;
other clients wait in the kernel's listen backlog for any worker. A worker
that dies is replaced. Every request costs one ``stat`` of the model's
``weights.npz`` (inode, mtime, size): a model saved by a TELL in another
worker, or by ``nnspam learn``, is loaded on the next request, no signal
needed. With ``workers: 1`` the supervisor serves by itself.

A fleet (config ``store: redis://...``): the models live in Redis instead, and each
worker runs a watcher and a learner thread (:mod:`nnspam.services.fleet`, started
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
jobs, load average 9-13): see README "Scoring server".
"""

from __future__ import annotations

import logging
import os
import queue
import select
import selectors
import signal
import socket
import sys
import threading
import time
from typing import Any

from nnspam.services import metrics
from nnspam.services.blas import one_blas_thread
from nnspam.services.listeners import Listener, bind_listeners, close_listeners
from nnspam.services.registry import ModelRegistry
from nnspam.services.serve_settings import ServerError, ServeSettings
from nnspam.services.spamd import CHUNK, EX_SOFTWARE, Context, Handler
from nnspam.services.systemd import Watchdog, sd_notify

__all__ = ["Worker", "run_server", "resolve_workers"]

log = logging.getLogger("nnspam.serve")

POLL = 0.25  # seconds between checks of the stop flag


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
                metrics.reloaded("signal")
            except Exception as exc:  # noqa: BLE001 - keep serving the old model
                log.error("reload failed, keeping the old model: %s", exc)
                metrics.error("reload")
        threading.Thread(target=go, daemon=True).start()

    def run(self) -> None:
        """Serve until :meth:`stop`, then drain."""
        n = max(1, self.ctx.settings.max_connections)
        metrics.handler_threads(n)
        free = threading.Semaphore(n)
        jobs: queue.SimpleQueue[tuple[socket.socket, Any] | None] = queue.SimpleQueue()
        handlers = [threading.Thread(target=self._handle_loop, args=(jobs, free),
                                     name=f"nnspam-serve-{i}") for i in range(n)]
        for t in handlers:
            t.start()
        sel = _AcceptSelector([lst.sock for lst in self.listeners])
        # the registry's threads of this process (a fleet's watcher and learner)
        background = getattr(self.ctx.models, "start_background", None)
        if background is not None:
            background()
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
            if background is not None:
                self.ctx.models.stop_background()

    def _handle_loop(self, jobs: queue.SimpleQueue, free: threading.Semaphore) -> None:
        while (job := jobs.get()) is not None:
            conn, addr = job
            try:
                with metrics.in_progress():
                    Handler(conn, addr, self.ctx)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - one connection's bug never ends the worker
                log.exception("request failed")
                metrics.error("handler")
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
        if st.store:  # a fleet: the models live in Redis (nnspam.services.fleet)
            from nnspam.services.fleet import FleetRegistry

            models: ModelRegistry = FleetRegistry(st)
        else:
            models = ModelRegistry(st)
    except ServerError:
        raise
    except Exception as exc:  # noqa: BLE001 - any load problem is fatal at start
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
