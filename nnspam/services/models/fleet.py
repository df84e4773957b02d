"""A fleet of ``nnspam serve`` instances sharing their models through Redis (config
``store: redis://HOST:PORT/DB``; the keys: :mod:`nnspam.services.models.store`).

Scoring (:class:`FleetRegistry`, the server's model registry when a store is
configured): every worker process holds the site model and up to
``serve.user_cache`` per-user models in memory, as with models on disk, and scores
with them without asking Redis anything. A watcher thread per worker reads one
counter (``nnspam:epoch``) every 0.2 s; when it moved, the table of versions, and it
loads the new version of every model it holds (in the background: the request path
keeps scoring with the model it has until the new one is ready). A per-user model
is the site model overlaid with the user's delta (:mod:`nnspam.model.delta`): it
shares the site model's network in memory, and is rebuilt on the new site model
when that changes. A user whose model is not held is looked up in the watcher's
table (no Redis call) and loaded on first use.

Learning: a TELL (``spamc -L``) or ``nnspam learn`` appends the message to the
stream ``nnspam:corrections`` and answers once Redis has it (``Set``: at once;
``Remove`` waits for the learner's answer, which says whether the journal held the
message). Exactly one learner in the fleet consumes the stream: every worker
process runs a :class:`FleetLearner` thread that tries to take the lease
``nnspam:learner`` (10 s, renewed while it works); its holder learns each
correction through the one correction routine (:func:`nnspam.model.correct.correct`
and :func:`~nnspam.model.correct.forget`) into its own copy of the model, publishes
the new version (fenced by the lease: a learner that lost it cannot publish), then
acknowledges and deletes the entries. A learner that dies leaves its entries pending;
the next lease holder claims them. Each version records the id of the last
correction it holds, so an entry learned but not yet acknowledged when its learner
died is not learned twice.

Redis away: the servers score with the models they hold; a TELL answers
EX_TEMPFAIL (75: the MTA or the user tries again); the outage is logged once per
process and its end once; the watcher retries with a backoff (0.25 s doubling to
5 s) and, once Redis answers, loads whatever changed. A server started while Redis
is away scores with ``-m MODEL`` (or the config's ``model``) from disk. A Redis
that comes back empty (no persistence) is seeded again with the site model the
servers hold; per-user models and unlearned corrections are lost with its data:
run Redis with ``appendonly yes`` to keep them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from nnspam.services.errors import EX_IOERR, EX_NOUSER, EX_TEMPFAIL, RequestError, ServerError
from nnspam.services.models.registry import ModelRegistry, user_model_path
from nnspam.services.models.serve_settings import ServeSettings
from nnspam.services.models.store import (
    SITE,
    LeaseLost,
    Outage,
    Store,
    StoreError,
    StoreUnavailable,
    VersionMoved,
)

if TYPE_CHECKING:
    from nnspam.model.core import Model

__all__ = ["FleetRegistry", "FleetSlot", "FleetLearner", "StoreWriter", "files_of",
           "generation_of", "model_name", "new_site_meta", "redacted", "replace_site",
           "rule_json", "store_writer"]

log = logging.getLogger("nnspam.serve")

WATCH = 0.2  # seconds between reads of the store's epoch
FULL_SYNC = 5.0  # seconds between reads of the version table even if the epoch stayed
LEASE_MS = 10_000  # the learner's lease
LEARNER_USERS = 2  # per-user models the learner keeps in memory (21 MB each)
LEARNER_IDLE = 30.0  # seconds without corrections after which the learner drops its models
BATCH = 64  # corrections the learner takes at once
FORGET_WAIT = 10.0  # seconds a TELL Remove waits for the learner's answer
RETRY = 1.0  # seconds between a daemon's attempts to send corrections Redis refused
MODEL_FILES = ("model.json", "weights.npz", "journal.npz")


def redacted(url: str) -> str:
    """The store URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def model_name(pattern: str | None, user: str | None) -> str:
    """The store's name of the model that learns ``user``'s corrections: ``site``, or
    ``user:`` and ``serve.user_model`` expanded for the user (two users whose pattern
    expands alike share a model, e.g. ``%d``: one per domain). RequestError
    (EX_NOUSER) for a user name the pattern refuses."""
    if not pattern or not user:
        return SITE
    path = user_model_path(pattern, user)
    if path is None:
        raise RequestError(EX_NOUSER, "no such user for serve.user_model")
    return "user:" + str(path)


def rule_json(rule: Any) -> dict[str, Any]:
    """A correction rule (:class:`nnspam.model.correct.Rule`) as plain data for the stream."""
    if dataclasses.is_dataclass(rule) and not isinstance(rule, type):
        return dataclasses.asdict(rule)
    return {}


def rule_of(data: bytes | None, default: Any) -> Any:
    """The rule a correction was told with (its teller's ``learn:``), else ``default``."""
    from nnspam.model.correct import Rule

    try:
        d = json.loads(data) if data else {}
    except ValueError:
        d = {}
    if not isinstance(d, dict) or not d:
        return default
    names = {f.name for f in dataclasses.fields(Rule)}
    return Rule(**{k: v for k, v in d.items() if k in names})


def generation_of(fields: Mapping[str, bytes]) -> str:
    """Which training of the site model a stored version belongs to.

    A seed and every ``nnspam store push`` of a newly trained site model start a new
    generation (a random tag); corrections keep it. A per-user delta records the
    generation of the site model it was made on and is laid only over a site model of
    the same generation: over another training its indices mean other words.
    '' for versions stored before generations were recorded (taken as matching)."""
    return fields.get("generation", b"").decode()


def new_site_meta() -> dict[str, str]:
    """The meta fields of a site model stored as a new generation."""
    return {"kind": "full", "generation": secrets.token_hex(4)}


def _id_key(eid: str) -> tuple[int, int]:
    ms, _, seq = eid.partition("-")
    return int(ms), int(seq or 0)


def files_of(path: Path) -> tuple[Any, dict[str, bytes]]:
    """A model directory loaded (so its files are known to be a model) and its files' bytes."""
    from nnspam.model.core import Model

    model = Model.load(path)
    return model, {f: (path / f).read_bytes() for f in MODEL_FILES if (path / f).is_file()}


class FleetSlot:
    """One model a worker scores with (the site model or a user's), as the store
    published it: ``version`` (None: loaded from disk while Redis was away), for a
    per-user model also its delta and the site version it was built on."""

    def __init__(self, name: str, model: Model, version: str | None,
                 delta: Mapping[str, bytes] | None = None, base: str | None = None,
                 generation: str = "") -> None:
        self.name = name
        self.generation = generation  # the site model's training (see generation_of)
        self.path = Path(name)  # what the TELL log line names
        self.model = model
        self.version = version
        self.delta = delta
        self.base = base
        self.lock = threading.Lock()

    def current(self) -> Any:
        """The model to score with: the watcher swaps new versions in."""
        return self.model


class FleetRegistry(ModelRegistry):
    """The server's models when they live in the store (see the module docstring):
    classify as :class:`~nnspam.services.models.registry.ModelRegistry` does, with models
    the watcher keeps current; learn and forget through the stream."""

    def __init__(self, settings: ServeSettings) -> None:
        from nnspam.model.core import resolve_model_path

        if not settings.store:
            raise ServerError("FleetRegistry needs a store")
        try:
            self.store = Store(settings.store, timeout=FORGET_WAIT + 20)
        except ImportError:
            raise ServerError("store: needs the redis client: pip install 'nnspam[redis]'"
                              ) from None
        self.settings = settings
        self.site_readonly = False  # the site model in the store is the fleet's own copy
        # FleetSlot for ModelSlot, keyed by store name: what this class keeps of
        # ModelRegistry (classify) uses only what both slots have (current(), lock)
        self.users: OrderedDict[str, FleetSlot] = OrderedDict()  # type: ignore[assignment]
        self.users_lock = threading.Lock()
        self.outage = Outage(redacted(settings.store))
        self.versions: dict[str, str] | None = None  # the table, as the watcher last read it
        self.seed_path = resolve_model_path(settings.filter.model)
        self.site: FleetSlot = self._load_site()  # type: ignore[assignment]  # as users
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._resync = False
        self.learner: FleetLearner | None = None

    # -- loading -------------------------------------------------------------
    def _load_site(self) -> FleetSlot:
        """The site model from the store; seeded there from ``-m``/``model`` when the
        store has none; from disk when Redis cannot be reached."""
        from nnspam.model.delta import model_from_files

        try:
            got = self.store.fetch(SITE)
            if got is None:
                _, files = files_of(self.seed_path)
                if self.store.seed(SITE, files, new_site_meta()):
                    log.info("model store: seeded the site model from %s", self.seed_path)
                got = self.store.fetch(SITE)
            if got is not None:
                version, fields = got
                log.info("site model version %s from the store", version)
                return FleetSlot(SITE, model_from_files(fields), version,
                                 generation=generation_of(fields))
        except StoreUnavailable as exc:
            self.outage.failed(exc)
        model, _ = files_of(self.seed_path)
        log.warning("site model from %s (not from the store)", self.seed_path)
        return FleetSlot(SITE, model, None)

    def reload(self) -> None:
        """SIGHUP: the site model again from the store; the cached user models dropped."""
        from nnspam.model.delta import model_from_files

        got = self.store.fetch(SITE)
        if got is None:
            raise StoreError("the store has no site model")
        model = model_from_files(got[1])
        with self.site.lock:
            self.site.model, self.site.version = model, got[0]
            self.site.generation = generation_of(got[1])
        with self.users_lock:
            self.users.clear()

    def _build_user(self, name: str, version: str, fields: Mapping[str, bytes]) -> FleetSlot:
        from nnspam.model.delta import DeltaError, apply_delta

        with self.site.lock:
            site, base, gen = self.site.model, self.site.version, self.site.generation
        made_on = generation_of(fields)
        if made_on and gen and made_on != gen:
            # a push of a new site model is under way: its rebased deltas and the new site
            # model arrive one after the other; until both are here, keep what we have
            raise DeltaError(f"{name} was made on another training of the site model")
        return FleetSlot(name, apply_delta(site, fields), version, fields, base, made_on)

    def slot_for(self, user: str | None) -> FleetSlot:  # type: ignore[override]  # as users
        """The model that scores ``user``'s mail: theirs when the store has one, else
        the site model (also while Redis is away and theirs is not loaded)."""
        from nnspam.model.delta import DeltaError

        path = self._user_path(user)
        if path is None:
            return self.site
        name = "user:" + str(path)
        with self.users_lock:
            slot = self.users.get(name)
            if slot is not None:
                self.users.move_to_end(name)
                return slot
        if self.outage.down:
            return self.site
        try:
            table = self.versions
            version = table.get(name) if table is not None else self.store.version(name)
            if version is None:
                return self.site
            got = self.store.fetch(name, version) or self.store.fetch(name)
            if got is None:
                return self.site
            slot = self._build_user(name, *got)
        except StoreUnavailable as exc:
            self.outage.failed(exc)
            return self.site
        except (StoreError, DeltaError, ValueError, KeyError) as exc:
            log.error("user model %s cannot be loaded, using the site model: %s", name, exc)
            return self.site
        with self.users_lock:
            slot = self.users.setdefault(name, slot)
            self.users.move_to_end(name)
            while len(self.users) > max(self.settings.user_cache, 0):
                self.users.popitem(last=False)
        latest = self.versions
        if latest is not None and latest.get(name) != slot.version:
            # the watcher read a newer table while this model was being built from the one
            # before, and looked over the cache before it was in: without another look it
            # would be served until the next change or full sync (a forget seen late by a
            # server: tests/test_fleet.py, about one module run in four)
            self._resync = True
        return slot

    # -- TELL -------------------------------------------------------------------
    def _send(self, name: str, op: str, raw: bytes, reply: bool, source: str = "tell",
              rule: Any = None) -> str:
        try:
            eid = self.store.add_correction(
                name, op, raw, rule_json(rule if rule is not None else self.settings.rule),
                source, reply)
        except StoreUnavailable as exc:
            self.outage.failed(exc)
            raise RequestError(EX_TEMPFAIL, "the model store is unreachable, try again "
                               "later") from None
        except StoreError as exc:
            raise RequestError(EX_IOERR, f"the model store refused the correction: {exc}"
                               ) from None
        self.outage.ok()
        return eid

    def learn(self, raw: bytes, label: str, user: str | None = None,
              deadline: float | None = None) -> tuple[bool, Path]:
        """Queue the lesson for the fleet's learner (durable in the stream when this
        returns; learned and seen by every server within about a second). Queuing
        takes one Redis round trip and waits for no lock: ``deadline`` is not needed."""
        name = model_name(self.settings.user_model, user)
        self._send(name, label, raw, reply=False)
        return True, Path(name)

    def forget(self, raw: bytes, user: str | None = None,
               deadline: float | None = None) -> tuple[bool, Path]:
        """Queue the undo of a lesson and wait for the learner's answer (whether the
        journal held the message); EX_TEMPFAIL when it does not come in time (the
        request stays queued)."""
        name = model_name(self.settings.user_model, user)
        eid = self._send(name, "forget", raw, reply=True)
        try:
            answer = self.store.wait_reply(eid, FORGET_WAIT)
        except StoreUnavailable as exc:
            self.outage.failed(exc)
            answer = None
        if answer is None:
            raise RequestError(EX_TEMPFAIL, "forget queued; the learner did not confirm it "
                               "in time")
        return answer == "1", Path(name)

    # -- background: watcher and learner ------------------------------------------
    def start_background(self) -> None:
        """Start this process's watcher and learner threads (each worker after the fork)."""
        _fixed_mmap_threshold()
        self._stop.clear()
        self.learner = FleetLearner(self)
        self._threads = [threading.Thread(target=self._watch, name="nnspam-fleet-watch",
                                          daemon=True),
                         threading.Thread(target=self.learner.run, args=(self._stop,),
                                          name="nnspam-fleet-learn", daemon=True)]
        for t in self._threads:
            t.start()

    def stop_background(self) -> None:
        """Stop the threads; the learner gives its lease up, so another takes over at once."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []

    def _watch(self) -> None:
        delay, last, synced = WATCH, None, 0.0
        while not self._stop.wait(delay):
            try:
                epoch = self.store.epoch()
                now = time.monotonic()
                if epoch != last or self._resync or now - synced > FULL_SYNC:
                    self._resync = False
                    self.sync(self.store.versions())
                    last, synced = epoch, now
                self.outage.ok()
                delay = WATCH
            except StoreUnavailable as exc:
                self.outage.failed(exc)
                last, delay = None, min(max(delay * 2, 0.25), 5.0)
            except Exception:  # noqa: BLE001 - the watcher never dies
                log.exception("model store watch failed")
                last, delay = None, 1.0

    def sync(self, table: dict[str, str]) -> None:
        """Bring the models this process holds to the versions of ``table``."""
        from nnspam.model.delta import DeltaError, model_from_files

        version = table.get(SITE)
        if version is None:  # a new store, or one that lost its data: seed it with ours
            from nnspam.model.delta import model_files

            with self.site.lock:
                model = self.site.model
            if self.store.seed(SITE, model_files(model), new_site_meta()):
                log.warning("model store had no site model: seeded it with this server's")
            self._resync = True
            return
        if version != self.site.version:
            got = self.store.fetch(SITE, version)
            if got is None:
                self._resync = True
                return
            model = model_from_files(got[1])
            with self.site.lock:
                self.site.model, self.site.version = model, version
                self.site.generation = generation_of(got[1])
            log.info("site model version %s loaded", version)
        self.versions = table
        with self.users_lock:
            slots = list(self.users.values())
        for slot in slots:
            now = table.get(slot.name)
            if now is None:
                with self.users_lock:
                    self.users.pop(slot.name, None)
                continue
            if now == slot.version and slot.base == self.site.version:
                continue
            fields = slot.delta if now == slot.version else None
            if fields is None:
                got = self.store.fetch(slot.name, now)
                if got is None:
                    self._resync = True
                    continue
                fields = got[1]
            try:
                new = self._build_user(slot.name, now, fields)
            except DeltaError as exc:  # keep the model it has; try again at the next sync
                log.debug("%s", exc)
                self._resync = True
                continue
            with slot.lock:
                slot.model, slot.version, slot.delta, slot.base = (
                    new.model, new.version, new.delta, new.base)


def _fixed_mmap_threshold(size: int = 1 << 20) -> None:
    """Allocations of ``size`` bytes and more always come from ``mmap`` and go back to
    the system when freed. glibc raises its threshold to the size of every mmapped
    block freed (up to 32 MB), so after the first 12.5 MB network copy was freed the
    next ones came from the heap and stayed there: a fleet worker that had learned or
    rebuilt a few hundred models held 300 MB more than one that had not (measured
    with scripts/bench/fleet.py). A no-op without glibc."""
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(-3, size)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


@dataclasses.dataclass
class _Held:
    """A model the learner holds: its version, the site version it was built on, the
    model and the last correction in it."""

    version: str | None
    base: str | None
    model: Model
    applied: str
    generation: str = ""


class FleetLearner:
    """The fleet's one learner, when this process holds the lease (see the module
    docstring). Runs in a thread of every worker; only the lease holder learns."""

    def __init__(self, registry: FleetRegistry) -> None:
        self.reg = registry
        self.store = registry.store
        self.token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.leader = False
        self.pending = False
        self.site: _Held | None = None
        self.users: OrderedDict[str, _Held] = OrderedDict()

    def run(self, stop: threading.Event) -> None:
        """Take the lease when it is free, learn while holding it, until ``stop``."""
        delay, idle_since = 0.25, time.monotonic()
        while not stop.is_set():
            try:
                if not self.leader:
                    if not self.store.acquire(self.token, LEASE_MS):
                        stop.wait(1.0)
                        continue
                    self.leader = True
                    self.store.ensure_group()
                    claimed = self.store.claim_all(self.token)
                    log.info("this process is the fleet's learner%s",
                             f" ({claimed} correction(s) taken over)" if claimed else "")
                    self.pending = True
                elif not self.store.renew(self.token, LEASE_MS):
                    raise LeaseLost("lease expired")
                batch = self.store.read(self.token, BATCH, 500, self.pending)
                if self.pending and not batch:
                    self.pending = False
                if batch:
                    self.learn(batch)
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > LEARNER_IDLE and (
                        self.site is not None or self.users):
                    self.site = None  # reloaded from the store when the next one comes
                    self.users.clear()
                delay = 0.25
            except LeaseLost as exc:
                log.warning("no longer the fleet's learner: %s", exc)
                self._resign()
            except StoreUnavailable as exc:
                self.reg.outage.failed(exc)
                self._resign()
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
            except Exception:  # noqa: BLE001 - the learner thread never dies
                log.exception("learner failed")
                self._resign()
                stop.wait(1.0)
        if self.leader:
            try:
                self.store.release(self.token)
            except StoreError:
                pass
            self.leader = False

    def _resign(self) -> None:
        """Forget the lease and every model held (they may hold unpublished lessons)."""
        self.leader = False
        self.site = None
        self.users.clear()

    def learn(self, batch: Sequence[tuple[str, dict[str, bytes]]]) -> None:
        """Learn a batch of corrections: model by model, each published once. A new
        site model (``nnspam store push``: op ``replace``) is installed in its place in
        the order: the corrections before it are learned into the old one first."""
        part: list[tuple[str, dict[str, bytes]]] = []
        for eid, fields in batch:
            if fields.get("op") == b"replace":
                self._learn_part(part)
                part = []
                self._replace(eid, fields)
            else:
                part.append((eid, fields))
        self._learn_part(part)

    def _replace(self, eid: str, fields: dict[str, bytes]) -> None:
        answer = "1"
        try:
            files = {k[len("file:"):]: v for k, v in fields.items()
                     if k.startswith("file:")}
            replace_site(self.store, files, self.reg.settings.rule, token=self.token)
        except (LeaseLost, StoreUnavailable):
            raise
        except Exception as exc:  # noqa: BLE001 - a bad push never stops the learner
            log.error("new site model %s not installed: %s", eid, exc)
            answer = f"error: {exc}"
        self.site = None
        self.users.clear()
        self.store.done([eid])
        if fields.get("reply") == b"1":
            self.store.reply(eid, answer)

    def _learn_part(self, batch: Sequence[tuple[str, dict[str, bytes]]]) -> None:
        groups: OrderedDict[str, list[tuple[str, dict[str, bytes]]]] = OrderedDict()
        for eid, fields in batch:
            groups.setdefault(fields.get("model", b"").decode(), []).append((eid, fields))
        for name, entries in groups.items():
            if not self.store.renew(self.token, LEASE_MS):
                raise LeaseLost("lease expired")
            try:
                self._learn_model(name, entries)
            except VersionMoved as exc:  # seeded again meanwhile: learn again from it
                log.warning("%s; its corrections are learned again", exc)
                self.site = None
                self.users.clear()
                self.pending = True

    def _site(self) -> _Held:
        from nnspam.model.delta import model_files, model_from_files

        version = self.store.version(SITE)
        if version is None:
            with self.reg.site.lock:
                model = self.reg.site.model
            self.store.seed(SITE, model_files(model), new_site_meta())
            version = self.store.version(SITE)
        if self.site is None or self.site.version != version:
            got = self.store.fetch(SITE, version)
            if got is None:
                raise VersionMoved("site: the version changed meanwhile")
            fields = got[1]
            self.site = _Held(got[0], None, model_from_files(fields, journal=True),
                              fields.get("applied", b"").decode(), generation_of(fields))
            self.users.clear()
        return self.site

    def _user(self, name: str, site: _Held) -> _Held:
        from nnspam.model.delta import apply_delta, private_copy

        version = self.store.version(name)
        held = self.users.get(name)
        if held is not None and held.version == version and held.base == site.version:
            self.users.move_to_end(name)
            return held
        if version is None:
            held = _Held(None, site.version, private_copy(site.model), "")
        else:
            got = self.store.fetch(name, version)
            if got is None:
                raise VersionMoved(f"{name}: the version changed meanwhile")
            fields = got[1]
            held = _Held(version, site.version, apply_delta(site.model, fields, private=True),
                         fields.get("applied", b"").decode())
        self.users[name] = held
        while len(self.users) > LEARNER_USERS:
            self.users.popitem(last=False)
        return held

    def _learn_model(self, name: str, entries: list[tuple[str, dict[str, bytes]]]) -> None:
        from nnspam.model.correct import correct, forget
        from nnspam.model.delta import make_delta, model_files

        site = self._site()
        if name == SITE:
            held = site
        elif name.startswith("user:"):
            held = self._user(name, site)
        else:
            log.error("correction for unknown model %r dropped", name)
            self.store.done([eid for eid, _ in entries])
            return
        model, applied, changed = held.model, held.applied, False
        answers: list[tuple[str, str, bool]] = []
        for eid, f in entries:
            wants = f.get("reply") == b"1"
            if applied and _id_key(eid) <= _id_key(applied):
                answers.append((eid, "1", wants))  # learned before its learner died
                continue
            op = f.get("op", b"").decode()
            rule = rule_of(f.get("rule"), self.reg.settings.rule)
            try:
                toks = model.tokens(f.get("msg", b""))
                if op == "forget":
                    found = forget(model, [toks], rule)[0] is not None
                    answers.append((eid, "1" if found else "0", wants))
                    changed |= found
                elif op in ("spam", "ham"):
                    correct(model, [toks], op, rule,
                            source=f.get("source", b"tell").decode() or "tell")
                    answers.append((eid, "1", wants))
                    changed = True
                else:
                    log.error("correction %s: unknown operation %r, dropped", eid, op)
                    answers.append((eid, "error", wants))
            except Exception:  # noqa: BLE001 - one bad message never stops the learner
                log.exception("correction %s for %s failed, dropped", eid, name)
                answers.append((eid, "error", wants))
            applied = eid
        if changed:
            meta = {"applied": applied}
            try:
                if name == SITE:
                    files = model_files(model)
                    meta.update(kind="full", generation=held.generation)
                else:
                    files = make_delta(site.model, model)
                    meta.update(kind="delta", base=site.version or "",
                                generation=site.generation)
                new = self.store.publish(name, files, token=self.token, expect=held.version,
                                         meta=meta)
            except BaseException:
                # the model in memory holds lessons the store does not: never reuse it
                if name == SITE:
                    self.site = None
                self.users.pop(name, None)
                raise
            held.version, held.applied = new, applied
            if name == SITE:
                self.users.clear()  # built on the old site model
            log.info("learned %d correction(s) into %s: version %s", len(entries), name, new)
        self.store.done([eid for eid, _, _ in answers])
        for eid, answer, wants in answers:
            if wants:
                self.store.reply(eid, answer)


class StoreWriter:
    """The model writer of the maildir daemon when its models live in the store
    (``store:`` in the config; :class:`nnspam.services.delivery.sorter.Sorter` takes it instead of a
    model directory's :class:`~nnspam.model.writer.ModelWriter`).

    The daemon then works as one more server of the fleet: it scores with the model of
    ``daemon.user`` (its per-user model, ``serve.user_model``) or the site model, kept
    current by the registry's watcher thread, and sends each correction a move in the
    maildir makes to the corrections stream, as a TELL does; the fleet's one learner
    learns it (the daemon's own learner thread when no server holds the lease), so a
    correction made in the mailbox reaches every server within about a second.

    Redis away: scoring goes on with the model held; a correction that cannot be sent
    is kept in memory, in order, and sent by a retry thread within a second of Redis
    answering again, before any later one (logged; lost only if the daemon stops while
    Redis is still away, and then named in the log)."""

    remote = True  # learned by the fleet's learner: the Sorter neither saves nor observes

    def __init__(self, registry: FleetRegistry, user: str | None) -> None:
        self.registry = registry
        self.user = user or None
        self.name = model_name(registry.settings.user_model, self.user)
        self.path = Path(self.name)
        self.readonly = False
        self.unsent: list[tuple[str, bytes, str, Any]] = []  # (op, message, source, rule)
        self._lock = threading.Lock()  # the worker and the retry thread send
        self._stop = threading.Event()
        self._retry = threading.Thread(target=self._retry_loop, name="nnspam-store-retry",
                                       daemon=True)
        self._retry.start()

    def _retry_loop(self) -> None:
        while not self._stop.wait(RETRY):
            if self.unsent:
                self._flush(quiet=True)

    @property
    def model(self) -> Any:
        """The model that scores this daemon's mail, current with the store."""
        return self.registry.slot_for(self.user).model

    def _flush(self, quiet: bool = False) -> bool:
        """Send what Redis refused before, in order; True when nothing is left."""
        with self._lock:
            sent = 0
            while self.unsent:
                op, raw, source, rule = self.unsent[0]
                try:
                    self.registry._send(self.name, op, raw, False, source, rule)
                except RequestError as exc:
                    if not quiet:
                        log.warning("model store: %d correction(s) kept to send later: %s",
                                    len(self.unsent), exc.message)
                    return False
                self.unsent.pop(0)
                sent += 1
            if quiet and sent:
                log.info("model store: %d kept correction(s) sent", sent)
            return True

    def learn_payloads(self, payloads: Sequence[bytes | str], label: str, rule: Any = None,
                       *, adaptive_inputs: bool = True, save: bool = False,
                       source: str = "daemon") -> list[dict]:
        """Queue the corrections for the fleet's learner (in order, after any unsent
        ones). Returns no replacements: the learner makes them."""
        with self._lock:
            for p in payloads:
                raw = p.encode("utf-8") if isinstance(p, str) else bytes(p)
                self.unsent.append((label, raw, source or "daemon", rule))
        self._flush()
        return []

    def forget_payloads(self, payloads: Sequence[bytes | str], rule: Any = None, *,
                        save: bool = False) -> list[Any]:
        """Undo earlier lessons through the learner; each message's answer (True when its
        journal held it), None where it did not or the learner did not answer in time."""
        if not self._flush():
            return [None] * len(payloads)
        found: list[Any] = []
        for p in payloads:
            raw = p.encode("utf-8") if isinstance(p, str) else bytes(p)
            try:
                held, _ = self.registry.forget(raw, self.user)
            except RequestError as exc:
                log.warning("forget not confirmed: %s", exc.message)
                held = False
            found.append(True if held else None)
        return found

    def save(self) -> bool:
        """Nothing is saved here: send what is still unsent. True when all was sent."""
        return self._flush()

    def sync(self) -> bool:
        """The watcher keeps the model current: nothing to do."""
        return False

    def close(self) -> None:
        """Send what is left, stop the threads; log what could not be sent."""
        self._stop.set()
        self._retry.join(timeout=5)
        self._flush()
        if self.unsent:
            log.error("model store unreachable at shutdown: %d correction(s) not sent "
                      "(learn them again with nnspam learn)", len(self.unsent))
        self.registry.stop_background()


def store_writer(cfg: dict[str, Any], model: str | None = None) -> StoreWriter:
    """The daemon's :class:`StoreWriter` for its config (``store``, ``daemon.user``,
    ``serve.user_model``, ``learn:``), with the registry's watcher and learner started.
    ``model``: the model that seeds an empty store (``-m`` or ``model:``)."""
    from nnspam.services.models.serve_settings import serve_settings

    settings = serve_settings(cfg, model, sock="")  # no listener: the daemon serves none
    user = cfg["daemon"].get("user")
    if user and not settings.user_model:
        raise ServerError("daemon.user needs serve.user_model (the per-user models' names)")
    try:
        model_name(settings.user_model, user)
    except RequestError as exc:
        raise ServerError(f"daemon.user {user!r}: {exc.message}") from None
    registry = FleetRegistry(settings)
    writer = StoreWriter(registry, user)
    registry.start_background()
    return writer


def replace_site(store: Store, files: Mapping[str, bytes], rule: Any, *, token: str,
                 log_to: Any = None) -> tuple[str, int]:
    """Install a newly trained site model (the bytes of its files) in the store, as a
    new generation, and rebase every per-user model on it; returns (the new site
    version, how many user models were rebased). Call holding the learner's lease
    (``token``): the fleet's learner does (op ``replace`` on the stream), or ``nnspam
    store push`` when no learner runs.

    A per-user model is its user's corrections over the site model. Over a new training
    its delta would mean other words, so each user model is rebuilt: its correction
    journal (the last ``learn.journal`` lessons, with their tokens) is learned again,
    in order, into a copy of the new site model by the one correction routine, and
    stored as a delta over it. Lessons older than the journal are not carried over.
    The rebased deltas are published after the new site model; a server that sees a
    delta and a site model of different generations keeps the model it has until
    both have arrived (:meth:`FleetRegistry._build_user`)."""
    from nnspam.model.correct import correct
    from nnspam.model.delta import apply_delta, make_delta, model_from_files, private_copy

    new_site = model_from_files(files, journal=True)
    meta = new_site_meta()
    got = store.fetch(SITE)
    old_site = model_from_files(got[1], journal=True) if got is not None else None
    rebased: list[tuple[str, str, dict[str, bytes], str]] = []
    for name, version in sorted(store.versions().items()):
        if not name.startswith("user:") or old_site is None:
            continue
        if token and not store.renew(token, LEASE_MS):
            raise LeaseLost("lease expired while rebasing the user models")
        fetched = store.fetch(name, version)
        if fetched is None:
            continue
        old_user = apply_delta(old_site, fetched[1], private=True)
        user = private_copy(new_site)
        for e in old_user.journal.entries:
            if e.label in ("spam", "ham") and e.token_list:
                correct(user, [e.token_list], e.label, rule, source=e.source or "rebase")
        rebased.append((name, version, make_delta(new_site, user),
                        fetched[1].get("applied", b"").decode()))
        if log_to is not None:
            print(f"nnspam: {name}: {len(old_user.journal.entries)} correction(s) learned "
                  "again on the new site model", file=log_to)
    site_version = store.publish(SITE, files, token=token,
                                 expect=got[0] if got is not None else None, meta=meta)
    for name, version, delta, applied in rebased:
        store.publish(name, delta, token=token, expect=version,
                      meta={"kind": "delta", "base": site_version, "applied": applied,
                            "generation": meta["generation"]})
    log.info("new site model installed: version %s, %d user model(s) rebased",
             site_version, len(rebased))
    return site_version, len(rebased)
