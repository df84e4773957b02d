"""The dashboard's SMS pages: ``GET /`` lists Inbox and Spam, a button moves a message.

Moving an SMS is what a user's move is for email, and is made by the same code
(:func:`nnspam.front.dashboard.moves.move_message`): the file is moved into (or out of)
the Junk folder, then the Sorter's correction routine records it and learns it as spam
or ham, when the model can be written (not the shipped ``default-sms``).

Without an SMS store (``nnspam dashboard``: email only) ``GET /`` goes to the email
page and ``POST /move`` is 404.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for

from nnspam.front.dashboard.moves import move_message as move_file
from nnspam.front.dashboard.pages import check_move, one_page, page_blueprint, served, served_or_404
from nnspam.front.dashboard.web import page_number

__all__ = ["bp", "move_message"]

log = logging.getLogger("nnspam.front.dashboard")

bp = page_blueprint("sms", __name__)


def _store() -> Any:
    return served("NNSPAM_SMS_STORE")


def _folder(store: Any, place: str, page: int) -> dict[str, Any]:
    rows, more = one_page(store.listing, page, place)
    return {"rows": rows, "page": page, "more": more}


@bp.get("/")
def index() -> Any:
    """Inbox and Spam, newest first, each paged by ``inbox``/``spam``."""
    store = _store()
    if store is None:
        return redirect(url_for("email.index"))
    pages = {"inbox": page_number(request.args.get("inbox")),
             "spam": page_number(request.args.get("spam"))}
    with store.lock:
        inbox = _folder(store, "inbox", pages["inbox"])
        spam = _folder(store, "junk", pages["spam"])
    return render_template("dashboard/index.html", inbox=inbox, spam=spam, pages=pages)


def move_message(store: Any, sid: str, to: str) -> tuple[str, bool]:
    """Move the SMS ``sid`` into ``to`` (``junk`` or ``inbox``) and let the
    Sorter learn the correction, as when a user moves an email.

    Returns (what happened, whether the model learned it). What happened is
    ``corrected``, ``already`` (it is in that folder), or ``missing`` (no such
    SMS, or its file is gone). The model is saved at once when it learned.
    """
    if to not in ("junk", "inbox"):
        raise ValueError(f"unknown folder {to!r}")
    with store.lock:
        row = store.db.execute("SELECT uniq FROM sms WHERE sid=? AND maildir=?",
                               (sid, store.key)).fetchone()
        if row is None:
            return "missing", False
        moved = move_file(store.sorter, store.maildir, row[0], to)
    log.info("dashboard: sms sid=%s to %s: %s", sid, to, moved.action)
    return moved.action, moved.learned


@bp.post("/move")
def move() -> Any:
    """Move one SMS to the other folder (form fields sid, to)."""
    store = served_or_404("NNSPAM_SMS_STORE")
    sid = request.form.get("sid", "")
    to = request.form.get("to", "")
    check_move(to, sid)
    action, learned = move_message(store, sid, to)
    if action in ("missing", "conflict"):
        abort(404 if action == "missing" else 409)
    where = "Spam" if to == "junk" else "Inbox"
    if action == "already":
        flash(f"The message is already in {where}.")
    elif learned:
        flash(f"Moved to {where}; the model learned it as {'spam' if to == 'junk' else 'ham'}.")
    else:
        flash(f"Moved to {where}; recorded, but not learned (the model is read-only or "
              "learning from corrections is off).")
    return redirect(url_for("sms.index", inbox=page_number(request.form.get("inbox")),
                            spam=page_number(request.form.get("spam"))))
