"""The dashboard's email pages: the maildir daemon's decisions, one message and why,
and the user's "Spam", "Not spam" and "Forget".

``GET /email``
    the daemon's recent decisions, newest first and paged (``?page=``, clamped as the
    SMS pages are): time, From, Subject, spamicity, verdict, where the message is now
    (inbox, Junk, the unsure folder, or gone); above them a plot of the last days'
    verdicts and corrections (:mod:`nnspam.front.dashboard.plot`, inline SVG).
``GET /email/message?box=N&uniq=NAME``
    one message: its headers and text (escaped, HTML parts as their text) and the words
    that moved its spamicity most, with their signed contributions
    (:func:`nnspam.model.explain.explain`).
``POST /email/move`` (``to=junk`` or ``to=inbox``) and ``POST /email/forget``
    the buttons, with the session's CSRF token like every POST
    (:mod:`nnspam.front.dashboard.web`). A move is made as a user makes it in a mail
    client and learned by the one correction routine
    (:meth:`nnspam.front.dashboard.email_side.EmailSide.move`); Forget undoes the
    message's last lesson and saves the model. With a read-only model (the shipped
    ``default``) the move is made and recorded, the page says it was not learned and
    why, and Forget says there is nothing it could undo.

Without the daemon's maildirs or state (:class:`~nnspam.front.dashboard.email_side.
EmailUnavailable`) the email page says what is missing, and the other email URLs are 404.
"""

from __future__ import annotations

import re
from typing import Any

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from markupsafe import Markup

from nnspam.front.dashboard.pages import check_move, one_page, page_blueprint, served, served_or_404
from nnspam.front.dashboard.plot import COLOURS, daily_svg
from nnspam.front.dashboard.web import page_number

__all__ = ["bp", "PLOT_DAYS", "folder_label", "signed"]

#: Days shown in the plot (today and the days before it, UTC).
PLOT_DAYS = 14

bp = page_blueprint("email", __name__, url_prefix="/email")


def _side() -> Any:
    """The :class:`~nnspam.front.dashboard.email_side.EmailSide`, or None (and the
    reason is in ``NNSPAM_EMAIL_UNAVAILABLE``)."""
    return served("NNSPAM_EMAIL")


def _side_or_404() -> Any:
    return served_or_404("NNSPAM_EMAIL")


def _box(value: str | None) -> int:
    """The maildir number of a request (``box``): a small whole number, else 404."""
    if value is None or not re.fullmatch(r"[0-9]{1,3}", value):
        abort(404)
    return int(value)


def folder_label(side: Any, where: str) -> str:
    """How the pages name where a message is."""
    if where == "junk":
        return side.sorter.settings.junk.lstrip(".") or "Junk"
    if where == "unsure":
        return (side.sorter.settings.unsure_folder or "Unsure").lstrip(".")
    return {"inbox": "Inbox", "gone": "gone"}.get(where, where)


def signed(x: float) -> str:
    """A word's change of the spamicity as the message view shows it: four decimals, or
    two significant digits when that would read +0.0000 (most mail scores so near 0 or
    1 that no one word moves it by 0.00005; the log-odds column says how much it moves)."""
    return f"{x:+.4f}" if x == 0 or abs(x) >= 0.00005 else f"{x:+.1e}"


def _not_learned_why(side: Any) -> str:
    if side.readonly:
        return (f"not learned: the model {side.model_name} is the shipped, read-only model. "
                "To learn from corrections, train a model directory of your own "
                "(nnspam train ... -m DIR) and set model: DIR in the config")
    return "not learned: learning from corrections is off (daemon.learn_from_corrections)"


@bp.get("/")
def index() -> Any:
    """The decisions, newest first, and the plot."""
    side = _side()
    if side is None:
        return render_template("dashboard/email.html", side=None,
                               reason=current_app.config.get("NNSPAM_EMAIL_UNAVAILABLE"))
    page = page_number(request.args.get("page"))
    rows, more = one_page(side.listing, page)
    days = side.days(PLOT_DAYS)
    return render_template("dashboard/email.html", side=side, rows=rows,
                           more=more, page=page, days=days, total=side.count(),
                           plot=Markup(daily_svg(days)), colours=COLOURS,
                           folder_label=folder_label, not_learned=_not_learned_why(side))


@bp.get("/message")
def message() -> Any:
    """One message, its text and the words behind its spamicity."""
    side = _side_or_404()
    view = side.view(_box(request.args.get("box")), request.args.get("uniq", ""))
    if view is None:
        abort(404)
    return render_template("dashboard/email_message.html", side=side, view=view,
                           row=view.row, page=page_number(request.args.get("page")),
                           folder_label=folder_label, not_learned=_not_learned_why(side),
                           signed=signed)


def _back(box: int, uniq: str) -> Any:
    page = page_number(request.form.get("page"))
    if request.form.get("back") == "message":
        return redirect(url_for("email.message", box=box, uniq=uniq, page=page))
    return redirect(url_for("email.index", page=page))


@bp.post("/move")
def move() -> Any:
    """"Spam" (``to=junk``) or "Not spam" (``to=inbox``) for one message."""
    side = _side_or_404()
    box, uniq, to = _box(request.form.get("box")), request.form.get("uniq", ""), \
        request.form.get("to", "")
    check_move(to, uniq)
    moved = side.move(box, uniq, to)
    where = folder_label(side, to)
    if moved.action == "missing":
        if side.find(box, uniq) is None:
            abort(404)
        flash("The message is gone (deleted, or moved out of the inbox and Junk): "
              "nothing was moved.", "error")
    elif moved.action == "already":
        flash(f"The message is already in {where}.")
    elif moved.action == "conflict":
        flash(f"Not moved: another message of that name is already in {where}.", "error")
    elif moved.learned:
        flash(f"Moved to {where}; the model learned it as {'spam' if to == 'junk' else 'ham'} "
              "and was saved.")
    elif moved.action == "corrected":
        flash(f"Moved to {where} and recorded as a correction, but {_not_learned_why(side)}.",
              "error")
    else:
        flash(f"Moved to {where}; the daemon had recorded it there already "
              "(nothing to learn).")
    return _back(box, uniq)


@bp.post("/forget")
def forget() -> Any:
    """"Forget": undo the model's last lesson of one message."""
    side = _side_or_404()
    box, uniq = _box(request.form.get("box")), request.form.get("uniq", "")
    if not uniq:
        abort(400)
    if side.find(box, uniq) is None:
        abort(404)
    what, _ = side.forget(box, uniq)
    if what == "forgotten":
        flash("The model forgot its last lesson of this message and was saved.")
    elif what == "read-only":
        flash(f"Nothing forgotten: the model {side.model_name} is the shipped, read-only "
              "model, which never learns a correction, so it has none to undo.", "error")
    elif what == "not-in-journal":
        flash("Nothing to forget: the model's correction journal holds no lesson of this "
              "message (never learned, or learned before the journal's last learn.journal "
              "corrections).", "error")
    elif what == "too-big":
        flash("Nothing to forget: the message is over daemon.max_message_bytes, so it is "
              "never learned.", "error")
    else:
        flash("The message is gone (deleted, or moved out of the inbox and Junk): nothing "
              "to forget.", "error")
    return _back(box, uniq)
