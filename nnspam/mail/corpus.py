"""Where messages come from: maildirs, message directories, mbox files, stdin,
the UCI SMS Spam Collection and the shared split files.

Every reader yields :class:`Sample` objects, so training, testing and
classification never care what kind of source a message came from. Email
payloads are the raw bytes of the message (never re-serialised); SMS payloads
are the text of the message.
"""

from __future__ import annotations

import mailbox
import os
import sys
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CorpusError",
    "Sample",
    "iter_messages",
    "read_sms",
    "read_split",
    "load_split_samples",
    "load_split_samples_rows",
    "iter_split_samples",
    "convert_mbox",
    "read_from_tar",
    "iter_tar",
    "strip_dots",
]

# Files that sit beside messages in published corpora and are not messages:
# the SpamAssassin public corpus ships a ``cmds`` file (the mv commands that
# renamed the messages) in every folder; maildirs may hold Dovecot index files.
_NOT_MESSAGES = {"cmds"}
_NOT_MESSAGE_PREFIXES = ("dovecot", ".", "maildirfolder", "subscriptions", "courier")


class CorpusError(Exception):
    """A source of messages that cannot be read (missing path, bad split file...)."""


@dataclass(frozen=True)
class Sample:
    """One message from a source.

    ``name`` identifies it in output (the path as given, ``path#N`` inside an
    mbox, the split file's path, or ``line:N`` for SMS); ``label`` is
    ``"spam"``, ``"ham"`` or ``None`` when unknown; ``payload`` is the raw
    message bytes (email) or the message text (SMS).
    """

    name: str
    payload: bytes | str
    label: str | None = None


def _is_message_file(name: str) -> bool:
    return name not in _NOT_MESSAGES and not name.startswith(_NOT_MESSAGE_PREFIXES)


def is_maildir(path: Path) -> bool:
    """A maildir has ``cur/`` and ``new/`` subdirectories (``tmp/`` is optional here)."""
    return (path / "cur").is_dir() and (path / "new").is_dir()


def looks_like_mbox(path: Path) -> bool:
    """An mbox file starts with a ``From `` envelope line.

    A single message saved with its envelope line (as most of the SpamAssassin
    corpus is) is therefore read as a one-message mbox, which gives the same
    message either way.
    """
    try:
        with open(path, "rb") as fh:
            return fh.read(5) == b"From "
    except OSError:
        return False


def _read_file(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _iter_mbox(path: Path, name: str) -> Iterator[Sample]:
    box = mailbox.mbox(str(path), create=False)
    try:
        keys = list(box.iterkeys())
        if len(keys) == 1:
            # One message: keep the raw file bytes, From line included, so the
            # pipe filter and classify see exactly the same bytes.
            yield Sample(name, _read_file(path))
            return
        for i, key in enumerate(keys):
            yield Sample(f"{name}#{i}", box.get_bytes(key))
    finally:
        box.close()


def iter_messages(paths: Iterable[str], label: str | None = None) -> Iterator[Sample]:
    """Yield every message found under each PATH.

    A PATH may be a maildir (``cur/`` and ``new/``), a directory of message
    files (searched recursively, in sorted order), one message file, an mbox
    file (detected by its leading ``From `` line), or ``-`` for one message on
    standard input. Missing paths raise :class:`CorpusError`.
    """
    for given in paths:
        if given == "-":
            data = sys.stdin.buffer.read()
            if not data.strip():  # nothing to score: an error, not a ham (issue 25)
                raise CorpusError("standard input is empty: no message to read")
            yield Sample("-", data, label)
            continue
        path = Path(given)
        if not path.exists():
            raise CorpusError(f"{given}: no such file or directory")
        if path.is_dir():
            yield from _iter_dir(path, given, label)
        elif looks_like_mbox(path):
            for s in _iter_mbox(path, given):
                yield Sample(s.name, s.payload, label)
        else:
            yield Sample(given, _read_file(path), label)


def _iter_dir(path: Path, given: str, label: str | None) -> Iterator[Sample]:
    if is_maildir(path):
        subdirs = [path / "new", path / "cur"]
    else:
        subdirs = [path]
    for sub in subdirs:
        for root, dirs, files in os.walk(sub):
            # Maildir++ subfolders (.Junk, .Sent...) belong to other folders.
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "tmp")
            for fname in sorted(files):
                if not _is_message_file(fname):
                    continue
                fpath = Path(root) / fname
                rel = os.path.join(given, os.path.relpath(fpath, path))
                try:
                    yield Sample(rel, _read_file(fpath), label)
                except OSError as exc:
                    print(f"nnspam: skipping {rel}: {exc.strerror}", file=sys.stderr)


def read_sms(sms_file: str) -> list[Sample]:
    """Read the UCI SMS Spam Collection as distributed: ``label<TAB>text`` lines.

    Samples are named ``line:N`` (0-based line number), the names the split
    files use.
    """
    try:
        data = Path(sms_file).read_bytes()
    except OSError as exc:
        raise CorpusError(f"{sms_file}: {exc.strerror}") from None
    samples = []
    for i, line in enumerate(data.decode("utf-8", errors="replace").splitlines()):
        if not line.strip():
            continue
        label, sep, text = line.partition("\t")
        label = label.strip().lower()
        if not sep or label not in ("ham", "spam"):
            raise CorpusError(f"{sms_file}:{i + 1}: expected 'ham|spam<TAB>text'")
        samples.append(Sample(f"line:{i}", text, label))
    return samples


def read_split(split_file: str, part: str | None = None) -> list[tuple[str, str, str]]:
    """Read a split file: ``path<TAB>label<TAB>split`` after a header line.

    Returns ``(path, label, split)`` triples, only those of ``part``
    (``"train"`` or ``"test"``) when given.
    """
    try:
        lines = Path(split_file).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CorpusError(f"{split_file}: {exc.strerror}") from None
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        fields = line.split("\t")
        if i == 0 and fields[:3] == ["path", "label", "split"]:
            continue
        if len(fields) != 3 or fields[1] not in ("ham", "spam") or fields[2] not in (
            "train",
            "test",
        ):
            raise CorpusError(f"{split_file}:{i + 1}: expected 'path<TAB>ham|spam<TAB>train|test'")
        if part is None or fields[2] == part:
            rows.append((fields[0], fields[1], fields[2]))
    return rows


def read_from_tar(tar_path: str | Path, wanted: Iterable[str]) -> dict[str, bytes]:
    """The files ``wanted`` (paths relative to the corpus folder) of a tar archive, read in
    one sequential pass: random access into an .xz stream would decompress from the start
    for every member. The archive may hold the folder itself (``spamassassin/easy_ham/1``)
    or its contents (``easy_ham/1``); a leading ``./`` is ignored. Files not found are
    simply absent from the result."""
    return dict(iter_tar(tar_path, wanted))


def iter_tar(tar_path: str | Path, wanted: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    """(path, bytes) of the files ``wanted`` of a tar archive, one at a time in the
    archive's order (see :func:`read_from_tar`), so that a caller need not hold them all."""
    want = {strip_dots(w) for w in wanted}
    with tarfile.open(tar_path, "r:*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            name = strip_dots(member.name)
            rel = name if name in want else name.split("/", 1)[-1]
            if rel in want:
                fh = tar.extractfile(member)
                if fh is not None:
                    yield rel, fh.read()


def strip_dots(p: str) -> str:
    """A path without its leading ``./`` parts."""
    while p.startswith("./"):
        p = p[2:]
    return p


def load_split_samples(
    split_file: str, corpus_root: str | None = None, part: str | None = None,
    sms_file: str | None = None,
) -> list[Sample]:
    """The labelled samples of one part of a split, in split-file order.

    ``corpus_root`` is the directory the split's paths are relative to, or a
    ``.tar``/``.tar.xz``/``.tar.gz`` holding it (the shared SpamAssassin
    tarball can be read without unpacking it). For the SMS collection pass
    ``sms_file`` instead: its paths are ``line:N``.
    """
    rows = read_split(split_file, part)
    if sms_file is not None:
        by_name = {s.name: s for s in read_sms(sms_file)}
        missing = [p for p, _, _ in rows if p not in by_name]
        if missing:
            raise CorpusError(f"{split_file}: {missing[0]} is not in {sms_file}")
        return [Sample(p, by_name[p].payload, label) for p, label, _ in rows]
    if corpus_root is None:
        raise CorpusError("a split file needs --corpus ROOT (or --sms FILE)")
    root = Path(corpus_root)
    if root.is_dir():
        return load_split_samples_rows(split_file, corpus_root, rows)
    if root.is_file() and tarfile.is_tarfile(root):
        return _load_from_tar(root, rows)
    raise CorpusError(f"{corpus_root}: not a directory or tar archive")


def iter_split_samples(split_file: str, corpus_root: str) -> Iterator[Sample]:
    """The train part of a split (``corpus_root`` a directory or a tar archive) one
    sample at a time, for a training that sends shards on as it reads them (``nnspam
    train --dask``) and never holds the whole archive: in the split's order from a
    directory, in the archive's order from a tar (one sequential pass). CorpusError,
    after the last one, when split paths were not found."""
    rows = read_split(split_file, "train")
    root = Path(corpus_root)
    if root.is_file() and tarfile.is_tarfile(root):
        labels = {p: label for p, label, _ in rows}
        seen: set[str] = set()
        for rel, data in iter_tar(root, labels):
            if rel not in seen:
                seen.add(rel)
                yield Sample(rel, data, labels[rel])
        missing = labels.keys() - seen
        if missing:
            raise CorpusError(f"{root}: {len(missing)} split paths missing, e.g. "
                              f"{min(missing)}")
        return
    for p, label, _ in rows:  # a directory: as load_split_samples reads it
        yield from load_split_samples_rows(split_file, corpus_root, [(p, label, "train")])


def load_split_samples_rows(split_file: str, corpus_root: str,
                            rows: list[tuple[str, str, str]]) -> list[Sample]:
    """:func:`load_split_samples` for the given rows of the split, from a directory."""
    root = Path(corpus_root)
    if not root.is_dir():
        raise CorpusError(f"{corpus_root}: not a directory or tar archive")
    # The shared corpus may be unpacked with its top directory: accept both.
    if rows and not (root / rows[0][0]).exists() and (root / "spamassassin").is_dir():
        root = root / "spamassassin"
    out = []
    for p, label, _ in rows:
        try:
            out.append(Sample(p, _read_file(root / p), label))
        except OSError as exc:
            raise CorpusError(f"{root / p}: {exc.strerror}") from None
    return out


def _load_from_tar(tar_path: Path, rows: list[tuple[str, str, str]]) -> list[Sample]:
    found = read_from_tar(tar_path, (p for p, _, _ in rows))
    missing = {p for p, _, _ in rows} - found.keys()
    if missing:
        raise CorpusError(f"{tar_path}: {len(missing)} split paths missing, e.g. {min(missing)}")
    return [Sample(p, found[p], label) for p, label, _ in rows]


def convert_mbox(mbox_path: str, maildir_path: str) -> int:
    """Copy every message of an mbox into a maildir (created if missing).

    The original NNSpam ``2md`` step. Messages go through ``tmp/`` and are
    renamed into ``new/`` by :mod:`mailbox`, so a reader never sees a partial
    message. Returns the number of messages written.
    """
    src = Path(mbox_path)
    if not src.is_file():
        raise CorpusError(f"{mbox_path}: no such file")
    box = mailbox.mbox(str(src), create=False)
    dest = mailbox.Maildir(maildir_path, factory=None, create=True)
    n = 0
    try:
        for key in box.iterkeys():
            raw = box.get_bytes(key)
            dest.add(raw)
            n += 1
    finally:
        box.close()
    return n
