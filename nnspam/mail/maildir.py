"""Maildir and Maildir++ helpers: delivery, folders, moves that never lose mail.

The conventions (``../shared/DESIGN.md``) that mail programs rely on:

* a message is written to ``tmp/``, fsynced, then renamed (Dovecot, mblaze) or
  linked (procmail, maildrop) into ``new/``; once there it is never modified;
* a Maildir++ folder is a subdirectory ``.Name/`` of the inbox with its own
  ``tmp/ new/ cur/`` and an empty ``maildirfolder`` file;
* a message is moved between folders with ``rename(2)``, which is atomic on
  one filesystem; across filesystems it is copied, fsynced, linked into place
  (``link`` refuses to overwrite) and only then unlinked from the source, so a
  crash at any point leaves the message in at least one place, never in none;
* the file name's *unique* part (before ``:2,flags``) identifies the message;
  a move keeps the whole name.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import time
from pathlib import Path

from nnspam.mail.atomic import fsync_dir, removed_on_error

__all__ = [
    "MaildirError",
    "unique_name",
    "base_name",
    "is_message_name",
    "ensure_maildir",
    "ensure_folder",
    "folder_path",
    "deliver",
    "move",
    "list_messages",
    "find_message",
]

SUBDIRS = ("tmp", "new", "cur")
_counter = itertools.count()


class MaildirError(Exception):
    """A maildir operation that could not be done; the message names the path."""


def unique_name() -> str:
    """A new unique file name in the usual ``time.MusecPpidQn.host`` form."""
    now = time.time()
    sec, usec = int(now), int((now % 1) * 1_000_000)
    host = socket.gethostname().replace("/", r"\057").replace(":", r"\072") or "localhost"
    return f"{sec}.M{usec}P{os.getpid()}Q{next(_counter)}.{host}"


def base_name(filename: str) -> str:
    """The unique part of a maildir file name: everything before ``:2,`` flags.

    Moves between ``new/`` and ``cur/`` and flag changes only change the part
    after the colon, so this is what identifies one message over its life.
    """
    return filename.split(":", 1)[0]


def is_message_name(filename: str) -> bool:
    """Maildir message files never start with a dot (editors, Dovecot's
    ``dovecot-uidlist`` and temporary files are not messages)."""
    return bool(filename) and not filename.startswith(".")


def ensure_maildir(path: str | os.PathLike) -> Path:
    """Create ``tmp/ new/ cur/`` under ``path`` if missing (mode 0700)."""
    p = Path(path)
    for sub in SUBDIRS:
        (p / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    return p


def folder_path(maildir: str | os.PathLike, name: str) -> Path:
    """The Maildir++ folder ``name`` (``.Junk``) of an inbox maildir."""
    if not name.startswith("."):
        name = "." + name
    if "/" in name or name in (".", ".."):
        raise MaildirError(f"{name!r}: not a Maildir++ folder name")
    return Path(maildir) / name


def ensure_folder(maildir: str | os.PathLike, name: str = ".Junk") -> Path:
    """Create the Maildir++ folder with its ``maildirfolder`` marker if missing."""
    folder = folder_path(maildir, name)
    ensure_maildir(folder)
    marker = folder / "maildirfolder"
    if not marker.exists():
        with open(marker, "ab"):
            pass
        fsync_dir(folder)
        fsync_dir(Path(maildir))
    return folder


def deliver(maildir: str | os.PathLike, data: bytes, how: str = "rename",
            name: str | None = None, fsync: bool = True) -> Path:
    """Deliver ``data`` into ``maildir/new`` the way MDAs do and return the path.

    ``how="rename"`` is Dovecot's and mblaze's way (inotify IN_MOVED_TO in
    ``new/``), ``how="link"`` procmail's and maildrop's (IN_CREATE).
    ``fsync=False`` skips the file's fsync (tests and benchmarks only).
    """
    if how not in ("rename", "link"):
        raise ValueError(f"how must be 'rename' or 'link', not {how!r}")
    md = Path(maildir)
    name = name or unique_name()
    tmp = md / "tmp" / name
    dest = md / "new" / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with removed_on_error(tmp):
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        if how == "rename":
            if dest.exists():
                raise MaildirError(f"{dest}: exists")
            os.rename(tmp, dest)
        else:
            os.link(tmp, dest)
            os.unlink(tmp)
    return dest


def _copy_fsync(src: Path, dst: Path) -> None:
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        while True:
            chunk = fin.read(1 << 20)
            if not chunk:
                break
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    st = os.stat(src)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(dst, st.st_mode & 0o7777)


def move(src: str | os.PathLike, dest_dir: str | os.PathLike, name: str | None = None) -> Path:
    """Move the message ``src`` into the directory ``dest_dir``, keeping its name.

    Same filesystem: one ``rename(2)`` (atomic; an existing file of the same
    name is never overwritten). Across filesystems (``EXDEV``): copy into the
    destination folder's ``tmp/``, fsync, ``link`` into place, fsync the
    directory, and only then unlink the source. A crash before the unlink
    leaves the message in both places, never in neither.
    """
    src = Path(src)
    ddir = Path(dest_dir)
    dest = ddir / (name or src.name)
    if dest.exists():
        raise MaildirError(f"{dest}: a message of that name is already there")
    try:
        os.rename(src, dest)
        return dest
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    tmpdir = ddir.parent / "tmp"
    if not tmpdir.is_dir():
        tmpdir = ddir
    tmp = tmpdir / f".nnspam-move.{unique_name()}"
    try:
        _copy_fsync(src, tmp)
        os.link(tmp, dest)
        fsync_dir(ddir)
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    os.unlink(src)
    fsync_dir(src.parent)
    return dest


def list_messages(maildir: str | os.PathLike, subdirs: tuple[str, ...] = ("new", "cur")
                  ) -> list[Path]:
    """Message files in ``new/`` and ``cur/`` (sorted by name: delivery order)."""
    out: list[Path] = []
    for sub in subdirs:
        d = Path(maildir) / sub
        try:
            with os.scandir(d) as it:
                out.extend(Path(e.path) for e in it
                           if is_message_name(e.name) and e.is_file(follow_symlinks=False))
        except FileNotFoundError:
            continue
    out.sort(key=lambda p: p.name)
    return out


def find_message(folder: str | os.PathLike, uniq: str) -> Path | None:
    """Where the message with unique name ``uniq`` is now in ``folder``
    (``new/uniq`` or ``cur/uniq:2,flags``), or None."""
    f = Path(folder)
    p = f / "new" / uniq
    if p.exists():
        return p
    for sub in ("cur", "new"):
        try:
            with os.scandir(f / sub) as it:
                for e in it:
                    if base_name(e.name) == uniq:
                        return Path(e.path)
        except FileNotFoundError:
            continue
    return None
