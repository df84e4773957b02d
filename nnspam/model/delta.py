"""A model as bytes, and a per-user model as its difference from the site model.

A fleet of ``nnspam serve`` instances keeps its models in a shared store
(:mod:`nnspam.services.models.store`), never pickled: the site model as the bytes of its
files (``model.json``, ``weights.npz``, ``journal.npz``: :func:`model_files`,
:func:`model_from_files`), and each per-user model as what it has that the site
model does not (:func:`make_delta`, :func:`apply_delta`).

A per-user model starts as a copy of the site model and is taught by its user's
corrections (:func:`nnspam.model.correct.correct`). What that changes is small beside
the 12.5 MB of the network: the wide path's weights and counts at the slots of the
corrected messages, the adaptive inputs' statistics, the tally of learned messages,
the correction journal; the network only with ``learn.passes`` > 0, the word list only
when an adaptive replacement was made. A delta holds exactly that:

``delta.json``
    ``meta``: the ``model.json`` fields whose value differs from the site model's
    (replaced whole), ``drop``: the fields the user's model lacks; ``wide``: the
    wide path's ``bits`` and the differences of its ``updates`` and ``docs`` counts;
    ``arrays``: for each array, ``sparse`` (the elements that differ), ``whole`` or
    ``drop``.
``delta.npz``
    (deflated) the arrays: ``NAME.i`` (flat indices) and ``NAME.v`` (the user model's values
    there) for a sparse one, ``NAME.=`` for a whole one. The wide path's weights and
    counts are compared as dense vectors (``wide_w``, ``wide_df``).
``journal.npz``
    the user model's own correction journal (its file as the model would save it).

Applying a delta overlays it on the site model: where the user model differs, its
values; elsewhere the site model's, so a correction taught to the site model later
reaches every user model at the slots the user did not teach (the wide path's
``updates`` and ``docs`` counts add up). On the site model it was made from, the
overlay is the user model exactly (tests/test_fleet.py).

Two ways to build the model (:func:`apply_delta`): the usual delta (the fields a
correction changes) makes a new :class:`~nnspam.model.core.Model` that shares the site
model's network and word list where they did not change, so a server keeping 16 user
models in memory does not hold 16 copies of the network; anything else (a field this
module does not know) is written out as model files and loaded by
:meth:`Model.load`, the one reader of model files.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nnspam.model import journal as journal_mod

if TYPE_CHECKING:
    from nnspam.model.core import Model

__all__ = ["DELTA_FILES", "DeltaError", "apply_delta", "delta_size", "make_delta",
           "model_files", "model_from_files", "private_copy"]

#: The entries of a delta (each the bytes of one file).
DELTA_FILES = ("delta.json", "delta.npz", journal_mod.FILE)

#: model.json fields a delta may replace without writing model files: each is one
#: field of the Model dataclass (``adaptive`` is rebuilt from its JSON and arrays).
_FIELDS = ("words", "kind", "scaling", "ham_factor", "spam_factor", "threshold",
           "max_part_bytes", "summary", "wordlist_counts", "arch", "backend", "ngram",
           "libraries", "adaptive")
#: model.json fields that say nothing about the model's behaviour (never in a delta).
_IGNORED = ("nnspam_version", "weights_sha256", "weights_crc32", "wide", "grams")
_WIDE = ("wide_w", "wide_df", "grams_w", "grams_sig")
_ADAPTIVE = ("adaptive_activity", "adaptive_by_class")


class DeltaError(ValueError):
    """Bytes that are not a model or a delta this nnspam reads."""


def _scratch() -> Path:
    """A private directory for model files in passing: in memory (/dev/shm) where
    there is one, else the temp directory."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="nnspam-model-", dir=base))


def model_files(model: Model) -> dict[str, bytes]:
    """The bytes of the files :meth:`Model.save` writes (model.json, weights.npz and,
    when the journal has entries, journal.npz): what a store keeps of a full model."""
    tmp = _scratch()
    try:
        model.save(tmp / "m")
        return {p.name: p.read_bytes() for p in sorted((tmp / "m").iterdir()) if p.is_file()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def model_from_files(files: Mapping[str, bytes], *, journal: bool = False) -> Model:
    """A model from its files' bytes (:func:`model_files`), read by :meth:`Model.load`
    (every check of a model directory applies: a :class:`~nnspam.model.core.ModelError`
    names what is wrong). ``journal``: also read the correction journal (a writer
    needs it; a server that only scores does not, and the journal stays empty)."""
    from nnspam.model.core import Model

    tmp = _scratch()
    try:
        d = tmp / "m"
        d.mkdir()
        for name, data in files.items():
            if name not in ("model.json", "weights.npz", journal_mod.FILE):
                continue
            (d / name).write_bytes(data)
        model = Model.load(d)
        # the directory goes away: the journal is read now or not at all (read by
        # Model.journal: an unreadable one is logged and started afresh, as on disk)
        if journal:
            model.journal  # noqa: B018 - reads it
        model._journal_file = None
        return model
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _meta(model: Model) -> dict[str, Any]:
    return {k: v for k, v in model.to_json().items() if k not in _IGNORED}


def _arrays(model: Model) -> dict[str, np.ndarray]:
    """Every array of a model by name: the network's weights, the idf, the adaptive
    inputs' statistics and the wide path as two dense vectors."""
    # the network's own arrays, not copies (get_weights copies 12.5 MB): only read here
    out: dict[str, np.ndarray] = dict(model.network.require_params())
    if model.idf is not None:
        out["idf"] = np.asarray(model.idf, dtype=np.float32)
    if model.adaptive is not None:
        out.update(model.adaptive.arrays())
    if model.wide is not None and model.wide.used:
        out["wide_w"] = model.wide.w
        out["wide_df"] = model.wide.df
    if model.grams is not None and model.grams.active:
        out["grams_w"] = model.grams.w
        out["grams_sig"] = model.grams.sig
    else:  # an untaught part is zeros and ones: a user's is then a sparse difference
        out["grams_w"], out["grams_sig"] = _untaught_grams()
    return out


_UNTAUGHT: tuple[np.ndarray, np.ndarray] | None = None


def _untaught_grams() -> tuple[np.ndarray, np.ndarray]:
    """The arrays of an untaught grams part (made once, read-only)."""
    global _UNTAUGHT
    if _UNTAUGHT is None:
        from nnspam.model.grams import DEFAULT_BITS

        w = np.zeros(1 << DEFAULT_BITS, np.float32)
        sig = np.ones(1 << DEFAULT_BITS, np.float32)
        w.flags.writeable = sig.flags.writeable = False
        _UNTAUGHT = (w, sig)
    return _UNTAUGHT


def _grams_counts(model: Model) -> tuple[int, int]:
    g = model.grams
    return (g.bits, g.updates) if g is not None and g.active else (0, 0)


def _wide_counts(model: Model) -> tuple[int, int, int]:
    w = model.wide
    return (w.bits, w.updates, w.docs) if w is not None and w.used else (0, 0, 0)


def make_delta(site: Model, user: Model) -> dict[str, bytes]:
    """What ``user`` (a per-user model grown from ``site``) has that ``site`` has not,
    as the bytes of :data:`DELTA_FILES` (see the module docstring)."""
    sm, um = _meta(site), _meta(user)
    meta = {k: v for k, v in um.items() if sm.get(k, _MISSING) != v}
    drop = [k for k in sm if k not in um]
    sb, su, sd = _wide_counts(site)
    ub, uu, ud = _wide_counts(user)
    if sb and ub and sb != ub:
        raise DeltaError(f"the wide paths differ in size ({sb} and {ub} bits)")
    sa, ua = _arrays(site), _arrays(user)
    kinds: dict[str, str] = {}
    arrays: dict[str, np.ndarray] = {}
    for name, u in ua.items():
        s = sa.get(name)
        if s is not None and s.shape == u.shape and s.dtype == u.dtype:
            idx = np.flatnonzero(s.ravel() != u.ravel())
            if not idx.size:
                continue
            if 3 * idx.size < u.size:
                kinds[name] = "sparse"
                arrays[name + ".i"] = idx.astype(np.int32 if u.size < 2**31 else np.int64)
                arrays[name + ".v"] = u.ravel()[idx]
                continue
        kinds[name] = "whole"
        arrays[name + ".="] = u
    for name in sa:
        if name not in ua:
            kinds[name] = "drop"
    head = {"format": "nnspam-delta", "version": 1, "meta": meta, "drop": drop,
            "wide": {"bits": ub or sb, "updates": uu - su, "docs": ud - sd,
                     "used": bool(ub)},
            "grams": {"bits": _grams_counts(user)[0] or _grams_counts(site)[0],
                      "updates": _grams_counts(user)[1] - _grams_counts(site)[1],
                      "used": bool(_grams_counts(user)[0])},
            "arrays": kinds}
    buf = io.BytesIO()
    # deflated: the adaptive inputs' statistics (every input ages with every message)
    # shrink from 96 kB to 8 kB, the sparse parts a little
    np.savez_compressed(buf, allow_pickle=False, **arrays)  # read with allow_pickle=False
    out = {"delta.json": json.dumps(head, ensure_ascii=False).encode(),
           "delta.npz": buf.getvalue()}
    if len(user.journal):
        out[journal_mod.FILE] = user.journal.to_bytes()
    return out


_MISSING = object()


def delta_size(delta: Mapping[str, bytes]) -> int:
    """Bytes a delta takes (what a store keeps of a per-user model)."""
    return sum(len(v) for v in delta.values())


def _read_delta(delta: Mapping[str, bytes]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        head = json.loads(delta["delta.json"].decode("utf-8"))
        if head.get("format") != "nnspam-delta" or head.get("version") != 1:
            raise DeltaError("not an nnspam model delta (version 1)")
        with np.load(io.BytesIO(delta["delta.npz"]), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except DeltaError:
        raise
    except (KeyError, ValueError, TypeError, OSError, EOFError) as exc:
        raise DeltaError(f"unreadable model delta ({exc.__class__.__name__}: {exc})") from None
    return head, arrays


def _overlay(site: dict[str, np.ndarray], head: dict[str, Any],
             arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The user model's arrays: the site model's with the delta's laid over them.
    Arrays the delta does not touch are the site model's own (not copied)."""
    out = dict(site)
    for name, kind in head["arrays"].items():
        if kind == "drop":
            out.pop(name, None)
        elif kind == "whole":
            out[name] = arrays[name + ".="]
        elif kind == "sparse":
            base = site.get(name)
            if base is None:
                raise DeltaError(f"the delta changes {name}, which the site model lacks")
            new = np.array(base, copy=True)
            flat = new.reshape(-1)
            idx = arrays[name + ".i"]
            if idx.size and (idx.min() < 0 or idx.max() >= flat.size):
                raise DeltaError(f"{name}: index out of range")
            flat[idx] = arrays[name + ".v"]
            out[name] = new
        else:
            raise DeltaError(f"{name}: unknown kind {kind!r}")
    return out


def _wide_of(head: dict[str, Any], site: Model, arrays: dict[str, np.ndarray]) -> Any:
    """The user model's wide path (a new one: the site model's is never shared)."""
    from nnspam.model.wide import Wide

    w = head["wide"]
    if not w.get("used"):
        return None
    _, su, sd = _wide_counts(site)
    bits = int(w["bits"])
    size = 1 << bits
    dense_w = np.asarray(arrays.get("wide_w", np.zeros(size, np.float32)), np.float32)
    dense_df = np.asarray(arrays.get("wide_df", np.zeros(size, np.float32)), np.float32)
    if dense_w.shape != (size,) or dense_df.shape != (size,):
        raise DeltaError(f"the wide path's arrays are not of length 2**{bits}")
    # the overlaid dense vectors are the new path's own (a part the delta leaves alone
    # is the site model's array, only read): no sparse round trip, no second copy
    out = Wide(bits, weights=dense_w)
    out._df = dense_df
    out.updates = max(su + int(w["updates"]), 0) if np.any(dense_w) else 0
    out.docs = max(sd + int(w["docs"]), 0)
    return out


def _grams_of(head: dict[str, Any], site: Model, arrays: dict[str, np.ndarray]) -> Any:
    """The user model's grams part (a new one: the site model's is never shared)."""
    from nnspam.model.grams import Grams

    g = head.get("grams") or {}
    if not g.get("used"):
        return None
    bits = int(g["bits"])
    size = 1 << bits
    try:
        return Grams.from_dense(
            bits, np.asarray(arrays.get("grams_w", np.zeros(size, np.float32)), np.float32),
            np.asarray(arrays.get("grams_sig", np.ones(size, np.float32)), np.float32),
            _grams_counts(site)[1] + int(g["updates"]))
    except ValueError as exc:
        raise DeltaError(str(exc)) from None


def apply_delta(site: Model, delta: Mapping[str, bytes], *, private: bool = False) -> Model:
    """The per-user model that ``delta`` (:func:`make_delta`) describes, on ``site``.

    ``private``: the model will be learned into (the fleet's learner), so it shares
    nothing with ``site`` and its correction journal is read; otherwise (a server
    that only scores with it) it shares the site model's network and word list where
    the delta leaves them alone, and its journal stays unread."""
    from nnspam.model.adaptive import AdaptiveState

    head, arrays = _read_delta(delta)
    if private:
        site = private_copy(site)
    sa = _arrays(site)
    user = _overlay(sa, head, arrays)
    meta = {**_meta(site), **head["meta"]}
    for k in head["drop"]:
        meta.pop(k, None)
    unknown = [k for k in head["meta"] if k not in _FIELDS] + [
        k for k in head["drop"] if k not in ("adaptive",)]
    if unknown:  # a field this module cannot set: through the model files
        model = _through_files(meta, user, head, site)
    else:
        fields: dict[str, Any] = {k: copy.deepcopy(meta[k]) for k in head["meta"]
                                  if k != "adaptive"}
        net_names = set(site.network.require_params())
        if any(head["arrays"].get(k) for k in net_names):
            net = copy.deepcopy(site.network)
            net.set_weights({k: user[k] for k in net_names})
            fields["network"] = net
        if "idf" in head["arrays"]:
            fields["idf"] = user.get("idf")
        if "adaptive" in head["meta"] or "adaptive" in head["drop"] or any(
                k in head["arrays"] for k in _ADAPTIVE):
            fields["adaptive"] = (AdaptiveState.from_json(
                meta["adaptive"], user["adaptive_activity"], user.get("adaptive_by_class"))
                if meta.get("adaptive") is not None else None)
        fields["wide"] = _wide_of(head, site, user)
        fields["grams"] = _grams_of(head, site, user)
        model = dataclasses.replace(site, **fields)
    if private and journal_mod.FILE in delta:
        try:
            model._journal = journal_mod.Journal.read(io.BytesIO(delta[journal_mod.FILE]))
        except journal_mod.JournalError as exc:
            raise DeltaError(str(exc)) from None
    return model


def private_copy(model: Model) -> Model:
    """A copy of ``model`` that shares nothing a correction changes (network, word
    list, counts, adaptive state, wide path, summary) and has an empty correction
    journal: a new per-user model about to learn its first lesson, or the base of
    one the learner rebuilds. Cheaper than ``copy.deepcopy``, which would also copy
    the journal of the site model, whose lessons are not the user's."""
    return dataclasses.replace(
        model, network=copy.deepcopy(model.network), words=list(model.words),
        summary=copy.deepcopy(model.summary),
        wordlist_counts=(None if model.wordlist_counts is None
                         else list(model.wordlist_counts)),
        adaptive=copy.deepcopy(model.adaptive), wide=copy.deepcopy(model.wide),
        grams=copy.deepcopy(model.grams),
        idf=None if model.idf is None else np.array(model.idf, copy=True),
        libraries=dict(model.libraries))


def _through_files(meta: dict[str, Any], arrays: dict[str, np.ndarray],
                   head: dict[str, Any], site: Model) -> Model:
    """Write the user model's files and load them (:meth:`Model.load`): the general
    way, for deltas with fields :func:`apply_delta` cannot set directly."""
    out = {k: v for k, v in arrays.items() if k not in _WIDE}
    wide = _wide_of(head, site, arrays)
    meta = dict(meta)
    meta.setdefault("nnspam_version", "")
    if wide is not None:
        out.update(wide.arrays())
        meta["wide"] = wide.meta()
    grams = _grams_of(head, site, arrays)
    if grams is not None:
        out.update(grams.arrays())
        meta["grams"] = grams.meta()
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **{k: np.asarray(v, dtype=np.float32) if k not in (
        "wide_index", "wide_df_index", "grams_index", "grams_sig_index") else v
        for k, v in out.items()})
    wbytes = buf.getvalue()
    meta["weights_sha256"] = hashlib.sha256(wbytes).hexdigest()
    from nnspam.model.core import weights_checksums

    meta["weights_crc32"] = weights_checksums(wbytes)
    return model_from_files({"model.json": json.dumps(meta).encode(), "weights.npz": wbytes})
