"""What the dashboard's page modules share: the SMS pages
(:mod:`nnspam.front.dashboard.sms_pages`) and the email pages
(:mod:`nnspam.front.dashboard.email_pages`).

Each makes its blueprint behind the access checks (:func:`page_blueprint`), finds what
it shows in the app's config (:func:`served`, :func:`served_or_404`: the SMS store or
the email side, None when the app has none), lists it a page at a time
(:func:`one_page`) and checks a move's form the same way (:func:`check_move`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, abort, current_app

from nnspam.front.dashboard.moves import TARGETS
from nnspam.front.dashboard.web import protect

__all__ = ["page_blueprint", "served", "served_or_404", "one_page", "check_move"]


def page_blueprint(name: str, import_name: str, **options: Any) -> Blueprint:
    """A page blueprint with the access checks on (:func:`~nnspam.front.dashboard.web.
    protect`: password configured, live session, CSRF token on every POST)."""
    return protect(Blueprint(name, import_name, **options))


def served(key: str) -> Any:
    """What the app serves under ``key`` (``NNSPAM_SMS_STORE``: the
    :class:`~nnspam.front.sms.store.SmsStore`; ``NNSPAM_EMAIL``: the
    :class:`~nnspam.front.dashboard.email_side.EmailSide`), or None."""
    return current_app.config.get(key)


def served_or_404(key: str) -> Any:
    """:func:`served`, or 404 when the app has none."""
    side = served(key)
    if side is None:
        abort(404)
    return side


def one_page(listing: Callable[..., list[Any]], page: int, *args: Any
             ) -> tuple[list[Any], bool]:
    """Page ``page`` (from :func:`~nnspam.front.dashboard.web.page_number`) of
    ``listing(*args, limit=, offset=)`` at the dashboard's page size: its rows and
    whether more follow (one row more is asked for to tell)."""
    size = current_app.config["NNSPAM_DASHBOARD_PAGE_SIZE"]
    rows = listing(*args, limit=size + 1, offset=(page - 1) * size)
    return rows[:size], len(rows) > size


def check_move(to: str, name: str) -> None:
    """400 unless a move's form names a message (``name``) and where it goes (``to``:
    ``junk`` or ``inbox``)."""
    if to not in TARGETS or not name:
        abort(400)
