"""The first day: a user's existing mailbox learned into a model of their own.

A user who installs nnspam on a mailbox that already holds years of sorted mail should
not start from the shipped model alone: trained on the SpamAssassin corpus's mailing lists,
it calls 15.7% of Enron user 1's hams spam before any correction (21.1% of user 4's). The
original NNSpam workflow started from the user's own folders; ``nnspam init MAILDIR -m DIR``
does so: the inbox and the other folders are the user's ham, the Junk folder their spam,
and the messages are learned in delivery order, as ``nnspam stream --untrained --feedback
all`` learns a stream (an untrained network that takes its input words from this mail, the
wide path and the grams part), into a new model directory.

Why untrained: measured on Enron user 1 with its first 10% as the existing mailbox and
corrections only afterwards, the shipped model taught that 10% in full lost 41 of the
remaining 3,310 hams and missed 187 of 1,345 spams; an untrained network learning the
same 10% lost 24 and missed 177 (two passes over it: 26 and 176). The rest of the first
weeks is the unsure band's: docs/guides/first-day.md "The first day".

Which folders: Maildir++ subfolders (``.Name``) besides the Junk folder are ham, except
those whose mail is not received mail or not sorted yet (:data:`SKIPPED`: Trash, Drafts,
Sent, Unsure, ...); a folder name given with ``--skip`` is left out as well.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from nnspam.mail import maildir as md

__all__ = ["SKIPPED", "FirstDayError", "mailbox_items", "delivered_at", "learn_mailbox"]

#: Folder names (without the Maildir++ dot, any case) whose mail is not learned as ham: not
#: mail the user received and kept (Drafts, Sent, Templates, Outbox), mail on its way out
#: (Trash: deleted spam as much as ham), or mail not sorted yet (Unsure).
SKIPPED = ("trash", "deleted messages", "deleted items", "bin", "drafts", "sent",
           "sent messages", "sent items", "sent mail", "templates", "outbox", "unsure")


class FirstDayError(Exception):
    """A mailbox that cannot be learned (no such maildir, no spam or no ham)."""


def delivered_at(path: Path) -> float:
    """When a maildir message was delivered: the seconds its unique name starts with
    (Maildir's ``time.M...`` names), else the file's modification time."""
    head = path.name.split(".", 1)[0]
    if head.isdigit():
        return float(head)
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def mailbox_items(maildir: str | os.PathLike, junk: str = ".Junk",
                  skip: Iterable[str] = ()) -> tuple[list[tuple[str, Path]], dict[str, int]]:
    """The messages of a Maildir++ mailbox to learn, as ``(label, path)`` in delivery order,
    and how many each folder gave: the inbox and its folders as ham, ``junk`` as spam,
    :data:`SKIPPED` and ``skip`` left out."""
    root = Path(os.path.expanduser(str(maildir)))
    if not (root / "cur").is_dir() and not (root / "new").is_dir():
        raise FirstDayError(f"{root}: not a maildir (no cur/ or new/)")
    junk_name = junk.lstrip(".").lower()
    left_out = {s.lstrip(".").lower() for s in (*SKIPPED, *skip)}
    folders: list[tuple[str, str, Path]] = [("INBOX", "ham", root)]
    for sub in sorted(root.iterdir()):
        if not sub.name.startswith(".") or not sub.is_dir() or sub.name in (".", ".."):
            continue
        if not (sub / "cur").is_dir() and not (sub / "new").is_dir():
            continue
        name = sub.name[1:]
        last = name.split(".")[-1].lower()  # Maildir++ nests folders as .Parent.Child
        if name.lower() == junk_name:
            folders.append((name, "spam", sub))
        elif last not in left_out and name.lower() not in left_out:
            folders.append((name, "ham", sub))
    items: list[tuple[float, str, str, Path]] = []
    counts: dict[str, int] = {}
    for name, label, folder in folders:
        found = md.list_messages(folder)
        counts[name] = len(found)
        items += [(delivered_at(p), str(p), label, p) for p in found]
    items.sort()
    out = [(label, p) for _, _, label, p in items]
    if not any(lab == "spam" for lab, _ in out):
        raise FirstDayError(f"{root}: no spam to learn from (the Junk folder {junk} is "
                            "empty or missing)")
    if not any(lab == "ham" for lab, _ in out):
        raise FirstDayError(f"{root}: no ham to learn from")
    return out, counts


def learn_mailbox(items: Sequence[tuple[str, Path]], cfg: dict[str, Any],
                  tokenizers: int = 0,
                  progress: Callable[[int, int, float], None] | None = None) -> Any:
    """A new model that learned ``items`` (``(label, path)``, in order) the way
    ``nnspam stream --untrained --feedback all`` learns a stream: an untrained email network
    taking its input words from them, the wide path and the grams part, by the config's
    ``online:``/``learn:`` rules. ``progress(done, total, messages_per_second)`` every 500."""
    import time

    from nnspam.model.correct import rule_from_config
    from nnspam.services.runs.stream import replay, start_model

    model = start_model(None, cfg, "email")
    rule = rule_from_config(cfg, untrained=True)
    keyed = [(label, str(p)) for label, p in items]

    def read(path: str) -> bytes:
        return Path(path).read_bytes()

    t0 = time.perf_counter()
    for i, _ in enumerate(replay(model, keyed, read, "all", rule, tokenizers=tokenizers), 1):
        if progress is not None and (i % 500 == 0 or i == len(keyed)):
            progress(i, len(keyed), i / max(time.perf_counter() - t0, 1e-9))
    return model
