"""The Twilio poller: list inbound SMS with the API and store the new ones.

For a number whose webhook cannot reach this host (no public URL), or to
catch up after downtime. Each poll streams ``client.messages.stream(to=...,
date_sent_after=cursor)`` page by page and stores (and files) every inbound
message whose ``MessageSid`` has not been stored yet, through the same
:class:`~nnspam.front.sms.store.SmsStore` as the webhook: a message both delivered
by the webhook and listed by the poller is stored once.

The cursor (a file holding one ISO 8601 date, written atomically) is the
newest ``date_sent`` of a poll that listed every page; a poll cut short by an
error does not move it, so the next poll lists the same window again and the
sid check skips what was already stored: nothing is lost, nothing doubled.

API errors (``TwilioRestException``: HTTP 429 rate limits, 5xx) and network
errors are logged on one line and retried after a backoff: the poll interval
doubled per consecutive failure, capped at ``max_backoff``.

twilio is imported only here (the ``sms`` extra).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nnspam.front.sms.message import Sms
from nnspam.mail.atomic import atomic_write_text

__all__ = ["Poller", "PollError", "make_client", "read_cursor", "write_cursor", "parse_since"]

log = logging.getLogger("nnspam.front.sms")


class PollError(Exception):
    """A poll that failed (API error, rate limit, network); retried later."""


def parse_since(text: str) -> datetime:
    """``--since``: an ISO 8601 date or date-time (UTC unless it says otherwise)."""
    try:
        d = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r}: not a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)") from None
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def read_cursor(path: str | os.PathLike) -> datetime | None:
    """The cursor file's date, or None when there is none yet."""
    try:
        text = Path(os.path.expanduser(str(path))).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return parse_since(text) if text else None


def write_cursor(path: str | os.PathLike, when: datetime) -> None:
    """Write the cursor atomically (tmp file, fsync, rename)."""
    p = Path(os.path.expanduser(str(path)))
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(p, when.astimezone(UTC).isoformat() + "\n")


def make_client(account_sid: str, auth_token: str, base_url: str | None = None) -> Any:
    """A twilio REST client; ``base_url`` points its API at another host
    (tests use a local fake on 127.0.0.1)."""
    from twilio.rest import Client

    client = Client(account_sid, auth_token)
    if base_url:
        client.api.base_url = base_url.rstrip("/")
    return client


def _error_line(exc: BaseException) -> str:
    status = getattr(exc, "status", None)  # TwilioRestException (first page, fetches)
    code, msg = getattr(exc, "code", None), getattr(exc, "msg", None)
    resp = exc.args[1] if len(exc.args) > 1 else None
    if status is None and resp is not None and hasattr(resp, "status_code"):
        # TwilioException("Unable to fetch page", response): a later page failed.
        status = resp.status_code
        try:
            import json

            body = json.loads(resp.text)
            code, msg = body.get("code"), body.get("message")
        except (ValueError, AttributeError):
            msg = str(getattr(resp, "text", ""))[:200]
    if status is not None:
        what = "rate limited" if status == 429 else "API error"
        return f"{what}: HTTP {status}, Twilio code {code}: {msg or exc}"
    return f"network error: {exc.__class__.__name__}: {exc}"


class Poller:
    """Polls one Twilio number's inbound SMS into an :class:`SmsStore`."""

    def __init__(self, store: Any, client: Any, to: str, cursor_path: str | os.PathLike, *,
                 since: datetime | None = None, interval: float = 60.0,
                 max_backoff: float = 3600.0, page_size: int = 50,
                 wait: Callable[[float], bool] | None = None) -> None:
        self.store = store
        self.client = client
        self.to = to
        self.cursor_path = cursor_path
        self.since = since
        self.interval = max(1.0, float(interval))
        self.max_backoff = max(self.interval, float(max_backoff))
        self.page_size = page_size
        self.failures = 0
        self.stop_event = threading.Event()
        # wait(seconds) -> True to stop; the default sleeps on the stop event.
        self.wait = wait or self.stop_event.wait

    def window_start(self) -> datetime:
        """Where the next poll starts: --since, else the cursor, else one day back."""
        if self.since is not None:
            return self.since
        return read_cursor(self.cursor_path) or datetime.now(UTC) - timedelta(days=1)

    def poll_once(self) -> int:
        """One complete listing. Returns how many new SMS were stored; raises
        PollError (after storing what it had listed) when the API fails."""
        from twilio.base.exceptions import TwilioException

        try:
            import requests

            net_errors: tuple[type[BaseException], ...] = (requests.RequestException, OSError)
        except ImportError:
            net_errors = (OSError,)
        start = self.window_start()
        newest: datetime | None = None
        stored = 0
        try:
            for m in self.client.messages.stream(to=self.to, date_sent_after=start,
                                                 page_size=self.page_size):
                if (m.direction or "inbound") != "inbound":
                    continue  # our own replies
                when = m.date_sent or m.date_created
                if when is not None and (newest is None or when > newest):
                    newest = when
                if self.store.seen(m.sid):
                    continue
                self.store.store(Sms(m.sid, m.from_ or "", m.to or "", m.body or "", when),
                                 source="poll")
                stored += 1
        except (TwilioException, *net_errors) as exc:
            raise PollError(f"{_error_line(exc)} (stored {stored} before it; cursor kept at "
                            f"{start.isoformat()})") from exc
        if newest is not None and newest > start:
            write_cursor(self.cursor_path, newest)
        self.since = None  # --since is the first poll's start; then the cursor
        log.info("poll: %d new SMS stored, cursor %s", stored,
                 (newest if newest is not None and newest > start else start).isoformat())
        return stored

    def next_delay(self) -> float:
        """Seconds until the next poll: the interval, doubled per failure in a row."""
        return min(self.max_backoff, self.interval * (2 ** self.failures))

    def run(self, once: bool = False) -> int:
        """Poll until stopped (or once). Returns 0, or 1 when ``once`` failed."""
        while True:
            try:
                self.poll_once()
                self.failures = 0
            except PollError as exc:
                self.failures += 1
                delay = self.next_delay()
                log.error("poll failed: %s; %s", exc,
                          "giving up (--once)" if once else f"retrying in {delay:.0f} s")
                if once:
                    return 1
            if once:
                return 0
            if self.wait(self.next_delay()):
                return 0

    def stop(self) -> None:
        """Make :meth:`run` return after the current poll."""
        self.stop_event.set()
