"""The Twilio webhook: ``POST /sms`` stores and files an inbound SMS.

Every request must carry a valid ``X-Twilio-Signature``: twilio's
``RequestValidator`` (HMAC-SHA1 of the URL and the sorted POST parameters
with the account's auth token) over the public URL Twilio called
(``sms.public_url`` when a TLS proxy forwards to us, else the request's own
URL). A missing or wrong signature, or a body changed after signing, is
answered 403 and nothing is stored. A valid request is stored and filed
(:class:`nnspam.front.sms.store.SmsStore`) and answered at once with an empty TwiML
``<Response/>``, so Twilio sends no reply. ``MessageSid`` is the
idempotency key: Twilio's retries never store a second copy.

The auth token comes from ``TWILIO_AUTH_TOKEN`` in the environment or the
``.env`` file named by ``sms.env_file`` (:mod:`nnspam.front.sms.env`), never from the
config file.

Flask and twilio are imported only here and in the dashboard
(:mod:`nnspam.front.dashboard`; the ``sms`` extra), never on the filter or daemon
path. Run with ``nnspam sms serve`` (waitress) or any WSGI server: ``gunicorn
'nnspam.front.sms.webhook:app_from_environment()'``. :func:`serve` is ``nnspam sms
serve``, and without the webhook ``nnspam dashboard``: it checks every setting and
binds the address before it creates anything (:class:`StartupError` otherwise).
"""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime
from typing import Any

from nnspam.front.sms.env import twilio_secret
from nnspam.front.sms.message import Sms

__all__ = ["create_app", "TWIML_EMPTY", "app_from_environment", "StartupError",
           "required_auth_token", "listen_sockets", "serve"]

log = logging.getLogger("nnspam.front.sms")

TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


class StartupError(RuntimeError):
    """Why the SMS server cannot start; ``nnspam sms serve`` prints it in one
    line and exits 2."""


def required_auth_token(config: dict[str, Any]) -> str:
    """``TWILIO_AUTH_TOKEN`` (environment, else ``sms.env_file``), or
    :class:`StartupError`: a webhook that cannot check signatures would
    accept anyone's messages, so there is no server without it."""
    env_file = config["sms"].get("env_file")
    token = twilio_secret("TWILIO_AUTH_TOKEN", env_file)
    if not token:
        raise StartupError("no Twilio auth token: set TWILIO_AUTH_TOKEN in the environment "
                           f"or in {env_file}")
    return token


def create_app(config: dict[str, Any], store: Any = None, auth_token: str | None = None,
               email: Any = None):
    """The Flask app for a loaded nnspam config: the dashboard
    (:func:`nnspam.front.dashboard.app.create_app`: SMS and email pages) and ``POST /sms``.

    ``store`` (an :class:`~nnspam.front.sms.store.SmsStore`), ``auth_token`` and
    ``email`` (the dashboard's email side) are normally built from the config and
    environment; tests may pass them. Raises :class:`StartupError` (a RuntimeError)
    when there is no auth token (:func:`required_auth_token`), before the store is
    opened.
    """
    from flask import Response, request
    from twilio.request_validator import RequestValidator

    from nnspam.front.dashboard.app import create_app as dashboard_app

    s = config["sms"]
    token = auth_token or required_auth_token(config)
    if store is None:
        from nnspam.front.sms.store import open_store

        store = open_store(config)
    validator = RequestValidator(token)
    public_url = s.get("public_url") or None

    # The dashboard (GET /, login, moves, the email pages): its own login and CSRF
    # checks, which POST /sms below does not go through (it has the signature check).
    app = dashboard_app(config, sms_store=store, email=email, name="nnspam.front.sms")

    @app.post("/sms")
    def sms_webhook() -> Any:
        url = public_url or request.url
        signature = request.headers.get("X-Twilio-Signature", "")
        # request.form is a MultiDict: the validator reads repeated keys with getlist.
        if not signature or not validator.validate(url, request.form, signature):
            log.warning("webhook: rejected a request with %s signature from %s for %s",
                        "a wrong" if signature else "no", request.remote_addr, url)
            return Response("forbidden: bad or missing X-Twilio-Signature\n", status=403,
                            mimetype="text/plain")
        sid = request.form.get("MessageSid") or request.form.get("SmsSid") or ""
        try:
            sms = Sms(sid, request.form.get("From", ""), request.form.get("To", ""),
                      request.form.get("Body", ""), datetime.now(UTC))
        except ValueError as exc:
            log.warning("webhook: signed request without a valid MessageSid: %s", exc)
            return Response("bad request: no MessageSid\n", status=400, mimetype="text/plain")
        result = store.store(sms, source="webhook")
        log.info("webhook: sid=%s action=%s spamicity=%s", sid, result.action,
                 "-" if result.spamicity is None else f"{result.spamicity:.6f}")
        return Response(TWIML_EMPTY, status=200, mimetype="text/xml")

    return app


def app_from_environment():
    """The app for the config found as ``nnspam`` finds it (``$NNSPAM_CONFIG``
    or ``~/.config/nnspam/config.yaml``): for gunicorn and other WSGI servers."""
    from nnspam.config import load_config

    return create_app(load_config(None))


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_sockets(host: str, port: int, backlog: int = 1024) -> list[socket.socket]:
    """Listening TCP sockets on every address ``host`` resolves to, or
    :class:`StartupError` naming the address (``cannot listen on
    127.0.0.1:4000: Address already in use``).

    The server binds here, before the store is opened, instead of leaving it
    to waitress: a taken or forbidden port is then a one-line error and
    nothing has been created. ``*`` or an empty host is every address.
    """
    where = _where(host, port)
    if not 0 <= port <= 65535:
        raise StartupError(f"cannot listen on {where}: the port must be 0-65535")
    socks: list[socket.socket] = []
    try:
        seen = set()
        for family, kind, proto, _, addr in socket.getaddrinfo(
                None if host in ("", "*") else host, port, socket.AF_UNSPEC,
                socket.SOCK_STREAM, socket.IPPROTO_TCP, socket.AI_PASSIVE):
            if (family, addr[:2]) in seen:
                continue
            seen.add((family, addr[:2]))
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(backlog)
    except OSError as exc:  # socket.gaierror too
        for sock in socks:
            sock.close()
        raise StartupError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    return socks


def serve(config: dict[str, Any], host: str, port: int, threads: int = 4,
          model: str | None = None, *, sms: bool = True, email_model: str | None = None) -> int:
    """``nnspam sms serve``: serve the webhook and the dashboard until stopped; with
    ``sms=False`` ``nnspam dashboard``: the dashboard alone, without Twilio.

    The order is the point: refuse first, then create. Every setting the
    server needs is checked before anything exists on disk: the auth token
    (:func:`required_auth_token`; without ``sms``: the dashboard's password hash,
    since a dashboard without one only answers 403), the address, bound now
    (:func:`listen_sockets`), the email side (the daemon's maildirs and state, and
    the email model ``email_model`` or ``model:``, loaded:
    :func:`~nnspam.front.dashboard.email_side.open_email_side`, which creates nothing),
    the SMS model and the other store settings (:func:`~nnspam.front.sms.store.open_store`
    checks them before it creates ``sms.state`` and ``sms.maildir``). A server that
    cannot start raises :class:`StartupError` (or the model's or config's own error) and
    leaves nothing behind. Without the daemon's maildirs or state it serves, and the
    email page says what is missing. Serves with waitress, else Flask's development
    server.
    """
    from nnspam.model.correct import CorrectionError

    try:
        import flask  # noqa: F401
        if sms:
            import twilio  # noqa: F401
    except ImportError as exc:
        raise StartupError(f"the sms extra is not installed ({exc.name}): "
                           "pip install 'nnspam[sms]'") from None
    token = required_auth_token(config) if sms else None
    from nnspam.config import dashboard_settings

    if not sms and not dashboard_settings(config).get("password_hash"):
        raise StartupError("the dashboard has no password: make a hash with nnspam "
                           "hash-password and set dashboard.password_hash in the config")
    try:
        from waitress import serve as waitress_serve
    except ImportError:
        waitress_serve = None
    socks = listen_sockets(host, port)
    store = email = None
    try:
        from nnspam.front.dashboard.app import create_app as dashboard_app
        from nnspam.front.dashboard.email_side import EmailSide, open_email_side

        try:
            email = open_email_side(config, email_model)
            if not isinstance(email, EmailSide):
                log.warning("dashboard: no email pages: %s", email.reason)
            if sms:
                from nnspam.front.sms.store import open_store

                store = open_store(config, model=model)
        except CorrectionError as exc:
            raise StartupError(str(exc)) from None
        if sms:
            app = create_app(config, store=store, auth_token=token, email=email)
        else:
            app = dashboard_app(config, email=email)
        if waitress_serve is not None:
            waitress_serve(app, sockets=socks, threads=threads)
        else:
            from werkzeug.serving import make_server

            log.warning("waitress is not installed: using Flask's development server on %s",
                        _where(host, port))
            make_server(host, port, app, threaded=True, fd=socks[0].fileno()).serve_forever()
    finally:
        for sock in socks:
            sock.close()
        if store is not None:
            store.close()
        if isinstance(email, EmailSide):
            email.close()
    return 0
