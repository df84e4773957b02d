"""The dashboard's access control: password, server-side sessions, CSRF, headers.

The dashboard shows private messages, so it is closed unless configured:

* Without ``sms.dashboard.password_hash`` (the dashboard's settings, email and SMS
  alike) every dashboard page answers 403 with an explanation (never open by
  default). Make a hash with ``nnspam sms hash-password`` (werkzeug's salted scrypt
  hash).
* ``/login`` checks the password with :func:`werkzeug.security.check_password_hash`;
  the session cookie (HttpOnly, SameSite=Strict) is signed with ``NNSPAM_SECRET_KEY``
  from the environment or ``sms.env_file``, else with a random key made per process
  (sessions then end when the server restarts).
* Wrong passwords are rate-limited per client address (:class:`LoginThrottle`): after
  :data:`LOGIN_FREE` (5) failures, each further attempt from that address is answered
  429 with ``Retry-After``, without the password being checked, for
  :data:`LOGIN_DELAY` seconds (30), doubled by every failure after (up to
  :data:`LOGIN_MAX_DELAY`, an hour); a right password clears the address's count, and
  failures are forgotten :data:`LOGIN_WINDOW` seconds (an hour) after the last one.
  IPv6 clients count by their /64 network (one host holds a whole /64). The counts are
  in memory, per process, for at most :data:`LOGIN_ADDRESSES` addresses (the ones
  whose last failure is oldest are dropped first): an attacker cycling addresses cannot
  grow it. Behind a reverse proxy every client has the proxy's address, so a guesser
  delays the real user's login too: rate-limit at the proxy there.
* A login starts a server-side session (:func:`start_session`): logging out ends it,
  and a copy of the cookie saved before is refused from then on.
* Every POST (login, logout, the buttons) carries the session's random CSRF token,
  compared with :func:`hmac.compare_digest`; a POST without it or with a wrong one is
  answered 403 and changes nothing.
* Pages are Jinja templates with autoescaping: a message's text is always shown as
  text. A Content-Security-Policy without scripts backs that up. The one stylesheet is
  served from the package: no CDN, works offline.

This module is the ``dashboard`` blueprint (login, logout, the stylesheet) and the
checks every page blueprint runs (:func:`protect`): the SMS pages
(:mod:`nnspam.front.dashboard.sms_pages`) and the email pages
(:mod:`nnspam.front.dashboard.email_pages`); :mod:`nnspam.front.dashboard.app` puts
them together into one app. ``POST /sms`` (the Twilio webhook,
:mod:`nnspam.front.sms.webhook`) is none of them: it has its own signature check and
needs neither login nor CSRF token.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import re
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.security import check_password_hash

from nnspam.front.sms.env import twilio_secret

__all__ = ["bp", "PAGE_SIZE", "MAX_PAGE", "MAX_PAGE_SIZE", "SessionTable", "LoginThrottle",
           "secret_key", "configure", "protect", "page_number", "page_size", "fmt_date",
           "start_session", "session_live", "end_session", "csrf_token"]

log = logging.getLogger("nnspam.front.dashboard")

PAGE_SIZE = 25
MAX_PAGE_SIZE = 1000
MAX_PAGE = 1_000_000

LOGIN_FREE = 5  # wrong passwords from one address before it must wait
LOGIN_DELAY = 30.0  # seconds of the first wait; doubled by each failure after it
LOGIN_MAX_DELAY = 3600.0  # the longest wait
LOGIN_WINDOW = 3600.0  # seconds after an address's last failure that its count is forgotten
LOGIN_ADDRESSES = 10_000  # addresses whose failures are remembered at most (~2 MB)

bp = Blueprint("dashboard", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/dashboard")

CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")

NO_PASSWORD = (
    "The dashboard is disabled: no password is configured.\n\n"
    "It shows private messages, so it never serves without one. Make a password hash with\n"
    "    nnspam sms hash-password\n"
    "and put it in the config file as\n"
    "    sms:\n"
    "      dashboard:\n"
    "        password_hash: \"scrypt:...\"\n"
    "then restart nnspam sms serve (or nnspam dashboard).\n")


def secret_key(env_file: str | None) -> tuple[bytes, bool]:
    """The session signing key: ``NNSPAM_SECRET_KEY`` from the environment or
    the ``.env`` file, else a random one for this process. Returns the key
    and whether it came from the environment/file."""
    key = twilio_secret("NNSPAM_SECRET_KEY", env_file)
    if key:
        return key.encode("utf-8"), True
    return secrets.token_bytes(32), False


# -- sessions --------------------------------------------------------------------

_SESSIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS dashboard_sessions (
    id      TEXT PRIMARY KEY,
    created REAL NOT NULL
);
"""


class SessionTable:
    """The ``dashboard_sessions`` table of logged-in sessions, in an SQLite file.

    Why server-side: a signed cookie cannot be taken back. Clearing it at logout only
    empties the browser's copy; a copy saved before (another tab, a stolen cookie, a
    proxy log) would stay good until the signing key changes. So a session is only as
    good as its row (:func:`session_live`), and logging out deletes the row
    (:func:`end_session`). The rows live in a file, not in memory, so every process of
    a WSGI server sees a logout, and a session outlives a restart exactly when the
    signing key does (``NNSPAM_SECRET_KEY``).

    The file is the one the served side already keeps: the SMS state (``sms.state``)
    under ``nnspam sms serve``, the daemon's state (``daemon.state``) under ``nnspam
    dashboard``; ``db`` and ``lock`` are that side's connection and its lock. With
    neither (``db=None``) the table is in memory: sessions end with the process.
    """

    def __init__(self, db: sqlite3.Connection | None = None,
                 lock: Any = None) -> None:
        if db is None:
            db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self.db = db
        self.lock = lock if lock is not None else threading.Lock()
        with self.lock:
            self.db.executescript(_SESSIONS_SCHEMA)

    def start(self, lifetime: float) -> str:
        """A new session id, stored; rows older than ``lifetime`` seconds are deleted."""
        sid = secrets.token_urlsafe(32)
        now = time.time()
        with self.lock:
            self.db.execute("DELETE FROM dashboard_sessions WHERE created < ?",
                            (now - lifetime,))
            self.db.execute("INSERT INTO dashboard_sessions (id, created) VALUES (?, ?)",
                            (sid, now))
        return sid

    def live(self, sid: str, lifetime: float) -> bool:
        """Whether the session ``sid`` exists and is younger than ``lifetime``."""
        with self.lock:
            row = self.db.execute("SELECT created FROM dashboard_sessions WHERE id=?",
                                  (sid,)).fetchone()
        return row is not None and time.time() - row[0] < lifetime

    def end(self, sid: str) -> None:
        """Delete the session ``sid``."""
        with self.lock:
            self.db.execute("DELETE FROM dashboard_sessions WHERE id=?", (sid,))


# -- failed logins -------------------------------------------------------------------

class LoginThrottle:
    """Wrong passwords counted per client address, and the wait they impose.

    Why: the password is the dashboard's only lock, and without a limit a script tried
    8 passwords a second (each costing a scrypt hash of server CPU). After ``free``
    failures from an address it must wait ``delay`` seconds, then twice as long after
    each further failure, up to ``max_delay``; :meth:`wait` says how long is left and the
    login view answers 429 until then without checking the password. A success clears
    the address (:meth:`succeeded`); an address without a failure for ``window`` seconds
    is forgotten.

    In memory, thread-safe (one lock), and bounded: at most ``size`` addresses, kept in
    the order of their last failure, so the stale ones are dropped from the front and,
    when the table is full, the one whose last failure is oldest makes room. Counts are
    per process (a restart forgets them); ``clock`` is for tests."""

    def __init__(self, free: int = LOGIN_FREE, delay: float = LOGIN_DELAY,
                 max_delay: float = LOGIN_MAX_DELAY, window: float = LOGIN_WINDOW,
                 size: int = LOGIN_ADDRESSES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free, self.delay, self.max_delay = free, delay, max_delay
        self.window = max(window, max_delay)  # a wait ends before its address is forgotten
        self.size = size
        self.clock = clock
        self._lock = threading.Lock()
        # key -> [failures, time of the last, end of the wait], oldest last failure first
        self._table: OrderedDict[str, list[float]] = OrderedDict()

    @staticmethod
    def key(addr: str | None) -> str:
        """Whom a request's address stands for: an IPv4 address, or an IPv6 /64."""
        try:
            ip = ipaddress.ip_address(addr or "")
        except ValueError:
            return addr or "?"
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:  # ::ffff:192.0.2.1 is 192.0.2.1
                return str(ip.ipv4_mapped)
            return str(ipaddress.IPv6Network((ip, 64), strict=False))
        return str(ip)

    def _expire(self, now: float) -> None:
        while self._table:
            first = next(iter(self._table.values()))
            if now - first[1] <= self.window:
                break
            self._table.popitem(last=False)

    def wait(self, addr: str | None) -> float:
        """Seconds ``addr`` must still wait before its next try (0: it may try now)."""
        now = self.clock()
        with self._lock:
            self._expire(now)
            rec = self._table.get(self.key(addr))
            return max(rec[2] - now, 0.0) if rec else 0.0

    def failed(self, addr: str | None) -> float:
        """Count a wrong password from ``addr``; returns the wait it now has (0: none)."""
        now = self.clock()
        k = self.key(addr)
        with self._lock:
            self._expire(now)
            rec = self._table.pop(k, None) or [0, now, now]
            rec[0] += 1
            rec[1] = now
            if rec[0] >= self.free:
                rec[2] = now + min(self.delay * 2 ** min(rec[0] - self.free, 32),
                                   self.max_delay)
            self._table[k] = rec  # to the end: the newest failure
            while len(self._table) > self.size:
                self._table.popitem(last=False)
            return max(rec[2] - now, 0.0)

    def succeeded(self, addr: str | None) -> None:
        """A right password from ``addr``: its count starts again."""
        with self._lock:
            self._table.pop(self.key(addr), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._table)


def configure(app: Any, config: dict[str, Any], sessions: SessionTable) -> None:
    """Set up access control on a Flask app built from a loaded config and register
    the ``dashboard`` blueprint (login, logout, stylesheet); the page blueprints are
    registered by :func:`nnspam.front.dashboard.app.create_app`."""
    from nnspam.config import dashboard_settings

    s = config["sms"]
    dash = dashboard_settings(config)
    key, from_env = secret_key(s.get("env_file"))
    if not from_env:
        log.info("dashboard: NNSPAM_SECRET_KEY not set: sessions are signed with a key made "
                 "for this process")
    app.secret_key = key
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
                      SESSION_COOKIE_NAME="nnspam_session")
    app.config["NNSPAM_DASHBOARD_PASSWORD_HASH"] = dash.get("password_hash") or None
    app.config["NNSPAM_DASHBOARD_PAGE_SIZE"] = page_size(dash.get("page_size"))
    app.config["NNSPAM_DASHBOARD_SESSIONS"] = sessions
    app.config["NNSPAM_DASHBOARD_LOGIN_THROTTLE"] = LoginThrottle()
    app.register_blueprint(bp)


def _lifetime() -> float:
    return current_app.permanent_session_lifetime.total_seconds()


def start_session() -> None:
    """Start a logged-in session: a new random session id, in the (signed) cookie and
    as a row of the :class:`SessionTable`. Rows older than the session lifetime
    (Flask's ``PERMANENT_SESSION_LIFETIME``, which the cookie's signature check
    enforces too) are dead and deleted here."""
    end_session()  # the session this browser had before, if any
    sid = current_app.config["NNSPAM_DASHBOARD_SESSIONS"].start(_lifetime())
    session["user"] = True
    session["sid"] = sid


def session_live() -> bool:
    """Whether the request's session is logged in and not ended (see
    :class:`SessionTable`)."""
    sid = session.get("sid")
    if not session.get("user") or not isinstance(sid, str):
        return False
    return bool(current_app.config["NNSPAM_DASHBOARD_SESSIONS"].live(sid, _lifetime()))


def end_session() -> None:
    """End the request's session server-side (its cookie is refused from
    now on) and clear the cookie."""
    sid = session.get("sid")
    if isinstance(sid, str):
        current_app.config["NNSPAM_DASHBOARD_SESSIONS"].end(sid)
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


def _headers(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    if request.endpoint != "dashboard.static":
        resp.headers["Cache-Control"] = "no-store"
    return resp


def protect(blueprint: Blueprint) -> Blueprint:
    """Run the access checks (password configured, live session, CSRF token on every
    POST) before every request of ``blueprint``, and add the security headers to its
    answers. Every dashboard blueprint calls this where it is made."""
    blueprint.before_request(_guard)
    blueprint.after_request(_headers)
    return blueprint


protect(bp)


@bp.app_context_processor
def _template_globals() -> dict[str, Any]:
    return {"csrf_token": csrf_token, "fmt_date": fmt_date,
            "has_sms": current_app.config.get("NNSPAM_SMS_STORE") is not None}


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """The login form; a right password starts a new session. An address with too many
    wrong passwords gets 429 and ``Retry-After`` (:class:`LoginThrottle`) and its
    password is not checked."""
    error = None
    status = 200
    if request.method == "POST":
        throttle: LoginThrottle = current_app.config["NNSPAM_DASHBOARD_LOGIN_THROTTLE"]
        who = request.remote_addr
        wait = throttle.wait(who)
        if wait > 0:
            seconds = math.ceil(wait)
            page = render_template("dashboard/login.html",
                                   error=f"Too many wrong passwords: try again in {seconds} s.")
            return page, 429, {"Retry-After": str(seconds)}
        pw = request.form.get("password", "")
        if check_password_hash(current_app.config["NNSPAM_DASHBOARD_PASSWORD_HASH"], pw):
            throttle.succeeded(who)
            start_session()
            csrf_token()  # a fresh token for the logged-in session
            log.info("dashboard: login from %s", who)
            return redirect(url_for("sms.index"))
        wait = throttle.failed(who)
        error = "Wrong password."
        status = 401
        if wait > 0:  # one line per wait imposed, not per refused try
            log.warning("dashboard: wrong password from %s: its logins refused for %d s",
                        who, math.ceil(wait))
            return (render_template("dashboard/login.html", error=error), status,
                    {"Retry-After": str(math.ceil(wait))})
        log.warning("dashboard: wrong password from %s", who)
    return render_template("dashboard/login.html", error=error), status


@bp.post("/logout")
def logout() -> Any:
    """End the session, server-side too: a saved copy of the cookie is refused."""
    end_session()
    log.info("dashboard: logout from %s", request.remote_addr)
    return redirect(url_for("dashboard.login"))


# -- paging ------------------------------------------------------------------------

# Paging comes from the URL (and page_size from the config), so any value can
# arrive; both are clamped, in these two functions only.

def page_number(value: str | None) -> int:
    """The page number a ``?inbox=``/``?spam=``/``?page=`` value asks for, clamped to
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


def fmt_date(ts: float | None) -> str:
    """A time as the pages show it: ``2026-11-20 09:00 UTC`` ("-" for none)."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
