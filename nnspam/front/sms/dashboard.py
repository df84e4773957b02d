"""The SMS dashboard: ``GET /`` lists Inbox and Spam, a button moves a message.

The dashboard shows private messages, so it is closed unless configured:

* Without ``sms.dashboard.password_hash`` every dashboard page answers 403
  with an explanation (never open by default). Make a hash with
  ``nnspam sms hash-password`` (werkzeug's salted scrypt hash).
* ``/login`` checks the password with :func:`werkzeug.security.check_password_hash`;
  the session cookie (HttpOnly, SameSite=Strict) is signed with
  ``NNSPAM_SECRET_KEY`` from the environment or ``sms.env_file``, else with a
  random key made per process (sessions then end when the server restarts).
* A login starts a server-side session (:func:`start_session`): logging out
  ends it, and a copy of the cookie saved before is refused from then on.
* Every POST (login, logout, move) carries the session's random CSRF token,
  compared with :func:`hmac.compare_digest`; a POST without it or with a
  wrong one is answered 403 and changes nothing.
* Pages are Jinja templates with autoescaping: an SMS body is always shown as
  text. A Content-Security-Policy without scripts backs that up. The one
  stylesheet is served from the package: no CDN, works offline.

Moving a message is what a user's move is for email: the file is moved with
:func:`nnspam.mail.maildir.move` into (or out of) the Junk folder, then the
Sorter's correction routine (:meth:`~nnspam.services.sorter.Sorter.handle_junk` or
:meth:`~nnspam.services.sorter.Sorter.handle_inbox_cur`) records it and learns it as
spam or ham, when the model can be written (not the shipped ``default-sms``).

``POST /sms`` (the Twilio webhook, :mod:`nnspam.front.sms.webhook`) is not part of
this blueprint: it has its own signature check and needs neither login nor
CSRF token.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.security import check_password_hash

from nnspam.front.sms.env import twilio_secret
from nnspam.mail import maildir as md

__all__ = ["bp", "PAGE_SIZE", "MAX_PAGE", "MAX_PAGE_SIZE", "move_message", "secret_key",
           "configure", "page_number", "page_size", "start_session", "session_live",
           "end_session"]

log = logging.getLogger("nnspam.front.sms")

PAGE_SIZE = 25
MAX_PAGE_SIZE = 1000
MAX_PAGE = 1_000_000

bp = Blueprint("dashboard", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/dashboard")

CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")

NO_PASSWORD = (
    "The SMS dashboard is disabled: no password is configured.\n\n"
    "It shows private messages, so it never serves without one. Make a password hash with\n"
    "    nnspam sms hash-password\n"
    "and put it in the config file as\n"
    "    sms:\n"
    "      dashboard:\n"
    "        password_hash: \"scrypt:...\"\n"
    "then restart nnspam sms serve.\n")


def secret_key(env_file: str | None) -> tuple[bytes, bool]:
    """The session signing key: ``NNSPAM_SECRET_KEY`` from the environment or
    the ``.env`` file, else a random one for this process. Returns the key
    and whether it came from the environment/file."""
    key = twilio_secret("NNSPAM_SECRET_KEY", env_file)
    if key:
        return key.encode("utf-8"), True
    return secrets.token_bytes(32), False


def configure(app: Any, config: dict[str, Any]) -> None:
    """Register the dashboard on a Flask app built from a loaded config."""
    s = config["sms"]
    dash = s.get("dashboard") or {}
    key, from_env = secret_key(s.get("env_file"))
    if not from_env:
        log.info("dashboard: NNSPAM_SECRET_KEY not set: sessions are signed with a key made "
                 "for this process")
    app.secret_key = key
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
                      SESSION_COOKIE_NAME="nnspam_session")
    app.config["NNSPAM_DASHBOARD_PASSWORD_HASH"] = dash.get("password_hash") or None
    app.config["NNSPAM_DASHBOARD_PAGE_SIZE"] = page_size(dash.get("page_size"))
    store = app.config.get("NNSPAM_SMS_STORE")
    if store is not None:
        with store.lock:
            store.db.executescript(_SESSIONS_SCHEMA)
    app.register_blueprint(bp)


# -- sessions --------------------------------------------------------------------

_SESSIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS dashboard_sessions (
    id      TEXT PRIMARY KEY,
    created REAL NOT NULL
);
"""


def start_session() -> None:
    """Start a logged-in session: a new random session id, in the (signed)
    cookie and as a row of ``dashboard_sessions`` in the SMS state file.

    Why server-side: a signed cookie cannot be taken back. Clearing it at
    logout only empties the browser's copy; a copy saved before (another
    tab, a stolen cookie, a proxy log) would stay good until the signing key
    changes. So a session is only as good as its row (:func:`session_live`),
    and logging out deletes the row (:func:`end_session`). The rows live in
    the state file, not in memory, so every process of a WSGI server sees a
    logout, and a session outlives a restart exactly when the signing key
    does (``NNSPAM_SECRET_KEY``). Rows older than the session lifetime
    (Flask's ``PERMANENT_SESSION_LIFETIME``, which the cookie's signature
    check enforces too) are dead and deleted here.
    """
    end_session()  # the session this browser had before, if any
    sid = secrets.token_urlsafe(32)
    now = time.time()
    lifetime = current_app.permanent_session_lifetime.total_seconds()
    store = current_app.config["NNSPAM_SMS_STORE"]
    with store.lock:
        store.db.execute("DELETE FROM dashboard_sessions WHERE created < ?", (now - lifetime,))
        store.db.execute("INSERT INTO dashboard_sessions (id, created) VALUES (?, ?)",
                         (sid, now))
    session["user"] = True
    session["sid"] = sid


def session_live() -> bool:
    """Whether the request's session is logged in and not ended (see
    :func:`start_session`)."""
    sid = session.get("sid")
    if not session.get("user") or not isinstance(sid, str):
        return False
    lifetime = current_app.permanent_session_lifetime.total_seconds()
    store = current_app.config["NNSPAM_SMS_STORE"]
    with store.lock:
        row = store.db.execute("SELECT created FROM dashboard_sessions WHERE id=?",
                               (sid,)).fetchone()
    return row is not None and time.time() - row[0] < lifetime


def end_session() -> None:
    """End the request's session server-side (its cookie is refused from
    now on) and clear the cookie."""
    sid = session.get("sid")
    if isinstance(sid, str):
        store = current_app.config["NNSPAM_SMS_STORE"]
        with store.lock:
            store.db.execute("DELETE FROM dashboard_sessions WHERE id=?", (sid,))
    session.clear()


# -- access control ------------------------------------------------------------

def csrf_token() -> str:
    """The session's CSRF token (made on first use)."""
    tok = session.get("csrf")
    if not tok:
        tok = session["csrf"] = secrets.token_urlsafe(32)
    return str(tok)


def _csrf_ok() -> bool:
    sent = request.form.get("csrf_token", "")
    have = session.get("csrf", "")
    return bool(sent) and bool(have) and hmac.compare_digest(str(sent).encode("utf-8"),
                                                             str(have).encode("utf-8"))


@bp.before_request
def _guard() -> Any:
    """403 without a configured password; a live session (:func:`session_live`)
    required; CSRF on every POST."""
    if request.endpoint == "dashboard.static":
        return None
    if not current_app.config.get("NNSPAM_DASHBOARD_PASSWORD_HASH"):
        return Response(NO_PASSWORD, status=403, mimetype="text/plain")
    if request.method == "POST" and not _csrf_ok():
        log.warning("dashboard: refused a POST to %s without a valid CSRF token from %s",
                    request.path, request.remote_addr)
        return Response("forbidden: missing or wrong CSRF token (reload the page)\n",
                        status=403, mimetype="text/plain")
    if request.endpoint != "dashboard.login" and not session_live():
        if session.get("user"):
            log.warning("dashboard: refused an ended or expired session from %s",
                        request.remote_addr)
            session.clear()
        return redirect(url_for("dashboard.login"))
    return None


@bp.after_request
def _headers(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    if request.endpoint != "dashboard.static":
        resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.app_context_processor
def _template_globals() -> dict[str, Any]:
    return {"csrf_token": csrf_token}


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """The login form; a right password starts a new session."""
    error = None
    status = 200
    if request.method == "POST":
        pw = request.form.get("password", "")
        if check_password_hash(current_app.config["NNSPAM_DASHBOARD_PASSWORD_HASH"], pw):
            start_session()
            csrf_token()  # a fresh token for the logged-in session
            log.info("dashboard: login from %s", request.remote_addr)
            return redirect(url_for("dashboard.index"))
        log.warning("dashboard: wrong password from %s", request.remote_addr)
        error = "Wrong password."
        status = 401
    return render_template("dashboard/login.html", error=error), status


@bp.post("/logout")
def logout() -> Any:
    """End the session, server-side too: a saved copy of the cookie is refused."""
    end_session()
    log.info("dashboard: logout from %s", request.remote_addr)
    return redirect(url_for("dashboard.login"))


# -- the lists -------------------------------------------------------------------

# Paging comes from the URL (and page_size from the config), so any value can
# arrive; both are clamped, in these two functions only.

def page_number(value: str | None) -> int:
    """The page number a ``?inbox=``/``?spam=`` value asks for, clamped to
    1..MAX_PAGE: never an error, never a 500.

    A whole number (ASCII digits, optional sign and blanks) is clamped into
    range; anything else (``abc``, ``1.5``, empty) is page 1, as before.
    Clamping rather than answering 400 keeps old links working; a page past
    the last message shows "No messages." with a link back. The bound keeps
    the list's SQL offset, (page - 1) * page size, far inside SQLite's
    64-bit integers: an unbounded page number overflowed there
    (``OverflowError`` in :meth:`~nnspam.front.sms.store.SmsStore.listing`, a 500).
    Digits are counted before ``int()`` is called, so even a number too long
    for ``int()`` is simply "too large".
    """
    m = re.fullmatch(r"\s*([+-]?)([0-9]+)\s*", value or "")
    if m is None or m.group(1) == "-":
        return 1
    digits = m.group(2).lstrip("0")
    if len(digits) > len(str(MAX_PAGE)):
        return MAX_PAGE
    return min(max(int(digits or "0"), 1), MAX_PAGE)


def page_size(value: Any) -> int:
    """``sms.dashboard.page_size`` clamped to 1..MAX_PAGE_SIZE (unset, 0 or
    not a number: PAGE_SIZE), so that with :func:`page_number`'s bound no
    offset can overflow and no page is unbounded."""
    try:
        n = int(value or PAGE_SIZE)
    except (TypeError, ValueError):
        log.warning("dashboard: sms.dashboard.page_size %r is not a number: using %d",
                    value, PAGE_SIZE)
        return PAGE_SIZE
    return min(max(n, 1), MAX_PAGE_SIZE)


def _page(name: str) -> int:
    return page_number(request.args.get(name))


def _fmt_date(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _folder(store: Any, place: str, page: int, size: int) -> dict[str, Any]:
    rows = store.listing(place, limit=size + 1, offset=(page - 1) * size)
    return {"rows": rows[:size], "page": page, "more": len(rows) > size}


@bp.get("/")
def index() -> Any:
    """Inbox and Spam, newest first, each paged by ``inbox``/``spam``."""
    store = current_app.config["NNSPAM_SMS_STORE"]
    size = current_app.config["NNSPAM_DASHBOARD_PAGE_SIZE"]
    pages = {"inbox": _page("inbox"), "spam": _page("spam")}
    with store.lock:
        inbox = _folder(store, "inbox", pages["inbox"], size)
        spam = _folder(store, "junk", pages["spam"], size)
    return render_template("dashboard/index.html", inbox=inbox, spam=spam, pages=pages,
                           fmt_date=_fmt_date)


# -- moving a message ------------------------------------------------------------

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
        uniq = row[0]
        sorter = store.sorter
        maildir: Path = store.maildir
        junk = md.ensure_folder(maildir, sorter.junk)
        in_inbox = md.find_message(maildir, uniq)
        in_junk = md.find_message(junk, uniq)
        learned_before = sorter.stats["learned"]
        if to == "junk":
            if in_inbox is None:
                return ("already" if in_junk is not None else "missing"), False
            dest = md.move(in_inbox, junk / in_inbox.parent.name)
            action = sorter.handle_junk(maildir, dest)
        else:
            if in_junk is None:
                return ("already" if in_inbox is not None else "missing"), False
            # Read mail lives in cur/ with an info suffix; handle_inbox_cur
            # is the routine that sees a message moved back there.
            name = in_junk.name if ":" in in_junk.name else in_junk.name + ":2,"
            dest = md.move(in_junk, maildir / "cur", name=name)
            action = sorter.handle_inbox_cur(maildir, dest)
        learned = sorter.stats["learned"] > learned_before
        if learned:
            sorter.checkpoint()
    log.info("dashboard: moved sms sid=%s to %s: %s, %s", sid, to, action,
             "learned" if learned else "not learned")
    return action, learned


@bp.post("/move")
def move() -> Any:
    """Move one SMS to the other folder (form fields sid, to)."""
    sid = request.form.get("sid", "")
    to = request.form.get("to", "")
    if to not in ("junk", "inbox") or not sid:
        abort(400)
    store = current_app.config["NNSPAM_SMS_STORE"]
    action, learned = move_message(store, sid, to)
    if action == "missing":
        abort(404)
    where = "Spam" if to == "junk" else "Inbox"
    if action == "already":
        flash(f"The message is already in {where}.")
    elif learned:
        flash(f"Moved to {where}; the model learned it as {'spam' if to == 'junk' else 'ham'}.")
    else:
        flash(f"Moved to {where}; recorded, but not learned (the model is read-only or "
              "learning from corrections is off).")
    return redirect(url_for("dashboard.index", inbox=request.form.get("inbox", "1"),
                            spam=request.form.get("spam", "1")))
