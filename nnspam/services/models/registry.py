"""The models ``nnspam serve`` scores with: the site model and a bounded cache of
per-user models, each reloaded when its files change and learned into through
the one model writer.

Per-user models: with ``serve.user_model`` set to a path pattern (``%u`` user,
``%l`` its local part, ``%d`` its domain, ``%%``, a leading ``~`` or ``~%u``;
see :func:`user_model_path`), ``User:`` (what ``spamc -u`` or Exim's ``spam =
user`` sends; spamc sends its own user name by default) selects that user's
model directory; a user without one is scored by the site model. The user's
first TELL creates it as a copy of the site model trained on the message
(EX_CANTCREAT 73 when the directory cannot be created). User names that could
leave the pattern's directory are refused with EX_NOUSER 67. Each worker keeps
up to ``serve.user_cache`` user models loaded (least recently used dropped).

Every request costs one ``stat`` of the model's ``weights.npz`` (inode, mtime,
size): a model saved by a TELL in another worker, or by ``nnspam learn`` or the
daemon, is loaded on the next request, no signal needed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nnspam.model.writer import (
    LockTimeout,
    ModelWriter,
    load_with_stamp,
    model_lock,
    model_stamp,
)
from nnspam.services.errors import (
    EX_CANTCREAT,
    EX_IOERR,
    EX_NOPERM,
    EX_NOUSER,
    EX_TEMPFAIL,
    RequestError,
)
from nnspam.services.models.serve_settings import ServeSettings
from nnspam.services.scoring import Result, classify, model_scorer

if TYPE_CHECKING:
    from nnspam.model.core import Model

__all__ = ["ModelRegistry", "ModelSlot", "user_model_path"]

log = logging.getLogger("nnspam.serve")

# User names accepted in ``User:`` when serve.user_model is set (what spamc -u and Exim
# send): letters, digits and ``._+=@-``, at most 64, starting with a letter, digit or
# underscore. No "/", NUL, space or control character can reach a path.
USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+=@-]{0,63}")


class ModelSlot:
    """One model directory in memory, reloaded when its files change on disk, and
    learned into through the one model writer (:mod:`nnspam.model.writer`).

    Scoring never waits for learning (issue 22: a TELL waiting for another process's
    ``<dir>.lock`` held this slot's lock, and every CHECK of the worker waited 20 s
    behind it). So:

    * ``lock`` is held only to score with the model and to swap a new one in, never
      while loading, waiting for the writer lock or saving;
    * a change on disk is loaded by one thread while the others go on scoring with
      the model they have (:meth:`current`); files that cannot be loaded keep the old
      model and are not retried until they change again;
    * a lesson is learned into a private copy, loaded under the writer lock from the
      latest save, saved, and only then swapped in (:meth:`learn`, :meth:`forget`)."""

    def __init__(self, path: Path, model: Model, stamp: Any) -> None:
        self.path = path  # as the registry resolved it (a user model's name is never mapped)
        self.model = model
        self.stamp = stamp
        self.failed: Any = None  # a stamp whose files could not be loaded
        self.lock = threading.Lock()  # scoring with the model, and the swap
        self._loading = threading.Lock()  # one thread loads a change at a time

    def swap(self, model: Model, stamp: Any) -> None:
        with self.lock:
            self.model, self.stamp, self.failed = model, stamp, None

    def current(self) -> Any:
        """The model to score with: the one held, or the directory's newer save when
        another worker, ``nnspam learn`` or the daemon saved it (one ``stat``)."""
        now = model_stamp(self.path)
        if now is None or now == self.stamp or now == self.failed:
            return self.model
        if not self._loading.acquire(blocking=False):
            return self.model  # another thread is loading it: score with what we have
        try:
            now = model_stamp(self.path)
            if now is not None and now != self.stamp and now != self.failed:
                try:
                    model, stamp = load_with_stamp(self.path)
                except Exception as exc:  # noqa: BLE001 - keep serving the model we have
                    self.failed = now
                    log.error("model %s changed on disk but cannot be loaded, keeping the "
                              "old one: %s", self.path, exc)
                else:
                    self.swap(model, stamp)
                    log.info("model %s reloaded (changed on disk)", self.path)
                    if ModelWriter.observer is not None:
                        ModelWriter.observer("reload")
        finally:
            self._loading.release()
        return self.model

    def _writer(self) -> ModelWriter:
        """A writer on a private copy of the latest save (call under the writer lock)."""
        model, stamp = load_with_stamp(self.path)
        return ModelWriter(self.path, model, stamp=stamp)

    def learn(self, raw: bytes, label: str, rule: Any, deadline: float | None) -> bool:
        """Learn ``raw`` as ``label`` and save; False when the journal's latest lesson of
        this message is already ``label`` (nothing learned: a TELL sent again, e.g. by a
        client that retried after a timeout, is applied once). :class:`LockTimeout` when
        the writer lock is not had by ``deadline``: nothing learned."""
        with model_lock(self.path, deadline):
            writer = self._writer()
            writer.learn([writer.model.tokens(raw)], label, rule, source="tell")
            if writer.statuses == ["already"]:  # nothing learned, nothing saved
                return False
            self.swap(writer.model, writer.stamp)
        return True

    def forget(self, raw: bytes, rule: Any, deadline: float | None) -> bool:
        """Undo the journal's latest lesson of ``raw`` and save; whether there was one."""
        with model_lock(self.path, deadline):
            writer = self._writer()
            found = writer.forget_payloads([raw], rule)[0] is not None
            if found:
                self.swap(writer.model, writer.stamp)
        return found


def user_model_path(pattern: str, user: str) -> Path | None:
    """The per-user model directory for ``user`` from ``serve.user_model``: the one
    place a client's user name becomes a path (the server, the daemon's
    ``daemon.user`` and the fleet's store keys all come here).

    Substitutions: ``%u`` the user name as spamc sends it, ``%l`` its local part
    (before ``@``), ``%d`` its domain (after ``@``), ``%%`` a percent sign; then a
    leading ``~`` or ``~name`` is expanded from the password database. None when
    ``~name`` names no account.

    A user name is data, never a path: :class:`RequestError` (EX_NOUSER) for a name
    with anything but letters, digits and ``._+=@-``, a leading dot or dash, ``..``,
    more than 64 characters, and for a name whose substituted part would be empty or
    start with a dot. Each substitution stays inside one path component, and no
    component made from the name can be empty, ``.`` or ``..``: so every user's
    directory has the same depth below the pattern's fixed part, none can be the
    parent of another or lie outside it. (Before: ``mallory@.`` with
    ``/srv/nnspam/domains/%d`` named ``/srv/nnspam/domains`` itself, and a TELL
    saved a model over every domain's.)"""
    if not USER_RE.fullmatch(user) or ".." in user:
        raise RequestError(EX_NOUSER, "invalid user name")
    local, _, domain = user.partition("@")
    values = {"u": user, "l": local, "d": domain}
    parts = []
    for seg in pattern.split("/"):
        out, used, i = [], False, 0
        while i < len(seg):
            c = seg[i]
            if c == "%" and i + 1 < len(seg):
                nxt = seg[i + 1]
                if nxt in values:
                    v = values[nxt]
                    if not v or v.startswith("."):
                        what = {"u": "user name", "l": "local part", "d": "domain"}[nxt]
                        raise RequestError(EX_NOUSER, f"invalid user name: empty or dotted "
                                           f"{what} for serve.user_model")
                    out.append(v)
                    used = True
                else:
                    out.append("%" if nxt == "%" else "%" + nxt)
                i += 2
            else:
                out.append(c)
                i += 1
        part = "".join(out)
        if used and part in ("", ".", ".."):  # unreachable after the checks above
            raise RequestError(EX_NOUSER, "invalid user name for serve.user_model")
        parts.append(part)
    path = "/".join(parts)
    if path.startswith("~"):
        path = os.path.expanduser(path)
        if path.startswith("~"):
            return None
    return Path(path)


class ModelRegistry:
    """The site model and a bounded LRU cache of per-user models.

    Every request costs one ``stat`` of the model it uses
    (:func:`~nnspam.model.writer.model_stamp`): a model saved by a TELL in another
    worker process, or by ``nnspam learn``, is served from the next request on, without
    a restart or a signal."""

    def __init__(self, settings: ServeSettings) -> None:
        from nnspam.model.core import Model, is_shipped, resolve_model_path

        self.settings = settings
        name = settings.filter.model
        self.site_readonly = is_shipped(name)
        path = resolve_model_path(name)
        stamp = model_stamp(path)
        self.site = ModelSlot(path, Model.load(path), stamp)
        self.users: OrderedDict[Path, ModelSlot] = OrderedDict()
        self.users_lock = threading.Lock()
        # serve.user_lists files as read: path -> (stat stamp, the lists or None if bad)
        self.user_lists: OrderedDict[Path, tuple[tuple[int, int, int], Any]] = OrderedDict()

    def start_background(self) -> None:
        """Hook run by each worker process when it starts serving: nothing for models on
        disk (a ``stat`` per request finds new saves); a fleet's registry starts its
        watcher and learner threads here (:mod:`nnspam.services.models.fleet`)."""

    def stop_background(self) -> None:
        """Hook run by each worker process when it stops serving (see start_background)."""

    def reload(self) -> None:
        """Load the site model again and forget the cached user models (SIGHUP)."""
        model, stamp = load_with_stamp(self.site.path)
        self.site.swap(model, stamp)
        with self.users_lock:
            self.users.clear()

    def _user_path(self, user: str | None) -> Path | None:
        pattern = self.settings.user_model
        if not pattern or not user:
            return None
        return user_model_path(pattern, user)

    def slot_for(self, user: str | None) -> ModelSlot:
        """The model that scores ``user``'s mail: theirs when it exists, else the site's."""
        path = self._user_path(user)
        if path is None:
            return self.site
        with self.users_lock:
            slot = self.users.get(path)
            if slot is not None:
                self.users.move_to_end(path)
                return slot
        if model_stamp(path) is None:
            return self.site
        try:
            model, stamp = load_with_stamp(path)
        except Exception as exc:  # noqa: BLE001 - a broken user model: the site model scores
            log.error("user model %s cannot be loaded, using the site model: %s", path, exc)
            return self.site
        slot = ModelSlot(path, model, stamp)
        with self.users_lock:
            slot = self.users.setdefault(path, slot)
            self.users.move_to_end(path)
            while len(self.users) > max(self.settings.user_cache, 0):
                self.users.popitem(last=False)
        return slot

    def lists_for(self, user: str | None) -> Any:
        """The allow/deny lists that apply to ``user``'s mail: the config's ``lists:`` and
        the user's own file (``serve.user_lists``, the same substitutions as
        ``serve.user_model``) together. The file is read again when it changes (a ``stat``
        per request); a missing file adds nothing, and a bad one is logged once and adds
        nothing (the request is still answered)."""
        site = self.settings.filter.lists
        pattern = self.settings.user_lists
        if not pattern or not user:
            return site
        path = user_model_path(pattern, user)
        if path is None:
            return site
        try:
            st = path.stat()
        except OSError:
            return site
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self.users_lock:
            seen = self.user_lists.get(path)
        if seen is None or seen[0] != stamp:
            from nnspam.services.verdict import SenderLists

            try:
                mine: Any = SenderLists.from_file(path)
            except (OSError, ValueError) as exc:
                log.error("user lists %s not used: %s", path,
                          getattr(exc, "strerror", None) or exc)
                mine = None
            seen = (stamp, mine)
            with self.users_lock:
                self.user_lists[path] = seen
                self.user_lists.move_to_end(path)
                while len(self.user_lists) > 1024:
                    self.user_lists.popitem(last=False)
        mine = seen[1]
        if mine is None:
            return site
        return mine | site

    def classify(self, raw: bytes, user: str | None = None, words: int = 0) -> Result:
        """Exactly the classification ``nnspam filter`` makes, with ``user``'s model;
        ``words`` > 0 also explains the verdict by that many words (``Result.words``,
        for SYMBOLS and REPORT) with the same model. Never waits for a lesson being
        learned or saved: the model held scores until the new one is swapped in."""
        f = self.settings.filter
        lists = self.lists_for(user)
        if lists is not f.lists:
            f = dataclasses.replace(f, lists=lists)
        slot = self.slot_for(user)
        model = slot.current()
        with slot.lock:
            return classify(raw, model_scorer(model, f), f.threshold, f.unsure,
                            f.words, explain=words, spamassassin=f.spamassassin,
                            rewrite_subject=f.rewrite_subject, score_mode=f.score_mode)

    def learn(self, raw: bytes, label: str, user: str | None = None,
              deadline: float | None = None) -> tuple[bool, Path]:
        """Learn one message into ``user``'s model (the site model without
        ``serve.user_model``) and save it atomically; returns (whether it was learned:
        False when that model's journal already has it as ``label``, the directory).

        A user without a model gets one: a copy of the site model as it is on
        disk, trained on this message and saved to the user's path (parent
        directories are created). When that directory cannot be created the
        TELL is refused with EX_CANTCREAT and nothing changes. The writer lock is
        waited for until ``deadline`` (monotonic; the request's), then the TELL is
        answered EX_TEMPFAIL and nothing is learned."""
        path = self._user_path(user)
        if self.settings.user_model and user and path is None:
            raise RequestError(EX_NOUSER, "no such user for serve.user_model")
        try:
            if path is None:
                if self.site_readonly:
                    raise RequestError(EX_NOPERM, "the shipped model is read-only; serve a "
                                       "model directory (-m DIR) or set serve.user_model to "
                                       "learn")
                return self.site.learn(raw, label, self.settings.rule, deadline), self.site.path
            slot = self.slot_for(user)
            if slot is self.site:  # the user has no model yet: start from the site model
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with model_lock(path, deadline):
                        if model_stamp(path) is None:
                            model, _ = load_with_stamp(self.site.path)
                            new = ModelWriter(path, model, stamp=None)
                            new.learn_payloads([raw], label, self.settings.rule,
                                               source="tell")
                            return True, path
                except LockTimeout:
                    raise
                except OSError as exc:
                    raise RequestError(EX_CANTCREAT, f"cannot create the user model: "
                                       f"{exc.strerror or exc}") from None
                slot = self.slot_for(user)  # another process created it meanwhile
            return slot.learn(raw, label, self.settings.rule, deadline), slot.path
        except LockTimeout:
            raise RequestError(EX_TEMPFAIL, "the model is busy (being saved by another "
                               "writer); nothing learned, try again") from None
        except OSError as exc:
            log.error("cannot save the model %s: %s", path or self.site.path,
                      exc.strerror or exc)
            raise RequestError(EX_IOERR, f"cannot save the model: "
                               f"{exc.strerror or exc}") from None

    def forget(self, raw: bytes, user: str | None = None,
               deadline: float | None = None) -> tuple[bool, Path]:
        """Undo an earlier lesson of one message in ``user``'s model (the site model
        without ``serve.user_model``) through the correction journal and save it;
        returns (whether the journal held it, the model directory). A user without a
        model of their own has nothing to forget: the site model is left alone.
        ``deadline``: as :meth:`learn`'s."""
        path = self._user_path(user)
        if self.settings.user_model and user and path is None:
            raise RequestError(EX_NOUSER, "no such user for serve.user_model")
        if path is None and self.site_readonly:
            raise RequestError(EX_NOPERM, "the shipped model is read-only; serve a model "
                               "directory (-m DIR) or set serve.user_model to learn")
        slot = self.site if path is None else self.slot_for(user)
        if path is not None and slot is self.site:
            return False, path
        try:
            return slot.forget(raw, self.settings.rule, deadline), slot.path
        except LockTimeout:
            raise RequestError(EX_TEMPFAIL, "the model is busy (being saved by another "
                               "writer); nothing forgotten, try again") from None
        except OSError as exc:
            log.error("cannot save the model %s: %s", slot.path, exc.strerror or exc)
            raise RequestError(EX_IOERR, f"cannot save the model: "
                               f"{exc.strerror or exc}") from None
