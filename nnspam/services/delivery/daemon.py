"""The maildir daemon: ``nnspam daemon``.

Watches the inbox maildirs named in the config with inotify (watchdog) and
files every message that arrives in ``new/``: spam is moved into the Maildir++
Junk folder, ham stays (see :mod:`nnspam.services.delivery.sorter`). It also watches Junk and
the inbox's ``cur/`` to learn from the user's corrections, and notes when a
message leaves Junk (deleted, or moved away), so that only bytes appearing in
the inbox at about that time count as a "Not junk" move: the same spam
delivered again after the user deleted it is scored like any new message.

* Deliveries by ``link()`` (procmail, maildrop: IN_CREATE) and by
  ``rename()`` (Dovecot, mblaze: IN_MOVED_TO) are both seen. Each maildir is
  watched as one recursive tree, so a move from ``new/`` to ``.Junk/new/``
  pairs up inside one watch and no event waits for a partner.
* At start, after an inotify queue overflow and every ``rescan_interval``
  seconds, ``new/``, Junk and ``cur/`` are rescanned: nothing delivered while
  the daemon was down or while events were lost is missed. The state file
  makes rescans idempotent.
* One worker thread takes events from a queue in order. An error on one
  message is logged and the message left where it was; a message removed
  between the event and the read is skipped with a log line. The same error on
  the same file again (every rescan finds it in ``new/``) is not logged again
  (:data:`FAILED_KEPT` such files remembered): the log says it once, the daemon
  goes on with the other messages.
* A file name need not be UTF-8 (``b'\\xff\\xfe.host'``): it is filed like any
  other and kept byte for byte (:mod:`nnspam.services.delivery.state` stores such names as
  their bytes).
* Signals are blocked in every thread and taken by the main thread with
  ``sigtimedwait``: SIGTERM/SIGINT finish the message in hand, checkpoint the
  model and exit 0; SIGHUP checkpoints, then reloads the config and the model.
* Corrections and checkpoints go through the one model writer
  (:mod:`nnspam.model.writer`): under the model directory's lock, on top of what
  ``nnspam serve`` or ``nnspam learn`` saved there meanwhile, so a checkpoint
  never overwrites their lessons.
* systemd (:mod:`nnspam.services.systemd`, shared with ``nnspam serve``): with
  ``NOTIFY_SOCKET`` set it sends READY=1, RELOADING=1, STOPPING=1, STATUS=...
  and, with ``WATCHDOG_USEC`` set, WATCHDOG=1 at half the interval while the
  worker is alive.
* One log line per decision on stderr (journald): file, Message-ID,
  spamicity, action.
* Prometheus metrics with ``--metrics HOST:PORT`` or ``metrics:`` (off by default;
  :mod:`nnspam.services.metrics`): messages scored, latency, corrections, reloads,
  saves, errors and the event queue's depth at ``/metrics``.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnspam.config import DEFAULTS
from nnspam.mail import maildir as md
from nnspam.services import metrics
from nnspam.services.blas import one_blas_thread
from nnspam.services.delivery.state import Place
from nnspam.services.systemd import Watchdog, sd_notify

__all__ = ["Daemon", "DaemonError", "settings_from_config"]

log = logging.getLogger("nnspam.services.delivery.daemon")

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
FAILED_KEPT = 10_000  # files whose last error is remembered, not to log it at every rescan


class DaemonError(Exception):
    """A daemon that cannot start (bad maildir, unusable state file)."""


@dataclass
class DaemonSettings:
    """What the daemon needs from the config and the command line.

    ``config`` is the whole loaded config: the Sorter is built from it
    (:meth:`nnspam.services.delivery.sorter.Sorter.from_config`, as the SMS store builds its
    own), so the daemon keeps only what it uses itself beside it."""

    maildirs: list[Path]
    model: str
    state: str  # daemon.state
    rescan_interval: float  # daemon.rescan_interval
    config: dict[str, Any]
    rule: Any  # config learn: (nnspam.model.correct.rule_from_config), checked at start

    @property
    def junk(self) -> str:
        """The Maildir++ Junk folder (``daemon.junk``), the one the Sorter files into."""
        return str(self.config["daemon"]["junk"])

    @property
    def learn_from_corrections(self) -> bool:
        """``daemon.learn_from_corrections``, as the Sorter reads it."""
        return bool(self.config["daemon"]["learn_from_corrections"])


def _rule(cfg: dict[str, Any]) -> Any:
    from nnspam.model.correct import CorrectionError, rule_from_config

    try:
        return rule_from_config(cfg)
    except CorrectionError as exc:
        raise DaemonError(str(exc)) from None


def settings_from_config(cfg: dict[str, Any], maildirs: list[str] | None = None,
                         model: str | None = None) -> DaemonSettings:
    """Build :class:`DaemonSettings` from a loaded config; ``--maildir`` replaces
    the config's list, ``-m`` its model."""
    d = cfg["daemon"]
    dirs = maildirs if maildirs else list(d.get("maildirs") or [])
    if not dirs:
        raise DaemonError("no maildir to watch: give --maildir DIR or set daemon.maildirs "
                          "in the config")
    paths = []
    for x in dirs:
        p = Path(os.path.expanduser(str(x))).resolve()
        if not ((p / "new").is_dir() and (p / "cur").is_dir()):
            raise DaemonError(f"{x}: not a maildir (needs new/ and cur/)")
        paths.append(p)
    return DaemonSettings(
        maildirs=paths,
        model=str(model or cfg["model"]),
        state=str(d["state"]),
        rescan_interval=float(d["rescan_interval"] or 0),
        config=cfg,
        rule=_rule(cfg),
    )


class _OverflowWatch(logging.Handler):
    """watchdog reports an inotify queue overflow only as a log warning;
    this handler turns that warning into a rescan request."""

    def __init__(self, callback: Any) -> None:
        super().__init__(logging.WARNING)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if "overflow" in record.getMessage().lower():
                self.callback()
        except Exception:  # noqa: BLE001 - a logging handler must never raise
            pass


class Daemon:
    """The watcher, the queue, the worker and the signal loop."""

    def __init__(self, settings: DaemonSettings, config_file: str | None = None,
                 cli_maildirs: list[str] | None = None, cli_model: str | None = None,
                 metrics_at: tuple[str, int] | None = None) -> None:
        self.settings = settings
        self.config_file = config_file
        self.cli_maildirs = cli_maildirs
        self.cli_model = cli_model
        # Prometheus /metrics address (--metrics or metrics:), fixed at start: a SIGHUP
        # reload keeps it (nnspam.services.metrics).
        self.metrics_at = metrics_at
        self.exporter: Any = None
        # (kind, maildir, path), and for "gone" the time the watcher saw it go
        self.queue: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.stopping = threading.Event()
        self.heartbeat = time.monotonic()
        self.observer: Any = None
        self.sorter: Any = None
        self.state: Any = None
        self.worker: threading.Thread | None = None
        self.last_rescan = 0.0
        self.errors = 0
        # path -> the error it last failed with (logged once; see _safely)
        self._failed: dict[str, str] = {}
        self._overflow = _OverflowWatch(self.request_rescan)

    # -- set-up ------------------------------------------------------------
    def _load(self) -> None:
        """(Re)load the model and build the sorter for the current settings."""
        from nnspam.model.core import is_shipped
        from nnspam.model.writer import load_with_stamp
        from nnspam.services.delivery.sorter import Sorter
        from nnspam.services.delivery.state import State

        s = self.settings
        writer = None
        if s.config.get("store"):
            # a fleet's models in Redis: score with its model, corrections to its learner
            writer = self._store_writer(s)
            model, stamp = writer.model, None
        else:
            # With the stamp of what was read: the Sorter's writer re-reads, rather than
            # overwrites, a save another process (nnspam serve, nnspam learn) makes later.
            model, stamp = load_with_stamp(s.model)
        if writer is None and is_shipped(s.model) and s.learn_from_corrections:
            log.warning("model %s is the shipped, read-only model: corrections are recorded "
                        "but not learned (use -m DIR with a model of your own)", s.model)
        state_path = Path(os.path.expanduser(s.state))
        if self.state is None or self.state.path != state_path:
            # A state file in a missing directory is refused, not created: a mistyped
            # daemon.state would start a new, empty memory somewhere unseen. Only the
            # built-in default's own directory (~/.local/state/nnspam) is made, on first run.
            if (not state_path.parent.is_dir()
                    and state_path != Path(os.path.expanduser(DEFAULTS["daemon"]["state"]))):
                raise DaemonError(f"{state_path}: the directory {state_path.parent} does not "
                                  "exist (create it first)")
            if self.state is not None:
                self.state.close()
            try:
                self.state = State(state_path)
            except Exception as exc:  # noqa: BLE001 - any failure to open it: one DaemonError
                raise DaemonError(f"{state_path}: cannot open the state file ({exc})") from None
        old = self.sorter.writer if self.sorter is not None else None
        stats = self.sorter.stats if self.sorter is not None else None
        self.sorter = Sorter.from_config(s.config, model, self.state,
                                         model_name=None if writer else s.model,
                                         rule=s.rule, stamp=stamp, writer=writer)
        if stats is not None:  # the stop summary counts from the start, not the last SIGHUP
            self.sorter.stats = stats
        if old is not None:
            old.close()  # the store writer of before a reload
        for m in s.maildirs:
            md.ensure_folder(m, s.junk)
            n = self.sorter.baseline(m)
            if n:
                log.info("first run on %s: %d message(s) already in %s recorded, not learned",
                         m, n, s.junk)

    @staticmethod
    def _store_writer(s: DaemonSettings) -> Any:
        """The fleet store's writer (:class:`nnspam.services.models.fleet.StoreWriter`) for the
        config's ``store:``; a bad setting, a missing client or a store that refuses us
        (something other than Redis at that address: a wrong ``store:``) is a
        DaemonError, one line. A store that does not answer is not: the registry logs
        the outage and the daemon files with the model on disk until Redis is back."""
        from nnspam.services.errors import ServerError
        from nnspam.services.models.fleet import store_writer
        from nnspam.services.models.store import NotRedis, StoreError, redact

        try:
            writer = store_writer(s.config, s.model)
        except (ServerError, NotRedis) as exc:
            raise DaemonError(str(exc)) from None
        except StoreError as exc:
            raise DaemonError(f"model store {redact(s.config['store'])}: {exc}") from None
        log.info("models from the store %s (%s)", writer.registry.outage.where, writer.name)
        return writer

    def _watch(self) -> None:
        """(Re)start the inotify observer on every maildir tree."""
        from watchdog.events import (
            FileCreatedEvent,
            FileDeletedEvent,
            FileMovedEvent,
            FileSystemEvent,
            FileSystemEventHandler,
        )
        from watchdog.observers import Observer

        daemon = self

        class Handler(FileSystemEventHandler):
            def on_created(self, event: FileSystemEvent) -> None:
                daemon.on_path(os.fsdecode(event.src_path))

            def on_moved(self, event: FileSystemEvent) -> None:
                daemon.on_path(os.fsdecode(event.dest_path))
                daemon.on_gone(os.fsdecode(event.src_path))

            def on_deleted(self, event: FileSystemEvent) -> None:
                daemon.on_gone(os.fsdecode(event.src_path))

        if self.observer is not None:
            self.observer.stop()
            self.observer.join()
        obs = Observer()
        handler = Handler()
        for m in self.settings.maildirs:
            obs.schedule(handler, str(m), recursive=True,
                         event_filter=[FileCreatedEvent, FileMovedEvent, FileDeletedEvent])
            junk = md.folder_path(m, self.settings.junk).resolve()
            if not junk.is_relative_to(m):  # a symlinked Junk on another tree
                obs.schedule(handler, str(junk), recursive=True,
                             event_filter=[FileCreatedEvent, FileMovedEvent, FileDeletedEvent])
        obs.daemon = True
        obs.start()
        self.observer = obs

    # -- events -------------------------------------------------------------
    def classify_path(self, path: str) -> tuple[str, Path, Path] | None:
        """Map a file path to (kind, maildir, path): ``new``/``cur`` of an inbox or ``junk``."""
        p = Path(path)
        if not md.is_message_name(p.name):
            return None
        sub, folder = p.parent.name, p.parent.parent
        if sub not in ("new", "cur"):
            return None
        for m in self.settings.maildirs:
            if folder == m:
                return (sub, m, p)
            junk = md.folder_path(m, self.settings.junk)
            if folder == junk or folder == junk.resolve():
                return ("junk", m, p)
        return None

    def on_path(self, path: str) -> None:
        """Called from the watchdog thread for a created or moved-in file."""
        item = self.classify_path(path)
        if item is not None:
            self.queue.put(item)

    def on_gone(self, path: str) -> None:
        """Called from the watchdog thread for a deleted or moved-away file: a
        Junk message's going is queued with the time it was seen."""
        item = self.classify_path(path)
        if item is not None and item[0] == "junk":
            self.queue.put(("gone", item[1], item[2], time.time()))

    def request_rescan(self) -> None:
        """Queue a rescan of every maildir (after an inotify overflow)."""
        log.warning("inotify queue overflow: rescanning the maildirs")
        for m in self.settings.maildirs:
            self.queue.put(("rescan", m, None))

    def rescan(self, maildir: Path) -> None:
        """Everything the events may have missed, in delivery order."""
        sorter, state, key = self.sorter, self.state, self.sorter.key(maildir)
        t0 = time.monotonic()
        counts: dict[str, int] = {}

        def tally(what: str) -> None:
            counts[what] = counts.get(what, 0) + 1

        for rec in list(state.records(key, Place.MOVING)):  # a move cut short by a crash
            p = md.find_message(maildir, rec.uniq)
            if p is not None:
                self._safely(sorter.handle_new, maildir, p, tally)
            else:
                state.set_place(key, rec.uniq, Place.JUNK if md.find_message(
                    sorter.junk_dir(maildir), rec.uniq) else Place.INBOX)
        for p in md.list_messages(maildir, ("new",)):
            if self.stopping.is_set():
                return
            self._safely(sorter.handle_new, maildir, p, tally)
        junk = sorter.junk_dir(maildir)
        for p in md.list_messages(junk):
            if self.stopping.is_set():
                return
            self._safely(sorter.handle_junk, maildir, p, tally)
        in_junk = {r.uniq for r in state.records(key, Place.JUNK)}
        in_junk |= {r.uniq for r in state.records(key, Place.GONE)}
        if in_junk:
            for p in md.list_messages(maildir, ("cur",)):
                if md.base_name(p.name) in in_junk:
                    self._safely(sorter.handle_inbox_cur, maildir, p, tally)
        # Last: Junk messages that left unseen (down, events lost) are gone from now.
        for _ in range(sorter.sweep_junk(maildir)):
            tally("gone")
        self.last_rescan = time.monotonic()
        log.info("rescan of %s done in %.2fs: %s", maildir, time.monotonic() - t0,
                 ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing new")

    def _safely(self, fn: Any, maildir: Path, path: Path, tally: Any = None) -> None:
        """Run one message's handler; an error is logged and the message left alone.

        Logged once per file and error: a message that fails the same way again (each
        rescan finds it in ``new/`` again) is counted but not logged again, so that one
        bad file does not fill the log; a success, or another error, clears that."""
        self.heartbeat = time.monotonic()
        where = str(path)
        try:
            what = fn(maildir, path)
        except Exception as exc:
            self.errors += 1
            metrics.error("message")
            why = f"{exc.__class__.__name__}: {exc}"
            if self._failed.get(where) != why:
                log.error("error file=%s: %s; the message is left where it is", path, why)
                log.debug("traceback", exc_info=True)
                if len(self._failed) >= FAILED_KEPT:
                    self._failed.clear()
                self._failed[where] = why
            what = "error"
        else:
            self._failed.pop(where, None)
        if tally is not None:
            tally(what)

    # -- the worker ----------------------------------------------------------
    def _work(self) -> None:
        handlers = {"new": "handle_new", "cur": "handle_inbox_cur", "junk": "handle_junk"}
        while not self.stopping.is_set():
            self.heartbeat = time.monotonic()
            try:
                kind, maildir, path, *at = self.queue.get(timeout=0.25)
            except queue.Empty:
                ri = self.settings.rescan_interval
                if ri and time.monotonic() - self.last_rescan > ri:
                    for m in self.settings.maildirs:
                        self._safely(lambda m, _p: self.rescan(m), m, m)
                continue
            try:
                if kind == "rescan":
                    self._safely(lambda m, _p: self.rescan(m), maildir, maildir)
                elif kind == "reload":
                    self._reload()
                elif kind == "gone":
                    self._safely(functools.partial(self.sorter.handle_junk_gone, at=at[0]),
                                 maildir, path)
                elif path is not None:
                    self._safely(getattr(self.sorter, handlers[kind]), maildir, path)
            except Exception:  # keep the worker alive whatever happens
                self.errors += 1
                metrics.error("worker")
                log.exception("error handling %s %s", kind, path or maildir)

    def _reload(self) -> None:
        """SIGHUP, run by the worker between messages: checkpoint, then reload
        the config and the model; a bad config or model keeps the old ones."""
        from nnspam.config import load_config

        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        sd_notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")
        try:
            self.sorter.checkpoint()
        except Exception as exc:  # noqa: BLE001 - a failed checkpoint does not stop the reload
            log.error("checkpoint before reload failed: %s", exc)
            metrics.error("checkpoint")
        old = self.settings
        try:
            cfg = load_config(self.config_file)
            self.settings = settings_from_config(cfg, self.cli_maildirs, self.cli_model)
            self._load()
        except Exception as exc:  # noqa: BLE001 - keep the old config and model
            log.error("reload failed, keeping the old config and model: %s", exc)
            metrics.error("reload")
            self.settings = old
        else:
            metrics.reloaded("signal")
            if [str(m) for m in old.maildirs] != [str(m) for m in self.settings.maildirs] \
                    or old.junk != self.settings.junk:
                self._watch()
            for m in self.settings.maildirs:
                self.rescan(m)
            log.info("reloaded config and model %s", self.settings.model)
        sd_notify("READY=1\n" + self._status())

    def _status(self) -> str:
        st = self.sorter.stats if self.sorter else {}
        return (f"STATUS=watching {len(self.settings.maildirs)} maildir(s); "
                f"{st.get('scored', 0)} scored, {st.get('spam', 0)} spam, "
                f"{st.get('learned', 0)} learned, {self.errors} errors")

    # -- main ------------------------------------------------------------------
    def run(self) -> int:
        """Start everything, then wait for signals until SIGTERM/SIGINT."""
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)  # before any thread starts
        one_blas_thread()
        self._start_metrics()
        logging.getLogger("watchdog").addHandler(self._overflow)
        try:
            self._load()
            self._watch()
        except BaseException:
            self._stop_metrics()
            raise
        for m in self.settings.maildirs:
            self.queue.put(("rescan", m, None))
        self.worker = threading.Thread(target=self._work, name="nnspam-worker", daemon=True)
        self.worker.start()
        log.info("watching %s (junk folder %s, model %s, state %s)",
                 ", ".join(map(str, self.settings.maildirs)), self.settings.junk,
                 self.settings.model, self.settings.state)
        sd_notify("READY=1\n" + self._status())
        watchdog = Watchdog()
        wd = watchdog.interval
        last_status = time.monotonic()
        try:
            while True:
                timeout = min(wd, 1.0) if wd else 1.0
                sig = signal.sigtimedwait(_SIGNALS, timeout)
                now = time.monotonic()
                if sig is not None and sig.si_signo in (signal.SIGTERM, signal.SIGINT):
                    log.info("%s: finishing the message in hand and stopping",
                             signal.Signals(sig.si_signo).name)
                    break
                if sig is not None and sig.si_signo == signal.SIGHUP:
                    log.info("SIGHUP: reloading config and model")
                    self.queue.put(("reload", Path("."), None))
                if not self.worker.is_alive():
                    log.error("the worker thread died; stopping")
                    break
                if wd:  # pinged only while the worker takes events (its heartbeat)
                    watchdog.ping(alive=now - self.heartbeat < max(2 * wd, 1.0), now=now)
                if now - last_status >= 5:
                    sd_notify(self._status())
                    last_status = now
        finally:
            sd_notify("STOPPING=1")
            self.stopping.set()
            if self.worker is not None:
                self.worker.join()
            if self.observer is not None:
                self.observer.stop()
                self.observer.join(timeout=5)
            code = 0
            try:
                self.sorter.checkpoint()
            except Exception as exc:  # noqa: BLE001 - the shutdown goes on, exit status 1
                log.error("checkpoint at shutdown failed: %s", exc)
                metrics.error("checkpoint")
                code = 1
            if self.sorter is not None and self.sorter.writer is not None:
                self.sorter.writer.close()  # a fleet store's: send what is left
            log.info("stopped: %s", self._status()[len("STATUS="):])
            if self.state is not None:
                self.state.close()
            self._stop_metrics()
        return code

    def _start_metrics(self) -> None:
        """Serve Prometheus metrics on ``metrics_at`` (:mod:`nnspam.services.metrics`)
        before anything else starts, so that a port in use is one line (DaemonError).
        Called with the signals blocked: the HTTP server's thread inherits the mask and
        leaves them to the main thread's ``sigtimedwait``."""
        if self.metrics_at is None:
            return
        try:
            self.exporter = metrics.start(self.metrics_at, "daemon")
        except metrics.MetricsError as exc:
            raise DaemonError(str(exc)) from None
        metrics.watch_queue(self.queue.qsize)

    def _stop_metrics(self) -> None:
        if self.exporter is not None:
            self.exporter.close()
            self.exporter = None


def setup_logging(level: int = logging.INFO) -> None:
    """One line per event on stderr, with the time unless journald adds it
    (:func:`nnspam.services.systemd.log_format`)."""
    from nnspam.services.systemd import log_format

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(log_format()))
    root = logging.getLogger("nnspam")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    logging.getLogger("watchdog").setLevel(logging.WARNING)
