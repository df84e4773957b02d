"""Prometheus metrics of ``nnspam serve`` and ``nnspam daemon``: ``GET /metrics`` on
``--metrics HOST:PORT`` (or ``metrics: HOST:PORT`` in the config; off by default).

What is counted (:data:`METRICS` lists every name, its type, labels and help):

* messages scored, by ``front`` (serve, daemon) and ``verdict`` (spam, ham, unsure,
  skipped: over the size cap, error: the scorer failed and the message passed
  unchanged), and the scoring latency (tokenize + score, and for the server the
  header marking and the wait for the model's lock) as a histogram in seconds;
* corrections learned, by ``path`` (``tell``: a TELL / ``spamc -L``; ``daemon``: a
  message the user moved into or out of Junk; ``confident``: the daemon's
  ``adaptive.learn_on_confident`` self-training) and ``class`` (spam, ham; ``forget``:
  a ``spamc -L forget`` that undid an earlier lesson);
* model reloads, by ``reason`` (``changed``: another process saved the model
  directory and it was read again; ``signal``: SIGHUP), and model saves;
* errors, by ``kind`` (:data:`ERROR_KINDS`);
* for the server the connections in progress (= busy handler threads) beside the
  handler threads there are; for the daemon the depth of its event queue.

Why hooks: the modules that do the work call the module-level functions below
(:func:`scored`, :func:`learned`, :func:`error`, ...), which do nothing but test one
global while metrics are off (this module imports only the standard library), so
``nnspam learn`` and the SMS store, which share the sorter, pay one test per call and
never import ``prometheus_client``: only :func:`start` does, and only ``nnspam serve``
/ ``nnspam daemon`` with metrics on call it. The pipe filter (``nnspam filter``, once
per delivered message) does not even import this module.

Pre-forked workers: ``nnspam serve`` runs ``serve.workers`` processes, and a
scrape must see the sum of them all, including workers that died and were
replaced. :func:`start` in the supervisor, before it forks, makes a private
temporary directory and uses prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``): every process writes its own values to
memory-mapped files there (prometheus_client notices the fork by the pid), and
the supervisor's ``/metrics`` adds up the files of every process, live or dead.
The gauges are ``livesum``: a dead worker's files are dropped with
``mark_process_dead`` when the supervisor reaps it (:func:`worker_ended`), so
its connections stop counting as in progress, while its counters stay in the
sums. The directory is removed when the server exits (:meth:`Exporter.close`);
a supervisor killed with SIGKILL leaves it in the temporary directory. The
daemon is one process and keeps its metrics in memory (a private registry).

The ``/metrics`` endpoint is prometheus_client's threaded HTTP server in the
supervisor (one daemon thread; workers forked later close their copy of its
socket, :func:`os.register_at_fork`). Measured: the hooks of one request cost about
20 us of CPU in multiprocess mode (a request about 2.5 ms), a scrape about 6 ms in
the supervisor; ``scripts/bench/metrics.py`` measures the whole server on and off.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["METRICS", "VERDICTS", "PATHS", "ERROR_KINDS", "BUCKETS", "MetricsError",
           "Metrics", "Exporter", "address", "start", "active", "scored", "learned",
           "reloaded", "saved", "error", "request_error", "in_progress", "handler_threads",
           "watch_queue", "worker_ended", "instrument"]

log = logging.getLogger("nnspam.metrics")

FRONTS = ("serve", "daemon")
#: The verdicts a message is counted under (scoring.Result.verdict, the daemon's).
VERDICTS = ("spam", "ham", "unsure", "skipped", "error")
#: The paths a correction is learned by, per front.
PATHS = {"serve": ("tell",), "daemon": ("daemon", "confident")}
RELOAD_REASONS = ("changed", "signal")
#: The kinds of error counted, per front. The server's request errors are named by the
#: sysexits code of its SPAMD answer (:data:`REQUEST_ERRORS`); ``refused`` is a client
#: outside serve.allowed, ``connection`` a client that timed out or hung up, ``classify``
#: a scorer that failed (the message passed unchanged), ``handler`` a bug in a request
#: handler, ``reload`` a SIGHUP reload that failed, ``worker_exit`` a worker process that
#: died and was replaced. The daemon's: ``message`` (a message's handler failed; it is
#: left where it was), ``worker`` (the worker loop itself), ``reload``, ``checkpoint``.
REQUEST_ERRORS = {64: "usage", 65: "dataerr", 67: "nouser", 69: "unavailable",
                  73: "cantcreat", 74: "ioerr", 76: "protocol", 77: "noperm"}
ERROR_KINDS = {
    "serve": (*REQUEST_ERRORS.values(), "request", "refused", "connection", "classify",
              "handler", "reload", "worker_exit"),
    "daemon": ("message", "worker", "reload", "checkpoint"),
}
#: Histogram buckets of the scoring latency, seconds: a message scores in about a
#: millisecond on an idle core; a big one, a busy host or a model reload take longer.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
           5.0, 10.0)

#: Every metric: name -> (type, labels, help). The names follow Prometheus' rules:
#: the ``nnspam_`` prefix, counters end in ``_total``, units in base units (seconds).
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "nnspam_messages_scored_total": (
        "counter", ("front", "verdict"),
        "Messages scored, by front (serve, daemon) and verdict (spam, ham, unsure, "
        "skipped: over the size cap, error: passed unchanged)."),
    "nnspam_scoring_duration_seconds": (
        "histogram", ("front",),
        "Time to score one message (tokenize and score; the server also marks the "
        "headers and waits for the model's lock), seconds."),
    "nnspam_corrections_learned_total": (
        "counter", ("path", "class"),
        "Corrections learned, by path (tell: TELL/spamc -L, daemon: moved into or out "
        "of Junk, confident: learn_on_confident) and class (spam, ham; forget: a lesson "
        "undone by spamc -L forget)."),
    "nnspam_model_reloads_total": (
        "counter", ("front", "reason"),
        "Models loaded again, by reason (changed: saved by another process, signal: "
        "SIGHUP)."),
    "nnspam_model_saves_total": (
        "counter", ("front",), "Model directories saved (TELL, daemon checkpoints)."),
    "nnspam_errors_total": (
        "counter", ("front", "kind"), "Errors, by kind (docs/guides/explain-undo.md \"Metrics\")."),
    "nnspam_serve_connections_in_progress": (
        "gauge", (), "Connections being served now (= busy handler threads), all workers."),
    "nnspam_serve_handler_threads": (
        "gauge", (), "Handler threads of the live workers (workers x serve.max_connections)."),
    "nnspam_daemon_queue_depth": (
        "gauge", (), "Events waiting in the daemon's queue."),
}

_MULTIPROC_ENV = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")


class MetricsError(Exception):
    """Metrics asked for but impossible: a bad address, a port in use, no prometheus_client
    (one line; the command exits 2 before it starts)."""


def address(cfg: dict[str, Any], option: str | None) -> tuple[str, int] | None:
    """The address to serve ``/metrics`` on: ``--metrics`` (``option``) when given, else
    the config's ``metrics`` setting; None when both are unset (metrics off). Checked
    as ``serve.listen`` is (:func:`nnspam.services.errors.parse_listen`: IP:PORT
    or [IPv6]:PORT, port 0..65535), and prometheus_client must be installed (the
    ``metrics`` extra), so that either mistake is one line before anything starts."""
    from nnspam.services.errors import ServerError, parse_listen

    value = option if option is not None else cfg.get("metrics")
    if value is None:
        return None
    try:
        addr = parse_listen(value, "--metrics" if option is not None else "metrics")
    except ServerError as exc:
        raise MetricsError(str(exc)) from None
    if importlib.util.find_spec("prometheus_client") is None:
        raise MetricsError("metrics need prometheus_client: pip install 'nnspam[metrics]'")
    return addr


class Metrics:
    """The metric objects of one front, and the counting the hooks ask for.

    ``registry``: where the metrics are registered (the daemon's private registry), or
    None in multiprocess mode, where they are registered nowhere and the scrape reads
    the processes' files instead. Every label combination the front can report is
    created at once, so that every series exists (at 0) from the first scrape on and
    ``rate()``/``increase()`` see its first increment."""

    def __init__(self, front: str, registry: Any, multiprocess: bool) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        if front not in FRONTS:
            raise ValueError(f"front must be one of {FRONTS}, not {front!r}")
        self.front = front
        self.multiprocess = multiprocess

        def make(name: str, **kw: Any) -> Any:
            kind, labels, doc = METRICS[name]
            cls = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}[kind]
            return cls(name, doc, labels, registry=registry, **kw)

        live = {"multiprocess_mode": "livesum"}
        self.scored = make("nnspam_messages_scored_total")
        self.duration = make("nnspam_scoring_duration_seconds", buckets=BUCKETS)
        self.learned = make("nnspam_corrections_learned_total")
        self.reloads = make("nnspam_model_reloads_total")
        self.saves = make("nnspam_model_saves_total")
        self.errors = make("nnspam_errors_total")
        self.in_progress: Any = None
        self.threads: Any = None
        self.queue: Any = None
        if front == "serve":
            self.in_progress = make("nnspam_serve_connections_in_progress", **live)
            self.threads = make("nnspam_serve_handler_threads", **live)
        else:
            self.queue = make("nnspam_daemon_queue_depth")
        # Every series of this front, at 0.
        for v in VERDICTS:
            self.scored.labels(front, v)
        self.duration.labels(front)
        for path in PATHS[front]:
            for cls in ("spam", "ham"):
                self.learned.labels(path, cls)
        for reason in RELOAD_REASONS:
            self.reloads.labels(front, reason)
        self.saves.labels(front)
        for kind in ERROR_KINDS[front]:
            self.errors.labels(front, kind)
        # The per-message series, looked up once: labels() costs as much as an inc.
        self._verdicts = {v: self.scored.labels(front, v) for v in VERDICTS}
        self._duration = self.duration.labels(front)

    def count_scored(self, verdict: str, seconds: float | None = None) -> None:
        """One message scored (``seconds``: how long it took; None for a skipped one)."""
        child = self._verdicts.get(verdict)
        (child if child is not None else self.scored.labels(self.front, verdict)).inc()
        if seconds is not None:
            self._duration.observe(seconds)

    def count_learned(self, path: str, cls: str, n: int = 1) -> None:
        """``n`` corrections of class ``cls`` learned by ``path``."""
        self.learned.labels(path, cls).inc(n)

    def count_error(self, kind: str) -> None:
        """One error of ``kind``."""
        self.errors.labels(self.front, kind).inc()


# -- the one active set of metrics (None: metrics off) and the hooks ----------------

_active: Metrics | None = None


def active() -> Metrics | None:
    """The metrics being collected in this process, or None when metrics are off."""
    return _active


def scored(verdict: str, seconds: float | None = None) -> None:
    """Hook: one message scored with ``verdict`` in ``seconds`` (None: not scored,
    e.g. skipped for its size)."""
    m = _active
    if m is not None:
        m.count_scored(verdict, seconds)


def learned(path: str, cls: str, n: int = 1) -> None:
    """Hook: ``n`` corrections of class ``cls`` (spam, ham) learned by ``path``."""
    m = _active
    if m is not None:
        m.count_learned(path, cls, n)


def reloaded(reason: str) -> None:
    """Hook: the model was loaded again (``changed`` on disk, ``signal``: SIGHUP)."""
    m = _active
    if m is not None:
        m.reloads.labels(m.front, reason).inc()


def saved() -> None:
    """Hook: a model directory was saved."""
    m = _active
    if m is not None:
        m.saves.labels(m.front).inc()


def error(kind: str) -> None:
    """Hook: one error of ``kind`` (:data:`ERROR_KINDS`)."""
    m = _active
    if m is not None:
        m.count_error(kind)


def request_error(code: int) -> None:
    """Hook: the server answered a request with the SPAMD error ``code`` (sysexits)."""
    m = _active
    if m is not None:
        m.count_error(REQUEST_ERRORS.get(code, "request"))


@contextlib.contextmanager
def in_progress() -> Iterator[None]:
    """Hook: the server serves one connection for the duration of the ``with``."""
    m = _active
    if m is None or m.in_progress is None:
        yield
        return
    m.in_progress.inc()
    try:
        yield
    finally:
        m.in_progress.dec()


def handler_threads(n: int) -> None:
    """Hook: this server process has ``n`` handler threads (a worker at its start)."""
    m = _active
    if m is not None and m.threads is not None:
        m.threads.set(n)


def watch_queue(qsize: Callable[[], int]) -> None:
    """Hook: the daemon's event queue, whose ``qsize`` is read at every scrape."""
    m = _active
    if m is not None and m.queue is not None:
        m.queue.set_function(qsize)


def worker_ended(pid: int, expected: bool) -> None:
    """Hook for the server's supervisor: worker ``pid`` was reaped. Its live gauges
    stop counting (``mark_process_dead``); its counters stay in the sums. An
    unexpected end counts as a ``worker_exit`` error."""
    m = _active
    if m is None:
        return
    if not expected:
        m.count_error("worker_exit")
    d = _exporter.directory if _exporter is not None else None
    if m.multiprocess and d is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, d)


class _InstrumentedModels:
    """The server's models (:class:`nnspam.services.spamd.protocol.Models`) with every
    classification timed and counted by verdict, and every TELL learned counted."""

    def __init__(self, models: Any, metrics: Metrics) -> None:
        self._models = models
        self._metrics = metrics

    def classify(self, raw: bytes, *args: Any, **kwargs: Any) -> Any:
        """The wrapped ``classify``, timed and counted by its result's verdict."""
        t0 = time.perf_counter()
        res = self._models.classify(raw, *args, **kwargs)
        verdict = getattr(res, "verdict", "error")
        self._metrics.count_scored(verdict, time.perf_counter() - t0)
        if verdict == "error":
            self._metrics.count_error("classify")
        return res

    def learn(self, raw: bytes, label: str, *args: Any, **kwargs: Any) -> Any:
        """The wrapped ``learn`` (a TELL), counted when it learned the message (not when
        the model had learned it as that class already)."""
        res = self._models.learn(raw, label, *args, **kwargs)
        if isinstance(res, tuple) and res and res[0]:
            self._metrics.count_learned("tell", label)
        return res

    def forget(self, raw: bytes, *args: Any, **kwargs: Any) -> Any:
        """The wrapped ``forget`` (a TELL with ``Remove: local``), counted as class
        ``forget`` when it undid a lesson."""
        res = self._models.forget(raw, *args, **kwargs)
        if isinstance(res, tuple) and res and res[0]:
            self._metrics.count_learned("tell", "forget")
        return res

    def __getattr__(self, name: str) -> Any:
        return getattr(self._models, name)


def instrument(models: Any) -> Any:
    """``models`` counted by the active metrics (``models`` itself when metrics are off)."""
    m = _active
    return models if m is None else _InstrumentedModels(models, m)


# -- the /metrics endpoint -------------------------------------------------------------

def _writer_event(event: str) -> None:
    """:attr:`nnspam.model.writer.ModelWriter.observer`: a model re-read or saved."""
    if event == "reload":
        reloaded("changed")
    elif event == "save":
        saved()


class Exporter:
    """The running ``/metrics`` HTTP server of this process (:func:`start`)."""

    def __init__(self, httpd: Any, thread: threading.Thread, directory: str | None,
                 restore: dict[str, str | None]) -> None:
        self.httpd = httpd
        self.thread = thread
        self.directory = directory  # multiprocess files (removed by close), or None
        self._restore = restore
        self._pid = os.getpid()
        host, port = httpd.server_address[:2]
        self.host, self.port = host, port
        self.where = (f"http://[{host}]:{port}/metrics" if ":" in host
                      else f"http://{host}:{port}/metrics")

    def _forked(self) -> None:
        """In a forked child: close the inherited listening socket (the child does
        not serve /metrics, and must not keep the port open if it outlives us)."""
        try:
            self.httpd.socket.close()
        except OSError:
            pass

    def close(self) -> None:
        """Stop serving, turn the hooks off and remove the multiprocess directory."""
        global _active, _exporter
        if os.getpid() != self._pid:  # a forked child: never the parent's cleanup
            return
        from nnspam.model.writer import ModelWriter

        if _exporter is self:
            _active, _exporter = None, None
            if ModelWriter.observer is _writer_event:
                ModelWriter.observer = None
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
        if self.directory is not None:
            from prometheus_client import values

            values.ValueClass = values.MutexValue  # the files go: write nowhere further
            shutil.rmtree(self.directory, ignore_errors=True)
        for k, v in self._restore.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_exporter: Exporter | None = None


def _after_fork_in_child() -> None:
    if _exporter is not None:
        _exporter._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


def start(addr: tuple[str, int], front: str, multiprocess: bool = False) -> Exporter:
    """Turn the metrics of ``front`` on in this process and serve ``GET /metrics`` on
    ``addr`` (port 0: a free one, see :attr:`Exporter.port`) from a daemon thread.

    ``multiprocess`` (the server, before it forks its workers): values go to a new
    private temporary directory shared with the processes forked later, and
    ``/metrics`` adds up the files of all of them. Raises :class:`MetricsError` when
    the port cannot be bound or prometheus_client is missing. Call
    :meth:`Exporter.close` at exit."""
    global _active, _exporter
    if _exporter is not None:
        raise MetricsError("metrics are already being served in this process")
    try:
        import prometheus_client
        from prometheus_client import CollectorRegistry, values
    except ImportError:
        raise MetricsError("metrics need prometheus_client: pip install 'nnspam[metrics]'"
                           ) from None
    from nnspam.model.writer import ModelWriter

    restore = {k: os.environ.get(k) for k in _MULTIPROC_ENV}
    for k in _MULTIPROC_ENV:
        os.environ.pop(k, None)
    directory = None
    registry = CollectorRegistry(auto_describe=True)
    if multiprocess:
        from prometheus_client import multiprocess as mp

        directory = tempfile.mkdtemp(prefix="nnspam-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        mp.MultiProcessCollector(registry, path=directory)
    # The value class is chosen by prometheus_client from the environment when it is
    # first imported; chosen again here, for the mode asked for now.
    values.ValueClass = values.get_value_class()
    prometheus_client.disable_created_metrics()  # no *_created series: plain counters
    try:
        m = Metrics(front, None if multiprocess else registry, multiprocess)
        httpd, thread = prometheus_client.start_http_server(addr[1], addr[0], registry)
    except OSError as exc:
        values.ValueClass = values.MutexValue
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        for k, v in restore.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
        raise MetricsError(f"cannot serve metrics on {host}:{addr[1]}: "
                           f"{exc.strerror or exc}") from None
    thread.name = "nnspam-metrics"
    _exporter = Exporter(httpd, thread, directory, restore)
    _active = m
    ModelWriter.observer = _writer_event
    log.info("metrics: serving %s%s", _exporter.where,
             f" (worker files in {directory})" if directory else "")
    return _exporter
