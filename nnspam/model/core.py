"""The model: word list + network + ham bias -> spamicity (the verdict rule is
:mod:`nnspam.services.verdict`).

On disk a model is a directory holding

``model.json``
    format version, kind (``email`` or ``sms``), the word list, the feature
    scaling, the network configuration, the ham/spam factors and threshold it
    was trained with, and a training summary (data, timings, provenance).
``weights.npz``
    the network's weight matrices (NumPy's uncompressed zip of arrays).

Optionally (models that adapted their inputs, ``nnspam.model.adaptive``):
``model.json`` holds an ``adaptive`` object (settings, candidate table,
replacement log) and ``weights.npz`` the arrays ``adaptive_activity`` and
``adaptive_by_class`` (aged activity per input, overall and per class).
Models without them load as before.

``model.json`` also names the architecture (``arch``: ``nnspam``, the n-h-2
network of :mod:`nnspam.learning.network`; ``deep`` or ``sms-embedding``, the networks
of :mod:`nnspam.learning.arch`), the ``backend`` that trained it (``numpy`` or
``keras``) and the ``libraries`` (name -> version) used. A model without
``arch`` is an ``nnspam`` model. Whatever trained it, a model is served by
the NumPy forward pass: TensorFlow is never imported to classify. ``deep``
models keep their idf weights in ``weights.npz`` (``idf``) and their n-gram
length in ``model.json`` (``ngram``); ``sms-embedding`` models keep their
vocabulary as ``words`` (word i has index i; padding is the last row of
the embedding ``W1``). What each architecture writes and reads, and how its network
is built from these files: :mod:`nnspam.model.codec`.

Never pickled: both files are plain data and are loaded without executing
anything. Saving writes a new directory beside the target and renames it into
place, so a reader sees the old model or the new one, never a mix. A save killed
midway (SIGKILL, a power cut) leaves its temporary directory beside the model; the
next save of that model removes it (:func:`_sweep_leftovers`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from nnspam import __version__
from nnspam.config import DEFAULTS
from nnspam.learning.arch import ARCHS, MLP, SequenceEncoder
from nnspam.learning.features import Vectorizer
from nnspam.learning.network import Network
from nnspam.mail.atomic import fsync_dir
from nnspam.model import journal as journal_mod
from nnspam.model.codec import CODECS, ArchCodec, CodecError, codec_of
from nnspam.model.grams import Grams, combine
from nnspam.model.wide import Wide

if TYPE_CHECKING:
    from nnspam.model.adaptive import AdaptiveState

__all__ = ["FORMAT_VERSION", "FREE_PREFIX", "KINDS", "Model", "ModelError", "spamicity",
           "resolve_model_path", "is_shipped"]

FORMAT_VERSION = 1
KINDS = ("email", "sms")

#: Words of input slots that no token holds yet (an untrained network learning its word
#: list from the stream: :func:`nnspam.model.correct.admit_free_inputs`). The tokenizers
#: never emit a NUL.
FREE_PREFIX = "\x00free:"

#: Up to this many messages get dense feature rows (:meth:`Model.features`), more a CSR
#: matrix. One message, as the pipe filter, daemon, server and a correction score it, is
#: cheaper dense: measured with the shipped email model, 0.14 ms for a 1 x n row and
#: 0.27 ms as CSR, and building CSR imports SciPy (about 170 ms), which the filter's
#: start-up must not pay (tests/test_filter.py); from about 8 messages on CSR is the faster
#: (0.20 against 0.41 ms a message at 8, 0.09 against 0.34 at 32, 0.04 against 0.17 at 256).
#: 32 keeps every small command SciPy-free, and up to 32 rows the network gathers the
#: words' rows of W1 in either form with the same result to the bit.
DENSE_ROWS = 32


class ModelError(Exception):
    """A model that cannot be loaded or saved; the message names the file."""


#: The files a save writes into its temporary directory (model.json, weights.npz and the
#: correction journal): a directory holding anything else is not a save's leftover.
_SAVED_FILES = frozenset({"model.json", "weights.npz", journal_mod.FILE})
#: How old a leftover of a save must be before a save that does not hold the model's
#: writer lock removes it (seconds; a save under the lock removes any, see
#: :func:`_sweep_leftovers`). A save writes a few MB and takes well under a second; this
#: is far beyond any save still running.
LEFTOVER_AGE = 15 * 60.0


def weights_checksums(npz: bytes | zipfile.ZipFile) -> dict[str, int]:
    """The CRC-32 of each array of a ``weights.npz``, read from the zip's central
    directory, which model.json records as ``weights_crc32``.

    Why not a SHA-256 of the whole file, as before: hashing the 12.5 MB of the
    shipped model's weights took 8 of the pipe filter's 176 ms per message (the
    start-up bench, scripts/bench/filter_startup.py). The zip already holds a CRC
    per array and checks each as it is read, so matching the central directory's
    CRCs to model.json's catches a truncated file and a weights.npz of another
    model just as well, for the cost of reading the directory. Models written
    before keep their ``weights_sha256``, which is still checked when present
    alone."""
    zf = npz if isinstance(npz, zipfile.ZipFile) else zipfile.ZipFile(io.BytesIO(npz))
    return {i.filename.removesuffix(".npy"): i.CRC for i in zf.infolist()}


def _leftover_names(name: str) -> re.Pattern[str]:
    """The names :meth:`Model.save` gives its passing directories beside the model
    ``name``: ``.NAME.XXXXXXXX`` (``tempfile.mkdtemp``: 8 of ``a-z0-9_``), where the new
    model is written, and ``.NAME.old-PID-NS``, the replaced model until it is removed."""
    return re.compile(rf"\.{re.escape(name)}\.(?:(?P<tmp>[a-z0-9_]{{8}})|old-\d+-\d+)")


def _sweep_leftovers(target: Path, min_age: float) -> list[Path]:
    """Remove what saves of the model ``target`` that were killed midway left beside it
    (a SIGKILL between ``mkdtemp`` and the rename: up to a whole model each, which no
    later save used to remove), older than ``min_age`` seconds; returns what was removed.

    Only directories that are clearly a save's: named as :func:`_leftover_names` says
    for this very model, not a symlink, holding nothing but the files a save writes. A
    ``.NAME.old-...`` directory only while ``target`` exists: without it (a save killed
    between its two renames) that directory is the last saved model, left for a person
    to move back. Never fails the save: a directory that cannot be removed is skipped."""
    pattern = _leftover_names(target.name)
    now = time.time()
    removed: list[Path] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    saved = target.is_dir()
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or (match["tmp"] is None and not saved):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            # (no age test at all under the lock: a clock ahead on a network file system
            # must not keep a leftover)
            if not stat.S_ISDIR(st.st_mode) or (min_age > 0 and now - st.st_mtime < min_age):
                continue
            inside = list(os.scandir(entry.path))
            if any(f.name not in _SAVED_FILES or not f.is_file(follow_symlinks=False)
                   for f in inside):
                continue
            shutil.rmtree(entry.path)
        except OSError as exc:
            logging.getLogger("nnspam.model").warning(
                "%s: cannot remove the leftover of an interrupted save: %s", entry.path,
                exc.strerror or exc)
            continue
        logging.getLogger("nnspam.model").info(
            "%s: removed the leftover of an interrupted save", entry.path)
        removed.append(Path(entry.path))
    return removed


def spamicity(outputs: np.ndarray, ham_factor: float, spam_factor: float) -> np.ndarray:
    """The original NNSpam ham bias: ``s*o_spam / (s*o_spam + h*o_ham)``.

    ``outputs`` is the network's (m, 2) output, column 0 spam, column 1 ham.
    With h = 0.9 and s = 0.1 a message needs o_spam > 9 * o_ham to reach the
    0.5 threshold: a ham is only lost when the network is very sure.
    """
    o = np.asarray(outputs, dtype=np.float64)
    num = spam_factor * o[:, 0]
    den = num + ham_factor * o[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.5)
    return s


#: Messages of each class a network must have learned from before its logit counts in full
#: beside the wide path (:meth:`Model.network_trust`). Measured with an untrained start,
#: full feedback, with NETWORK_LOGIT_CAP: the SpamAssassin corpus by date (it opens with
#: 220 spams) 1-ROCA 0.116% with 200 against 0.140% with full trust from the first
#: message of each class; Enron-Spam enron5 0.072% against 0.066%.
TRUST_AFTER = 200.0


#: The most the network's logit counts beside the wide path, in logits: it enters the sum
#: as ``CAP * tanh(logit / CAP)``. A network's outputs saturate (logits of 16 to 40 for a
#: few messages an untrained network learned on the way), and unbounded, one such ham
#: outranked every spam. Full feedback from an untrained start, 1-ROCA % (enron5,
#: SpamAssassin by date): no cap 0.185, 0.178; cap 4 0.072, 0.116; cap 8 0.104, 0.120
#: (enron1-4, enron6 with cap 8: 0.292, 0.118, 0.163, 0.098, 0.285; cap 4: 0.277, 0.118,
#: 0.160, 0.098, 0.253). Corrections only, from the shipped models: hams lost over
#: enron1-6 305 without a cap, 287 with 4, 297 with 8; on the SMS stream 2, 4 and 3 hams
#: with 1-ROCA 0.164%, 0.395% and 0.194% (the trained SMS network is right more often than
#: not, and a tight cap gave its corrections too much weight). 8 ranks best on all of them
#: against the peers of scripts/bench/stream.py; 4 lost SMS to CRM114. A model without
#: corrections scores by the network alone, uncapped.
NETWORK_LOGIT_CAP = 8.0


def network_logit(outputs: np.ndarray, ham_factor: float, spam_factor: float) -> np.ndarray:
    """``log(s*o_spam / (h*o_ham))``: the logit of :func:`spamicity`, finite where the
    outputs round to 0 or 1."""
    o = np.maximum(np.asarray(outputs, dtype=np.float64), 1e-300)
    return (np.log(spam_factor * o[:, 0]) - np.log(ham_factor * o[:, 1]))


def tokenize_payload(payload: bytes | str, kind: str, max_part_bytes: int) -> list[str]:
    """A message's tokens for a model of ``kind``: :meth:`Model.tokens`, as a function of
    its settings alone, so that another process can tokenize ahead (``nnspam stream``)."""
    from nnspam.mail import tokens as tk

    if kind == "sms":
        text = payload if isinstance(payload, str) else tk.sms_text_from_bytes(payload)
        return tk.tokenize_sms(text)  # no head token: SMS has no grams part (grams.KINDS)
    if isinstance(payload, str):
        payload = payload.encode("utf-8", errors="surrogateescape")
    toks = tk.tokenize_email(payload, max_part_bytes)
    # last: the message's first bytes, for the grams part (nnspam/model/grams.py)
    toks.append(tk.head_token(payload))
    return toks


def resolve_model_path(name: str | os.PathLike) -> Path:
    """``default`` / ``default-sms`` -> the models shipped in the package;
    anything else is a directory path (``~`` expanded)."""
    s = str(name)
    if s in ("default", "default-email"):
        return Path(str(resources.files("nnspam").joinpath("data/models/email")))
    if s == "default-sms":
        return Path(str(resources.files("nnspam").joinpath("data/models/sms")))
    return Path(os.path.expanduser(s))


def _shipped_dir() -> Path:
    """The folder of the models bundled in the package (``nnspam/data/models``)."""
    return Path(str(resources.files("nnspam").joinpath("data/models")))


def is_shipped(name: str | os.PathLike) -> bool:
    """Whether ``name`` is one of the models bundled in the package, which are read-only:
    ``default``/``default-email``, ``default-sms``, or any path that resolves (``~`` and
    symlinks followed) into ``nnspam/data/models``.

    The one rule of every front that could write a model (the daemon, the SMS store,
    ``nnspam learn``, the server's TELL): the package's files are shared by every user of
    the installation and replaced by the next upgrade, so learning goes into a model
    directory of one's own. A directory that merely has a name starting with "default"
    (``defaults-mine``) is an ordinary, writable model."""
    path = resolve_model_path(name).resolve()
    return path.is_relative_to(_shipped_dir().resolve())


@dataclass
class Model:
    """A trained (or trainable) filter for one kind of message."""

    words: list[str]
    network: Network | MLP
    kind: str = "email"
    scaling: str = "log"
    # a model made without them (a test's, an older file's) has the config's defaults
    ham_factor: float = DEFAULTS["ham_factor"]
    spam_factor: float = DEFAULTS["spam_factor"]
    threshold: float = DEFAULTS["threshold"]
    max_part_bytes: int = DEFAULTS["max_part_bytes"]
    summary: dict[str, Any] = field(default_factory=dict)
    wordlist_counts: list[int] | None = None
    adaptive: AdaptiveState | None = None
    arch: str = "nnspam"
    backend: str = "numpy"
    ngram: int = 1
    idf: np.ndarray | None = None
    libraries: dict[str, str] = field(default_factory=dict)
    wide: Wide | None = None  # the hashed-token path corrections teach (nnspam/model/wide.py)
    grams: Grams | None = None  # byte 4-grams and tokens, by AROW (nnspam/model/grams.py)
    #: The input slots still free (:data:`FREE_PREFIX`) as a stack, the lowest on top:
    #: found in ``words`` when a free slot is first asked for (:meth:`free_slot_left`),
    #: then only taken from. A slot that an adaptive replacement gives a word meanwhile
    #: stays on it until :meth:`fill_free_slot` comes to it. Not saved, and not carried
    #: over to a copy made by ``dataclasses.replace``: it is this model's word list's.
    _free_slots: list[int] | None = field(default=None, init=False, repr=False,
                                          compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown model kind {self.kind!r}")
        self.vectorizer: Vectorizer | SequenceEncoder = codec_of(self.arch).vectorizer(
            self.words, self.network, self.scaling, self.ngram, self.idf)
        # the correction journal (nnspam.model.journal): read on first use, from here
        self._journal: journal_mod.Journal | None = None
        self._journal_file: Path | None = None

    @property
    def codec(self) -> ArchCodec:
        """How the network of the model's architecture is saved and loaded
        (:mod:`nnspam.model.codec`)."""
        return CODECS[self.arch]

    @property
    def journal(self) -> journal_mod.Journal:
        """The correction journal, read from the model directory on first use: what
        each recent correction changed, for :func:`nnspam.model.correct.forget`. A
        model without one (new, or saved before journals) starts an empty one; an
        unreadable file is logged and replaced by an empty one at the next save."""
        if self._journal is None:
            found = None
            if self._journal_file is not None and self._journal_file.is_file():
                try:
                    found = journal_mod.Journal.read(self._journal_file)
                except journal_mod.JournalError as exc:
                    logging.getLogger("nnspam.model").warning("%s; starting a new journal", exc)
            self._journal = found or journal_mod.Journal()
        return self._journal

    # -- the data path ---------------------------------------------------
    def tokens(self, payload: bytes | str) -> list[str]:
        """Payload -> tokens, with the tokenizer that suits the model's kind."""
        return tokenize_payload(payload, self.kind, self.max_part_bytes)

    def features(self, token_lists: Sequence[Sequence[str]], sparse: bool | None = None) -> Any:
        """The network's inputs for tokenized messages: a SciPy CSR matrix (float32) for
        more than DENSE_ROWS messages (training sets, test runs; see
        :mod:`nnspam.learning.features`), a dense NumPy array for a few, or as ``sparse``
        says. The values are the same either way; word indices (sms-embedding) are always
        a dense array."""
        if isinstance(self.vectorizer, SequenceEncoder):
            return self.vectorizer.transform(token_lists)
        if sparse is None:
            sparse = len(token_lists) > DENSE_ROWS
        return self.vectorizer.transform(token_lists, sparse=sparse)

    def outputs(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """The network's (m, 2) outputs [o_spam, o_ham] for tokenized messages."""
        return self.network.predict_proba(self.features(token_lists))

    def spamicity_of_tokens(
        self, token_lists: Sequence[Sequence[str]],
        ham_factor: float | None = None, spam_factor: float | None = None,
    ) -> np.ndarray:
        """Spamicity of tokenized messages: the ham bias over the network's outputs, plus
        the wide path's logit once corrections have taught it (:mod:`nnspam.model.wide`). The one
        place every front's score comes from."""
        return self.judge_tokens(token_lists, ham_factor, spam_factor)[0]

    def judge_tokens(
        self, token_lists: Sequence[Sequence[str]],
        ham_factor: float | None = None, spam_factor: float | None = None,
        outputs: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(spamicity, its logit) of tokenized messages, in one pass. The logit ranks
        messages whose spamicity rounds to 0 or 1 (``nnspam stream``'s 1-ROCA).
        ``outputs``: the network's outputs for them (:meth:`outputs`) when the caller
        has them already, to be handed on to :func:`nnspam.model.correct.observe`."""
        h = self.ham_factor if ham_factor is None else ham_factor
        s = self.spam_factor if spam_factor is None else spam_factor
        out = self.outputs(token_lists) if outputs is None else outputs
        wide = (self.wide.logit(token_lists) if self.wide is not None and self.wide.active
                else None)
        return self.judge_outputs(out, wide, h, s, self.grams_margins(token_lists))

    def grams_margins(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray | None:
        """The grams part's margin of each message (None while it has learned nothing)."""
        return self.grams.margins(token_lists) if self.grams is not None else None

    def judge_outputs(self, out: np.ndarray, wide: np.ndarray | None, ham_factor: float,
                      spam_factor: float, grams: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(spamicity, its logit) from the network's (m, 2) outputs, the wide logits
        (None while the wide path is untaught) and the grams part's margins (None while it
        is untaught; :func:`nnspam.model.grams.combine`): the rule of :meth:`judge_tokens`,
        apart so that :mod:`nnspam.model.explain` scores a message with words left out by
        it too."""
        if wide is None and grams is None:
            return (spamicity(out, ham_factor, spam_factor),
                    network_logit(out, ham_factor, spam_factor))
        net = network_logit(out, ham_factor, spam_factor)
        z = self._network_share(net) + wide if wide is not None else net
        z = combine(z, grams, math.log(spam_factor / ham_factor))
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-z)), z

    def class_counts(self) -> tuple[int, int]:
        """(ham, spam) messages the model has learned from: its training part plus the
        messages learned since (corrections, a stream)."""
        tr = self.summary.get("messages") or {}
        le = self.summary.get("learned") or {}
        return (int(tr.get("ham", 0)) + int(le.get("ham", 0)),
                int(tr.get("spam", 0)) + int(le.get("spam", 0)))

    def network_trust(self) -> float:
        """How much the network's logit counts beside the wide path: in proportion to the
        messages of its rarer class it has learned from, up to TRUST_AFTER (1 for every
        trained model). A network that has seen spam and no ham yet (the start of an
        untrained stream) has no ground to call anything spam."""
        n = min(self.class_counts())
        return 1.0 if n >= TRUST_AFTER else n / TRUST_AFTER

    def logits(self, token_lists: Sequence[Sequence[str]], ham_factor: float | None = None,
               spam_factor: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(network logit, wide logit) of the spamicity of each message, at the ham bias
        given (the model's own where None): without the grams part, the spamicity is
        ``sigmoid`` of their sum."""
        out = self.outputs(token_lists)
        wide = (self.wide.logit(token_lists) if self.wide is not None and self.wide.active
                else np.zeros(len(token_lists)))
        net = network_logit(out, self.ham_factor if ham_factor is None else ham_factor,
                            self.spam_factor if spam_factor is None else spam_factor)
        return (self._network_share(net) if wide.any() else net), wide

    def _network_share(self, net: np.ndarray) -> np.ndarray:
        """What the network's logit adds beside an active wide path: bounded by
        NETWORK_LOGIT_CAP and scaled by :meth:`network_trust`."""
        return NETWORK_LOGIT_CAP * np.tanh(net / NETWORK_LOGIT_CAP) * self.network_trust()

    def ensure_wide(self) -> Wide:
        """The model's wide path, created empty on first use."""
        if self.wide is None:
            self.wide = Wide()
        return self.wide

    def ensure_grams(self) -> Grams:
        """The model's grams part, created empty on first use."""
        if self.grams is None:
            self.grams = Grams()
        return self.grams

    def score(self, payloads: Sequence[bytes | str], **kw: float | None) -> np.ndarray:
        """Spamicity of each payload (raw email bytes or SMS text)."""
        return self.spamicity_of_tokens([self.tokens(p) for p in payloads], **kw)

    def replace_input(self, index: int, word: str, count: int = 0) -> None:
        """Put ``word`` on input ``index`` (adaptive inputs): the word list, the
        vectorizer and the word counts change together, and the input's
        outgoing weights restart from zero so the new word starts neutral."""
        if word in self.vectorizer.index:
            raise ValueError(f"{word!r} is already input {self.vectorizer.index[word]}")
        old = self.words[index]
        self.words[index] = word
        vec = self.vectorizer
        vec.words[index] = word
        if vec.index.get(old) == index:
            del vec.index[old]
        vec.index[word] = index
        if self.wordlist_counts is not None and len(self.wordlist_counts) == len(self.words):
            self.wordlist_counts[index] = int(count)
        if self.idf is not None:
            # tf-idf inputs (arch deep): a word new to the model counts as the rarest one.
            self.idf[index] = float(self.idf.max())
            if isinstance(vec, Vectorizer) and vec.idf is not None:
                vec.idf[index] = self.idf[index]
        self.network.reset_inputs([index])

    # -- free input slots (an untrained network's, nnspam.model.correct) ---
    def free_inputs(self) -> list[int]:
        """Input slots that no word holds yet (:data:`FREE_PREFIX`), lowest first."""
        return [i for i, w in enumerate(self.words) if w.startswith(FREE_PREFIX)]

    def free_slot_left(self) -> bool:
        """Whether a slot is left on the free-slot stack (made from :meth:`free_inputs`
        on the first call)."""
        if self._free_slots is None:
            free = self.free_inputs()
            free.reverse()  # pop() hands out the lowest slot first
            self._free_slots = free
        return bool(self._free_slots)

    def handing_out_free_slots(self) -> bool:
        """Whether free slots are being handed out: the stack was made and is not empty
        (no call makes it)."""
        return bool(self._free_slots)

    def fill_free_slot(self, word: str) -> int | None:
        """Take the lowest slot off the free-slot stack (:meth:`free_slot_left` must have
        said one is left) and put ``word`` on it, in the word list and the vectorizer,
        keeping the slot's weights. Returns the slot, or None when an adaptive
        replacement gave it a word meanwhile (it is gone from the stack then, and
        ``word`` was not placed)."""
        assert self._free_slots is not None
        idx = self._free_slots.pop()
        old = self.words[idx]
        if not old.startswith(FREE_PREFIX):
            return None
        self.words[idx] = word
        vec = self.vectorizer
        vec.words[idx] = word
        vec.index.pop(old, None)
        vec.index[word] = idx
        return idx

    # -- persistence -----------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": "nnspam-model",
            "format_version": FORMAT_VERSION,
            "nnspam_version": __version__,
            "arch": self.arch,
            "backend": self.backend,
            "libraries": self.libraries,
            "ngram": self.ngram,
            "kind": self.kind,
            "scaling": self.scaling,
            "ham_factor": self.ham_factor,
            "spam_factor": self.spam_factor,
            "threshold": self.threshold,
            "max_part_bytes": self.max_part_bytes,
            "network": self.network.get_config(),
            "n_inputs": len(self.words),
            "words": self.words,
            "wordlist_counts": self.wordlist_counts,
            "summary": self.summary,
            **({"adaptive": self.adaptive.to_json()} if self.adaptive is not None else {}),
            **({"wide": self.wide.meta()} if self.wide is not None and self.wide.used else {}),
            **({"grams": self.grams.meta()} if self.grams is not None and self.grams.active
               else {}),
        }

    def save(self, path: str | os.PathLike, *, locked: bool = False) -> None:
        """Write the model directory atomically (see the module docstring): the files go
        into a new directory beside ``path``, are fsynced, and the directory is renamed
        into place (the old one renamed away first, and back if that fails).

        First the leftovers of earlier saves of this model that were killed midway are
        removed (:func:`_sweep_leftovers`; before writing, so that on a full disk their
        space is free again). ``locked``: the caller holds the model's writer lock
        (:func:`nnspam.model.writer.model_lock`, as every writer of a learned model
        does), so no other save of this directory is running and every leftover goes.
        Without it another process may be saving the same directory this very moment,
        its temporary directory looking just like a leftover, so only leftovers older
        than LEFTOVER_AGE go."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        _sweep_leftovers(target, 0.0 if locked else LEFTOVER_AGE)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        moved: Path | None = None  # the old model while renamed away
        try:
            buf = io.BytesIO()
            arrays = self.codec.saved_arrays(self.network)
            if self.idf is not None:
                arrays["idf"] = np.asarray(self.idf, dtype=np.float32)
            if self.adaptive is not None:
                arrays.update(self.adaptive.arrays())
            if self.wide is not None and self.wide.used:
                arrays.update(self.wide.arrays())
            if self.grams is not None and self.grams.active:
                arrays.update(self.grams.arrays())
            np.savez(buf, allow_pickle=False, **arrays)  # as Model.load reads them
            wbytes = buf.getvalue()
            meta = self.to_json()
            meta["weights_sha256"] = hashlib.sha256(wbytes).hexdigest()
            meta["weights_crc32"] = weights_checksums(wbytes)
            files = [("weights.npz", wbytes),
                     ("model.json",
                      (json.dumps(meta, indent=1, ensure_ascii=False) + "\n").encode())]
            if self._journal is not None:
                if len(self._journal):
                    files.append((journal_mod.FILE, self._journal.to_bytes()))
            elif self._journal_file is not None and self._journal_file.is_file():
                files.append((journal_mod.FILE, self._journal_file.read_bytes()))  # as read
            for name, data in files:
                with open(tmp / name, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            os.chmod(tmp, 0o755)
            fsync_dir(tmp)
            if target.exists():
                old = target.parent / f".{target.name}.old-{os.getpid()}-{time.time_ns()}"
                os.rename(target, old)
                moved = old
                os.rename(tmp, target)
                moved = None
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, target)
            fsync_dir(target.parent)
            self._journal_file = target / journal_mod.FILE
        except BaseException:
            if moved is not None:  # the new one did not take its place: the old one back
                try:
                    os.rename(moved, target)
                except OSError:
                    pass
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> Model:
        """Load a model directory; every problem is a :class:`ModelError`
        whose message names the file and what is wrong with it."""
        base = resolve_model_path(path)
        for attempt in range(3):
            try:
                return cls._load(base)
            except ModelError:
                # A save renames the old directory away just before the new
                # one arrives: a reader caught in between retries briefly.
                if attempt == 2 or base.exists():
                    raise
                time.sleep(0.05)
        raise AssertionError("unreachable")

    @classmethod
    def _load(cls, base: Path) -> Model:
        if not base.exists():
            raise ModelError(f"{base}: no such model directory (train one with 'nnspam train')")
        if not base.is_dir():
            raise ModelError(f"{base}: a model is a directory holding model.json and weights.npz")
        jpath, wpath = base / "model.json", base / "weights.npz"
        try:
            meta = json.loads(jpath.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"{jpath}: missing") from None
        except OSError as exc:
            raise ModelError(f"{jpath}: {exc.strerror}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{jpath}: not valid JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != "nnspam-model":
            raise ModelError(f"{jpath}: not an nnspam model description")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelError(
                f"{jpath}: format version {meta.get('format_version')!r}, this nnspam reads "
                f"version {FORMAT_VERSION}"
            )
        try:
            words = meta["words"]
            kind = meta["kind"]
            scaling = meta["scaling"]
            net_cfg = meta["network"]
        except KeyError as exc:
            raise ModelError(f"{jpath}: missing field {exc.args[0]!r}") from None
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words) or not words:
            raise ModelError(f"{jpath}: 'words' must be a non-empty list of strings")
        if kind not in KINDS:
            raise ModelError(f"{jpath}: unknown kind {kind!r}")
        arch = meta.get("arch", "nnspam")
        codec = CODECS.get(arch)
        if codec is None:
            raise ModelError(f"{jpath}: unknown architecture {arch!r} (this nnspam has {ARCHS})")
        if not codec.allows(scaling):
            raise ModelError(f"{jpath}: unknown scaling {scaling!r}")
        n_in = len(words)
        try:
            plan = codec.plan(net_cfg, n_in, scaling)
        except CodecError as exc:
            raise ModelError(f"{jpath}: {exc}") from None
        want = meta.get("weights_sha256")
        crcs = meta.get("weights_crc32")
        try:
            # One open file for the checksum and the arrays (the same inode even if the model
            # is replaced meanwhile), hashed in chunks and read once: the weights are never
            # held twice (with the copy-free set_weights below, the peak RSS of `nnspam classify`
            # on one message with the shipped model went from 72 to 53 MB).
            with open(wpath, "rb") as fh:
                if isinstance(crcs, dict):
                    try:
                        ok = weights_checksums(zipfile.ZipFile(fh)) == crcs
                    except (zipfile.BadZipFile, EOFError, ValueError):
                        ok = False
                    if not ok:
                        raise ModelError(f"{wpath}: checksum does not match model.json "
                                         "(truncated or replaced)")
                    fh.seek(0)
                elif want:
                    digest = hashlib.sha256()
                    while chunk := fh.read(1 << 20):
                        digest.update(chunk)
                    if digest.hexdigest() != want:
                        raise ModelError(f"{wpath}: checksum does not match model.json "
                                         "(truncated or replaced)")
                    fh.seek(0)
                with np.load(fh, allow_pickle=False) as npz:
                    weights = {k: npz[k] for k in plan.names}
                    activity = (npz["adaptive_activity"] if "adaptive_activity" in npz.files
                                else None)
                    by_class = (npz["adaptive_by_class"] if "adaptive_by_class" in npz.files
                                else None)
                    # the wide path's and the grams part's sparse arrays, if model.json
                    # says the part was saved
                    saved = {part.PART: {k: npz[k] for k in part.saved_names()}
                             for part in (Wide, Grams) if meta.get(part.PART) is not None}
        except FileNotFoundError:
            raise ModelError(f"{wpath}: missing") from None
        except KeyError as exc:
            raise ModelError(f"{wpath}: missing array {exc.args[0]}") from None
        except (ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ModelError(f"{wpath}: unreadable ({exc.__class__.__name__}: {exc})") from None
        except OSError as exc:
            raise ModelError(f"{wpath}: {exc.strerror or exc}") from None
        idf = weights.pop("idf", None)
        try:
            net = codec.network(plan, net_cfg, n_in, weights)
        except CodecError as exc:
            raise ModelError(f"{wpath}: {exc}") from None
        adaptive = None
        if meta.get("adaptive") is not None:
            from nnspam.model.adaptive import AdaptiveState

            if activity is None or activity.shape != (n_in,):
                raise ModelError(f"{wpath}: adaptive_activity missing or not of length {n_in}")
            try:
                adaptive = AdaptiveState.from_json(meta["adaptive"], activity, by_class)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ModelError(f"{jpath}: bad 'adaptive' object ({exc})") from None
        wide = _load_part(Wide, meta, saved, wpath, "bad wide path")
        grams = _load_part(Grams, meta, saved, wpath, "bad grams part")
        try:
            model = cls(
                words=words,
                network=net,
                kind=kind,
                scaling=scaling,
                ham_factor=float(meta.get("ham_factor", DEFAULTS["ham_factor"])),
                spam_factor=float(meta.get("spam_factor", DEFAULTS["spam_factor"])),
                threshold=float(meta.get("threshold", DEFAULTS["threshold"])),
                max_part_bytes=int(meta.get("max_part_bytes", DEFAULTS["max_part_bytes"])),
                summary=meta.get("summary") or {},
                wordlist_counts=meta.get("wordlist_counts"),
                adaptive=adaptive,
                arch=arch,
                backend=str(meta.get("backend", "numpy")),
                ngram=int(meta.get("ngram", 1)),
                idf=idf,
                libraries=dict(meta.get("libraries") or {}),
                wide=wide,
                grams=grams,
            )
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{jpath}: bad value ({exc})") from None
        model._journal_file = base / journal_mod.FILE
        return model


_Part = TypeVar("_Part", Wide, Grams)


def _load_part(cls: type[_Part], meta: dict[str, Any], saved: dict[str, dict[str, np.ndarray]],
               wpath: Path, what: str) -> _Part | None:
    """The wide path or the grams part (``cls``) from its entry in model.json and its
    arrays read from weights.npz (``saved``, by :attr:`cls.PART`), or None where the
    model has none; ModelError naming ``wpath``, ``what`` is wrong, if they do not fit."""
    arrays = saved.get(cls.PART)
    if arrays is None:
        return None
    try:
        return cls.from_arrays(meta[cls.PART], arrays)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{wpath}: {what} ({exc})") from None
