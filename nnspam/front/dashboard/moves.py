"""A user's move, made by the dashboard: a message into Junk, or out of it.

Email and SMS alike: the message file is moved the way a mail client moves it
(:func:`nnspam.mail.maildir.move`, one ``rename``), then the Sorter is told what a
user did, through the routine the daemon runs when it sees that move
(:meth:`~nnspam.services.delivery.sorter.Sorter.handle_junk` for a message put into Junk,
:meth:`~nnspam.services.delivery.sorter.Sorter.handle_inbox_cur` for one moved back into the
inbox's ``cur/``). So the correction is recorded in the state and learned by the one
correction routine exactly as a move in a mail client would be, and the model is saved
at once (through the one model writer, :mod:`nnspam.model.writer`).

Flask-free. The caller holds the thread lock that serialises its Sorter (the SMS
store's, the email side's); the state file's lock below is the one between processes.

A daemon watching the same maildir sees the rename too, and runs the same handler for
it. The move is made under the state file's lock
(:meth:`nnspam.services.delivery.state.State.locked`), held from before the rename until
the handler has recorded it; the Sorter's handlers take that lock too, so the daemon's
handler waits and then finds the move recorded (``known``): one move is one correction,
learned once. (Without the lock both read the record before either wrote it, and both
learned the move.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnspam.mail import maildir as md

__all__ = ["Moved", "TARGETS", "locate", "move_message"]

log = logging.getLogger("nnspam.front.dashboard")

#: Where a move can go: ``junk`` (the user's "Spam") or ``inbox`` ("Not spam").
TARGETS = ("junk", "inbox")


@dataclass(frozen=True)
class Moved:
    """What :func:`move_message` did.

    ``action`` is ``missing`` (no such file in the inbox, Junk or the unsure folder),
    ``already`` (it is where it was to go; nothing done), ``conflict`` (a file of that
    name is in the way there; nothing done) or the Sorter's answer (``corrected``: the
    correction was recorded; ``known``: it already was). ``learned``: the model learned
    it (and was saved); false for a read-only model or with learning from corrections
    off. ``path``: where the file is now (None when missing)."""

    action: str
    learned: bool
    path: Path | None


def locate(sorter: Any, maildir: Path, uniq: str) -> tuple[str, Path] | None:
    """Where the message ``uniq`` of ``maildir`` is now: (``inbox``, ``junk`` or
    ``unsure``, its path), or None when it is in none of them (deleted, moved
    elsewhere). The unsure folder (``daemon.unsure_folder``) only when the Sorter
    files into one."""
    folders = [("inbox", Path(maildir)), ("junk", sorter.junk_dir(maildir))]
    if getattr(sorter, "unsure_folder", None):
        folders.append(("unsure", md.folder_path(maildir, sorter.settings.unsure_folder)))
    for name, folder in folders:
        path = md.find_message(folder, uniq)
        if path is not None:
            return name, path
    return None


def move_message(sorter: Any, maildir: Path, uniq: str, to: str) -> Moved:
    """Move the message ``uniq`` of the inbox ``maildir`` into Junk (``to="junk"``:
    from the inbox or the unsure folder) or into the inbox's ``cur/`` (``"inbox"``:
    from Junk or the unsure folder), and let ``sorter`` record and learn the move as
    the daemon does a user's (module docstring). Returns :class:`Moved`.

    Into the inbox the file goes to ``cur/`` (read mail, where a client puts a message
    it moves) with an info suffix (``:2,``) when it had none; its flags are kept.
    """
    if to not in TARGETS:
        raise ValueError(f"unknown folder {to!r}")
    with sorter.state.locked():  # see the module docstring
        return _move(sorter, Path(maildir), uniq, to)


def _move(sorter: Any, maildir: Path, uniq: str, to: str) -> Moved:
    junk = md.ensure_folder(maildir, sorter.settings.junk)
    found = locate(sorter, maildir, uniq)
    if found is None:
        return Moved("missing", False, None)
    where, src = found
    if where == to:
        return Moved("already", False, src)
    learned_before = sorter.stats["learned"]
    try:
        if to == "junk":
            sub = src.parent.name if src.parent.name in ("new", "cur") else "cur"
            dest = md.move(src, junk / sub)
            action = sorter.handle_junk(maildir, dest)
        else:
            name = src.name if ":" in src.name else src.name + ":2,"
            dest = md.move(src, maildir / "cur", name=name)
            action = sorter.handle_inbox_cur(maildir, dest)
    except FileNotFoundError:  # gone between the look and the rename
        return Moved("missing", False, None)
    except md.MaildirError as exc:  # a file of that name is there already
        log.warning("dashboard: not moved: %s", exc)
        return Moved("conflict", False, src)
    learned = sorter.stats["learned"] > learned_before
    if learned:
        sorter.checkpoint()
    log.info("dashboard: moved %s from %s to %s: %s, %s", uniq, where, to, action,
             "learned" if learned else "not learned")
    return Moved(action, learned, dest)
