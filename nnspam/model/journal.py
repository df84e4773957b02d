"""The correction journal: what each recent correction changed, so it can be undone.

A user who taught the filter a message by mistake (a newsletter moved to Junk, a
Trash folder learned as ham) wants that lesson gone, as ``bogofilter -S/-N`` and
``sa-learn --forget`` do for their token counts. A network has no per-message counts
to subtract, so the one correction routine (:func:`nnspam.model.correct.correct`)
records, for each message it learns, the exact change it made:

* the wide path's weights at the message's hashed slots (the part a correction
  teaches by default, ``learn.passes: 0``) and its document counts there, and
  whether the correction took a wide step (the path's update count);
* when the rule also takes network passes, the change of the network's input rows
  of the message's words (``W1`` rows with a non-zero input) and of ``b1``, ``W2``
  and ``b2``. Weight decay also shrinks every other row by a factor ``1 - rate*l2``
  per pass (3e-7 at the defaults); that part is not kept.

:func:`nnspam.model.correct.forget` subtracts an entry's changes and drops it. The
wide path is linear in its weights and the counts are sums, so with the default rule
forgetting is exact up to float32 rounding, whatever was learned after. A network
pass is not linear: the later corrections were learned on top of the forgotten one,
so its delta is an approximation there (measured: docs/guides/explain-undo.md "Undoing a lesson").
Not undone: the adaptive inputs' statistics and any input replacement the
correction's counts brought about (it is logged with the entry).

An entry is found by the message's key (:func:`message_key`), a digest of the set of
its tokens, so a copy of the message whose headers differ only where nnspam does not
look is the same message. The journal keeps the last ``learn.journal`` entries
(default 500, about 5 kB each): older lessons can no longer be forgotten, only
outweighed by a correction the other way.

Stored beside the model as ``journal.npz`` in the model directory (no pickle: the
entry list is JSON in a ``uint8`` array, the changes are number arrays), written
with the model's own atomic directory replacement, and read only when a correction,
a forget or ``nnspam inspect --journal`` needs it: the pipe filter never loads it.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import time
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from nnspam.config import DEFAULTS

__all__ = ["DEFAULT_LIMIT", "FILE", "Entry", "Journal", "JournalError", "message_key"]

#: Corrections kept (config ``learn.journal``).
DEFAULT_LIMIT: int = DEFAULTS["learn"]["journal"]  # the config's learn.journal
#: The journal's file in a model directory.
FILE = "journal.npz"
_NET_PARTS = ("W1", "b1", "W2", "b2")


class JournalError(ValueError):
    """A journal file that cannot be read."""


#: What reading a damaged journal file raises, turned into :class:`JournalError`: a
#: truncated or garbage file is no zip (``BadZipFile``), a damaged member fails its CRC or
#: inflation (``BadZipFile``, ``zlib.error``) or claims a zip feature Python lacks
#: (``NotImplementedError``, ``RuntimeError`` for "encrypted"), and the JSON list and the
#: arrays may not fit together (the rest). Found by flipping bytes of a journal at random
#: (tests/test_model_faults.py); none of them may stop a correction.
_DAMAGED = (OSError, EOFError, KeyError, IndexError, ValueError, TypeError, AttributeError,
            zipfile.BadZipFile, zlib.error, struct.error, RuntimeError)


def message_key(tokens: Iterable[str]) -> str:
    """The journal's name for a message: a digest of the set of its tokens (hex)."""
    uniq = sorted(t for t in set(tokens) if not t.startswith("\x00head:"))
    return hashlib.blake2b("\x00".join(uniq).encode("utf-8", "surrogateescape"),
                           digest_size=12).hexdigest()


_SUBJECT = re.compile(r"^subject:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def subject_of(tokens: Sequence[str], limit: int = 60) -> str:
    """A short reminder of the message for listings: its Subject line as the user saw it
    (decoded, from the head token of :meth:`nnspam.model.core.Model.tokens`), else, for a
    message without one (an SMS, a token list from before it), its subject words."""
    text = None
    if tokens and tokens[-1].startswith("\x00head:"):
        head = tokens[-1][len("\x00head:"):]
        end = re.search(r"\r?\n\r?\n", head)
        m = _SUBJECT.search(head[:end.start()] if end else head)
        if m is not None:
            text = _decoded(m.group(1))
    if text is None:
        words = [t.split(":", 1)[1] for t in tokens if t.startswith("subject:")]
        text = " ".join(dict.fromkeys(words))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _decoded(value: str) -> str:
    """A raw header value (one character per byte) as text: RFC 2047 words decoded,
    folding undone; what cannot be decoded is kept as it came."""
    from email.header import decode_header, make_header

    value = " ".join(value.split())
    try:
        return " ".join(str(make_header(decode_header(value))).split())
    except (ValueError, LookupError, UnicodeDecodeError):
        return value


@dataclass
class Entry:
    """One learned message and what learning it changed."""

    key: str
    label: str
    source: str
    time: float
    subject: str = ""
    tokens: int = 0
    wide_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    wide_delta: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    df_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    df_delta: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    wide_step: bool = False
    replacements: int = 0  # adaptive input replacements made while it was learned
    rows: np.ndarray | None = None  # W1 rows changed (network passes only)
    net: dict[str, np.ndarray] | None = None  # network deltas: W1 (rows), b1, W2, b2
    token_list: list[str] = field(default_factory=list)  # to learn it again (forget)
    # the grams part's step (nnspam/model/grams.py): AROW's (a, beta) and the push, from
    # which with the message's tokens Grams.unlearn undoes it; None: no step
    grams: tuple[float, float, float] | None = None

    def meta(self) -> dict[str, Any]:
        """The JSON part of the entry (the arrays are stored apart)."""
        return {"key": self.key, "label": self.label, "source": self.source,
                "time": self.time, "subject": self.subject, "tokens": self.tokens,
                "wide_step": self.wide_step, "replacements": self.replacements,
                "grams": None if self.grams is None else list(self.grams),
                "network": self.net is not None}


class Journal:
    """The last ``limit`` corrections of a model, oldest first."""

    def __init__(self, limit: int = DEFAULT_LIMIT, entries: list[Entry] | None = None) -> None:
        self.limit = int(limit)
        self.entries: list[Entry] = list(entries or [])
        self.trim()

    def __len__(self) -> int:
        return len(self.entries)

    def trim(self) -> None:
        """Drop the oldest entries beyond the limit (a limit of 0 keeps none)."""
        if len(self.entries) > max(self.limit, 0):
            del self.entries[:len(self.entries) - max(self.limit, 0)]

    def add(self, entry: Entry) -> None:
        """Record one learned message."""
        self.entries.append(entry)
        self.trim()

    def find(self, key: str) -> int | None:
        """Index of the latest entry of the message ``key``, or None."""
        for i in range(len(self.entries) - 1, -1, -1):
            if self.entries[i].key == key:
                return i
        return None

    def recent(self, n: int) -> list[Entry]:
        """The ``n`` latest entries, newest first."""
        return list(reversed(self.entries[-n:])) if n > 0 else []

    # -- the file -------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The journal as an ``.npz`` file's bytes: the entries' changes concatenated
        into four arrays (each entry's lengths in its JSON record), network deltas as
        arrays of their own (see the module docstring)."""
        metas, arrays, texts = [], {}, []
        for i, e in enumerate(self.entries):
            m = e.meta()
            m["n_wide"], m["n_df"] = int(e.wide_index.size), int(e.df_index.size)
            text = "\x00".join(e.token_list).encode("utf-8", "surrogateescape")
            m["n_text"] = len(text)
            texts.append(text)
            metas.append(m)
            if e.net is not None and e.rows is not None:
                arrays[f"e{i}_rows"] = e.rows.astype(np.int32)
                for part in _NET_PARTS:
                    arrays[f"e{i}_{part}"] = e.net[part].astype(np.float32)

        def cat(name: str, dtype: Any) -> np.ndarray:
            parts = [getattr(e, name) for e in self.entries]
            return (np.concatenate(parts).astype(dtype) if parts
                    else np.zeros(0, dtype=dtype))

        arrays["wide_index"] = cat("wide_index", np.int32)
        arrays["wide_delta"] = cat("wide_delta", np.float32)
        arrays["df_index"] = cat("df_index", np.int32)
        arrays["df_delta"] = cat("df_delta", np.float32)
        arrays["tokens"] = np.frombuffer(b"".join(texts), dtype=np.uint8)
        head = {"format": "nnspam-journal", "version": 1, "limit": self.limit,
                "entries": metas}
        arrays["meta"] = np.frombuffer(json.dumps(head).encode("utf-8"), dtype=np.uint8)
        # An .npz file (np.load reads it) deflated at level 1: a third of the time of
        # np.savez_compressed's level 6 for 10% more bytes (500 entries: about 0.5 MB).
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for name, arr in arrays.items():
                with zf.open(name + ".npy", "w") as fh:
                    np.lib.format.write_array(fh, np.asanyarray(arr), allow_pickle=False)
        return buf.getvalue()

    @classmethod
    def read(cls, path: Path | IO[bytes], limit: int | None = None) -> Journal:
        """Read a journal file, or its bytes in a binary file object
        (:class:`JournalError` naming the file if it is not one, truncated or damaged)."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                head = json.loads(bytes(npz["meta"]).decode("utf-8"))
                if head.get("format") != "nnspam-journal":
                    raise JournalError(f"{path}: not an nnspam journal")
                wi, wd = npz["wide_index"].astype(np.int64), npz["wide_delta"]
                di, dd = npz["df_index"].astype(np.int64), npz["df_delta"]
                text = bytes(npz["tokens"])
                entries, a, b, c = [], 0, 0, 0
                for i, m in enumerate(head["entries"]):
                    nw, nd, nt = int(m["n_wide"]), int(m["n_df"]), int(m["n_text"])
                    g = m.get("grams")  # journals before the grams part have none
                    chunk = text[c:c + nt].decode("utf-8", "surrogateescape")
                    net = rows = None
                    if m.get("network"):
                        rows = npz[f"e{i}_rows"].astype(np.int64)
                        net = {part: npz[f"e{i}_{part}"] for part in _NET_PARTS}
                    entries.append(Entry(
                        key=str(m["key"]), label=str(m["label"]), source=str(m["source"]),
                        time=float(m["time"]), subject=str(m.get("subject", "")),
                        tokens=int(m.get("tokens", 0)),
                        wide_index=wi[a:a + nw], wide_delta=wd[a:a + nw],
                        df_index=di[b:b + nd], df_delta=dd[b:b + nd],
                        wide_step=bool(m.get("wide_step")),
                        replacements=int(m.get("replacements", 0)), rows=rows, net=net,
                        token_list=_split_tokens(chunk),
                        grams=None if g is None else (float(g[0]), float(g[1]), float(g[2]))))
                    a, b, c = a + nw, b + nd, c + nt
                if a != wi.size or b != di.size or c != len(text):
                    raise JournalError(f"{path}: entry lengths do not match the arrays")
                kept = int(head.get("limit", DEFAULT_LIMIT)) if limit is None else limit
        except JournalError:
            raise
        except _DAMAGED as exc:
            why = " ".join(str(exc).split())  # one line, whatever the library said
            raise JournalError(f"{path}: unreadable journal "
                               f"({exc.__class__.__name__}: {why})") from None
        return cls(kept, entries)


def _split_tokens(chunk: str) -> list[str]:
    """A stored token list: its tokens were joined by NUL, and the head token
    (:data:`nnspam.mail.tokens.HEAD_MARK`, last when present) starts with one."""
    if not chunk:
        return []
    mark = "\x00\x00head:"
    i = chunk.find(mark)  # tokens hold no NUL: the first is the separator
    if i >= 0:
        return ([*chunk[:i].split("\x00")] if i else []) + [chunk[i + 1:]]
    if chunk.startswith("\x00head:"):
        return [chunk]
    return chunk.split("\x00")


def now() -> float:
    """The time an entry is stamped with (a function, so tests can fix it)."""
    return time.time()
