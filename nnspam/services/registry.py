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

import logging
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from nnspam.model.writer import ModelWriter, model_lock, model_stamp
from nnspam.services.pipefilter import Result, classify, model_scorer
from nnspam.services.serve_settings import ServeSettings
from nnspam.services.spamd import EX_CANTCREAT, EX_IOERR, EX_NOPERM, EX_NOUSER, RequestError

__all__ = ["ModelRegistry", "ModelSlot", "user_model_path"]

log = logging.getLogger("nnspam.serve")

# User names accepted in ``User:`` when serve.user_model is set: nothing
# that could leave the pattern's directory (no "/", NUL, leading dot, "..").
USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+=@-]{0,63}")



class ModelSlot(ModelWriter):
    """One model directory in memory, reloaded when its files change on disk
    (:meth:`~nnspam.model.writer.ModelWriter.refresh`: a half-replaced or broken
    directory keeps the old model; the same broken files are not retried on
    every request) and learned into through the one model writer.

    ``lock`` serialises scoring, learning and reloading of this model within
    one worker process; the writer's exclusive ``flock`` on ``<dir>.lock``
    beside the directory serialises learning across worker processes and with
    every other writer (the daemon, ``nnspam learn``), so that no TELL
    overwrites another's lesson or theirs."""

    def __init__(self, path: Path, model: Any, stamp: Any) -> None:
        super().__init__(path, model, stamp=stamp)
        self.path = path  # as the registry resolved it (a user model's name is never mapped)
        self.lock = threading.Lock()


def user_model_path(pattern: str, user: str) -> Path | None:
    """The per-user model directory for ``user`` from ``serve.user_model``.

    Substitutions: ``%u`` the user name as spamc sends it, ``%l`` its local
    part (before ``@``), ``%d`` its domain (after ``@``, empty without one),
    ``%%`` a percent sign; then a leading ``~`` or ``~name`` is expanded from
    the password database. None when ``~name`` names no account. Raises
    :class:`RequestError` (EX_NOUSER) for a user name that could escape the
    pattern: anything but letters, digits and ``._+=@-``, a leading dot or
    dash, ``..``, more than 64 characters."""
    if not USER_RE.fullmatch(user) or ".." in user:
        raise RequestError(EX_NOUSER, "invalid user name")
    local, _, domain = user.partition("@")
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "%" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append({"u": user, "l": local, "d": domain, "%": "%"}.get(nxt, "%" + nxt))
            i += 2
        else:
            out.append(c)
            i += 1
    path = "".join(out)
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

    def start_background(self) -> None:
        """Hook run by each worker process when it starts serving: nothing for models on
        disk (a ``stat`` per request finds new saves); a fleet's registry starts its
        watcher and learner threads here (:mod:`nnspam.services.fleet`)."""

    def stop_background(self) -> None:
        """Hook run by each worker process when it stops serving (see start_background)."""

    def reload(self) -> None:
        """Load the site model again and forget the cached user models (SIGHUP)."""
        from nnspam.model.core import Model

        stamp = model_stamp(self.site.path)
        model = Model.load(self.site.path)
        with self.site.lock:
            self.site.model, self.site.stamp, self.site.failed = model, stamp, None
        with self.users_lock:
            self.users.clear()

    def _user_path(self, user: str | None) -> Path | None:
        pattern = self.settings.user_model
        if not pattern or not user:
            return None
        return user_model_path(pattern, user)

    def slot_for(self, user: str | None) -> ModelSlot:
        """The model that scores ``user``'s mail: theirs when it exists, else the site's."""
        from nnspam.model.core import Model

        path = self._user_path(user)
        if path is None:
            return self.site
        with self.users_lock:
            slot = self.users.get(path)
            if slot is not None:
                self.users.move_to_end(path)
                return slot
        stamp = model_stamp(path)
        if stamp is None:
            return self.site
        try:
            slot = ModelSlot(path, Model.load(path), stamp)
        except Exception as exc:  # noqa: BLE001 - a broken user model: the site model scores
            log.error("user model %s cannot be loaded, using the site model: %s", path, exc)
            return self.site
        with self.users_lock:
            slot = self.users.setdefault(path, slot)
            self.users.move_to_end(path)
            while len(self.users) > max(self.settings.user_cache, 0):
                self.users.popitem(last=False)
        return slot

    def classify(self, raw: bytes, user: str | None = None, words: int = 0) -> Result:
        """Exactly the classification ``nnspam filter`` makes, with ``user``'s model;
        ``words`` > 0 also explains the verdict by that many words (``Result.words``,
        for SYMBOLS and REPORT) with the same model."""
        f = self.settings.filter
        slot = self.slot_for(user)
        with slot.lock:
            slot.refresh()
            return classify(raw, model_scorer(slot.model, f), f.threshold, f.unsure,
                            f.words, explain=words, spamassassin=f.spamassassin)

    def learn(self, raw: bytes, label: str, user: str | None = None) -> Path:
        """Learn one message into ``user``'s model (the site model without
        ``serve.user_model``) and save it atomically; returns its directory.

        A user without a model gets one: a copy of the site model as it is on
        disk, trained on this message and saved to the user's path (parent
        directories are created). When that directory cannot be created the
        TELL is refused with EX_CANTCREAT and nothing changes."""
        from nnspam.model.core import Model

        path = self._user_path(user)
        if self.settings.user_model and user and path is None:
            raise RequestError(EX_NOUSER, "no such user for serve.user_model")
        if path is None:
            if self.site_readonly:
                raise RequestError(EX_NOPERM, "the shipped model is read-only; serve a model "
                                   "directory (-m DIR) or set serve.user_model to learn")
            slot = self.site
        else:
            slot = self.slot_for(user)
            if slot is self.site:  # the user has no model yet: start from the site model
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with model_lock(path):
                        if model_stamp(path) is None:
                            with self.site.lock:
                                self.site.refresh()
                            new = ModelWriter(path, Model.load(self.site.path), stamp=None)
                            new.learn_payloads([raw], label, self.settings.rule, source="tell")
                            return path
                except OSError as exc:
                    raise RequestError(EX_CANTCREAT, f"cannot create the user model: "
                                       f"{exc.strerror or exc}") from None
                slot = self.slot_for(user)  # another process created it meanwhile
        with slot.lock:
            try:
                # under the writer lock, on top of what other workers and writers saved
                slot.learn_payloads([raw], label, self.settings.rule, source="tell")
            except OSError as exc:
                raise RequestError(EX_IOERR, f"cannot save the model: "
                                   f"{exc.strerror or exc}") from None
        return slot.path

    def forget(self, raw: bytes, user: str | None = None) -> tuple[bool, Path]:
        """Undo an earlier lesson of one message in ``user``'s model (the site model
        without ``serve.user_model``) through the correction journal and save it;
        returns (whether the journal held it, the model directory). A user without a
        model of their own has nothing to forget: the site model is left alone."""
        path = self._user_path(user)
        if self.settings.user_model and user and path is None:
            raise RequestError(EX_NOUSER, "no such user for serve.user_model")
        if path is None and self.site_readonly:
            raise RequestError(EX_NOPERM, "the shipped model is read-only; serve a model "
                               "directory (-m DIR) or set serve.user_model to learn")
        slot = self.site if path is None else self.slot_for(user)
        if path is not None and slot is self.site:
            return False, path
        with slot.lock:
            try:
                found = slot.forget_payloads([raw], self.settings.rule)
            except OSError as exc:
                raise RequestError(EX_IOERR, f"cannot save the model: "
                                   f"{exc.strerror or exc}") from None
        return found[0] is not None, slot.path
