"""The dashboard as one Flask app: access control, the SMS pages, the email pages.

:func:`create_app` is the app of ``nnspam dashboard`` (email only, no Twilio) and the
base of ``nnspam sms serve``'s (:func:`nnspam.front.sms.webhook.create_app` adds the
webhook, ``POST /sms``, to it). Both are served by
:func:`nnspam.front.sms.webhook.serve`, which checks every setting and binds the
address before it opens anything.
"""

from __future__ import annotations

import logging
from typing import Any

from nnspam.front.dashboard import email_pages, sms_pages, web
from nnspam.front.dashboard.email_side import EmailSide, EmailUnavailable, open_email_side

__all__ = ["create_app", "NAME"]

log = logging.getLogger("nnspam.front.dashboard")

#: The Flask app's import name (templates and static files are the blueprints').
NAME = "nnspam.front.dashboard"


def create_app(config: dict[str, Any], sms_store: Any = None,
               email: EmailSide | EmailUnavailable | None = None, name: str = NAME) -> Any:
    """The dashboard app for a loaded config.

    ``sms_store`` (an :class:`~nnspam.front.sms.store.SmsStore`): the SMS pages list it;
    None: ``/`` goes to the email page. ``email``: the email side
    (:func:`~nnspam.front.dashboard.email_side.open_email_side`, opened from the
    config when None); an :class:`~nnspam.front.dashboard.email_side.EmailUnavailable`
    makes the email page say why there is nothing to show. Logged-in sessions are kept
    in the SMS state file, else in the daemon's, else in memory
    (:class:`~nnspam.front.dashboard.web.SessionTable`).
    """
    from flask import Flask

    if email is None:
        email = open_email_side(config)
    app = Flask(name)
    app.config["NNSPAM_SMS_STORE"] = sms_store
    if isinstance(email, EmailSide):
        app.config["NNSPAM_EMAIL"] = email
    else:
        app.config["NNSPAM_EMAIL"] = None
        app.config["NNSPAM_EMAIL_UNAVAILABLE"] = email.reason
    if sms_store is not None:
        sessions = web.SessionTable(sms_store.db, sms_store.lock)
    elif isinstance(email, EmailSide):
        sessions = web.SessionTable(email.db, email.lock)
    else:
        log.info("dashboard: no state file to keep sessions in: they end with the process")
        sessions = web.SessionTable()
    web.configure(app, config, sessions)
    app.register_blueprint(sms_pages.bp)
    app.register_blueprint(email_pages.bp)
    return app
