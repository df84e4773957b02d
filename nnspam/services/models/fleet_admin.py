"""``nnspam store``: look after a fleet's model store (config ``store:``) from the shell.

``nnspam store list``
    every model in the store: its name, version, kind (``full`` or ``delta``), size and
    generation, the corrections waiting for the learner and who holds its lease.
``nnspam store pull [--user NAME] DIR``
    write a model of the store to a model directory (atomically, as every model is
    saved): a backup, a copy to inspect, or a per-user model for a server without a store.
``nnspam store push DIR``
    install a newly trained site model (``nnspam train ... -m DIR``) in a running fleet,
    as a new generation: every per-user model is rebased on it by learning its
    correction journal again (:func:`nnspam.services.models.fleet.replace_site`). The fleet's
    learner does it, in its place among the corrections; with no learner running (no
    server or daemon), this command takes the learner's lease and does it itself.
``nnspam store push --user NAME DIR``
    move a per-user model directory (``serve.user_model`` on disk, before the store)
    into the store, as its difference from the current site model: the migration of a
    site that ran per-user models on disk. DIR defaults to the user's directory by
    ``serve.user_model``.

``nnspam learn`` with a store sends its corrections through the stream
(:func:`learn_command`).

Exit status: 0 done, 1 a refusal (no such model, a push the learner rejected, a
version that moved meanwhile: run it again), 2 a usage error (also a ``store:`` address
where a server that is not Redis answers), 75 Redis unreachable or not answering (within
:data:`~nnspam.services.models.store.COMMAND_TIMEOUT` seconds) or (push) the learner did not
answer in time: the push stays queued.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from nnspam.services.errors import EX_TEMPFAIL, RequestError
from nnspam.services.models.fleet import (
    LEASE_MS,
    files_of,
    generation_of,
    model_name,
    replace_site,
    rule_json,
)
from nnspam.services.models.store import (
    SITE,
    NotRedis,
    Store,
    StoreError,
    StoreUnavailable,
    VersionMoved,
    redact,
)

__all__ = ["StoreUsageError", "learn_command", "list_models", "pull", "push_site",
           "push_user"]


class StoreUsageError(StoreError):
    """A command the store cannot mean (no model directory, --user without
    serve.user_model): exit 2."""


def _store(cfg: dict[str, Any], timeout: float = 30.0) -> Store:
    try:
        return Store(cfg["store"], timeout=timeout)
    except ImportError:
        raise StoreError("store: needs the redis client: pip install 'nnspam[redis]'") from None


def _name(cfg: dict[str, Any], user: str | None) -> str:
    """The store's name of the model (``site``, or ``user``'s per-user model)."""
    if not user:
        return SITE
    pattern = cfg["serve"].get("user_model")
    if not pattern:
        raise StoreUsageError("--user needs serve.user_model in the config")
    try:
        return model_name(pattern, user)
    except RequestError as exc:
        raise StoreUsageError(f"--user {user}: {exc.message}") from None


def _guard(fn: Any) -> Any:
    """Run a command, its store errors as one line and an exit status."""
    def run(cfg: dict[str, Any], *args: Any, err: TextIO = sys.stderr, **kw: Any) -> int:
        where = redact(cfg["store"])
        try:
            return fn(cfg, *args, err=err, **kw)
        except StoreUnavailable as exc:
            print(f"nnspam: model store {where} unreachable: {exc}", file=err)
            return EX_TEMPFAIL
        except VersionMoved as exc:
            print(f"nnspam: model store {where}: {exc}; run it again", file=err)
            return 1
        except (StoreUsageError, NotRedis) as exc:
            print(f"nnspam: {exc}", file=err)
            return 2
        except StoreError as exc:
            print(f"nnspam: model store {where}: {exc}", file=err)
            return 1
    run.__doc__ = fn.__doc__
    run.__name__ = fn.__name__
    return run


@_guard
def list_models(cfg: dict[str, Any], out: TextIO = sys.stdout, *, err: TextIO = sys.stderr
                ) -> int:
    """``nnspam store list``: one line per model, then the stream and the lease."""
    store = _store(cfg)
    versions = store.versions()
    print(f"{'model':40s} {'version':14s} {'kind':6s} {'bytes':>11s} generation", file=out)
    for name in sorted(versions, key=lambda n: (n != SITE, n)):
        got = store.fetch(name, versions[name])
        if got is None:
            continue
        fields = got[1]
        size = sum(len(v) for k, v in fields.items()
                   if k not in ("kind", "base", "applied", "generation"))
        print(f"{name:40s} {got[0]:14s} {fields.get('kind', b'?').decode():6s} {size:11,d} "
              f"{generation_of(fields) or '-'}", file=out)
    holder = store.holder()
    print(f"# {len(versions)} model(s); {store.backlog()} correction(s) waiting; learner: "
          f"{holder or 'none running'}", file=out)
    return 0


@_guard
def pull(cfg: dict[str, Any], user: str | None, dest: str, *, err: TextIO = sys.stderr) -> int:
    """``nnspam store pull [--user NAME] DIR``: the model, as a model directory."""
    from nnspam.model.delta import apply_delta, model_from_files

    store = _store(cfg)
    name = _name(cfg, user)
    site = store.fetch(SITE)
    if site is None:
        raise StoreError("the store has no site model")
    model = model_from_files(site[1], journal=True)
    version = site[0]
    if name != SITE:
        got = store.fetch(name)
        if got is None:
            raise StoreError(f"no model {name} in the store")
        model = apply_delta(model, got[1], private=True)
        version = got[0]
    model.save(Path(dest))
    print(f"nnspam: {name} version {version} written to {dest}", file=err)
    return 0


@_guard
def push_user(cfg: dict[str, Any], user: str, src: str | None, *,
              err: TextIO = sys.stderr) -> int:
    """``nnspam store push --user NAME [DIR]``: a per-user model directory into the store."""
    from nnspam.model.delta import delta_size, make_delta, model_from_files
    from nnspam.services.models.registry import user_model_path

    store = _store(cfg)
    name = _name(cfg, user)
    path = Path(src) if src else user_model_path(cfg["serve"]["user_model"], user)
    if path is None or not (path / "model.json").is_file():
        raise StoreUsageError(f"{path}: not a model directory")
    user_model, _ = files_of(path)
    site = store.fetch(SITE)
    if site is None:
        raise StoreError("the store has no site model: push one first (nnspam store push DIR)")
    site_model = model_from_files(site[1], journal=True)
    delta = make_delta(site_model, user_model)
    version = store.publish(name, delta, expect=store.version(name),
                            meta={"kind": "delta", "base": site[0],
                                  "generation": generation_of(site[1])})
    print(f"nnspam: {path} stored as {name} version {version} ({delta_size(delta):,d} bytes "
          "over the site model)", file=err)
    return 0


@_guard
def push_site(cfg: dict[str, Any], src: str, wait: float = 600.0, *,
              err: TextIO = sys.stderr) -> int:
    """``nnspam store push DIR``: a newly trained site model into the running fleet."""
    from nnspam.model.correct import rule_from_config

    path = Path(src)
    if not (path / "model.json").is_file():
        raise StoreUsageError(f"{path}: not a model directory")
    _, files = files_of(path)
    rule = rule_from_config(cfg)
    store = _store(cfg, wait + 10)
    token = f"push:{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    if store.acquire(token, LEASE_MS):  # no learner runs: do it here, holding its lease
        try:
            version, n = replace_site(store, files, rule, token=token, log_to=err)
        finally:
            store.release(token)
        print(f"nnspam: {path} installed as the site model, version {version}; {n} user "
              "model(s) rebased", file=err)
        return 0
    eid = store.add_correction(SITE, "replace", b"", rule_json(rule), "push", reply=True,
                               extra={"file:" + k: v for k, v in files.items()})
    print(f"nnspam: {path} sent to the fleet's learner ({store.holder()}); waiting",
          file=err)
    answer = store.wait_reply(eid, wait)
    if answer is None:
        print(f"nnspam: the learner did not answer in {wait:.0f} s; the push stays queued",
              file=err)
        return EX_TEMPFAIL
    if answer != "1":
        print(f"nnspam: the learner refused the new site model: {answer}", file=err)
        return 1
    print(f"nnspam: {path} installed as the site model, version {store.version(SITE)}",
          file=err)
    return 0


@_guard
def learn_command(cfg: dict[str, Any], names: Sequence[str], payloads: Sequence[bytes],
                  op: str, rule: Any, user: str | None, wait: float = 60.0, *,
                  err: TextIO = sys.stderr) -> int:
    """``nnspam learn`` with a store: send the corrections to the fleet's stream (the
    site model, or ``user``'s per-user model) and wait up to ``wait`` seconds for the
    learner to learn them. Exit status: 0 learned (or queued: a server's learner
    learns them when one runs), 1 a forget the journal did not hold, 75 Redis
    cannot be reached."""
    import time

    name = _name(cfg, user)
    where = redact(cfg["store"])
    store = _store(cfg, wait + 10)
    ids = [store.add_correction(name, op, p, rule_json(rule), "learn", reply=True)
           for p in payloads]
    deadline = time.monotonic() + wait
    answers = [store.wait_reply(i, max(deadline - time.monotonic(), 0.01)) for i in ids]
    queued = sum(a is None for a in answers)
    if op == "forget":
        missing = [n for n, a in zip(names, answers, strict=True) if a == "0"]
        for n in missing:
            print(f"nnspam: {n}: not in the correction journal of {name}", file=err)
        done = sum(a == "1" for a in answers)
        print(f"nnspam: forgot {done} of {len(answers)} message(s) in {name} ({where})"
              + (f"; {queued} queued, not yet confirmed" if queued else ""), file=err)
        return 1 if missing else 0
    print(f"nnspam: learned {len(answers) - queued} {op} message(s) into {name} ({where})"
          + (f"; {queued} queued for the fleet's learner" if queued else ""), file=err)
    return 0
