"""An SMS as an RFC 822 message, so it can live in a maildir and go through
the same parser, tokenizer and filing code as email.

Headers: ``From:`` the sender's phone number, ``To:`` the Twilio number,
``Date:``, ``X-Twilio-MessageSid:``, a ``Message-ID`` derived from the sid
(stable: the same SMS always gets the same Message-ID), ``MIME-Version`` and
``Content-Type: text/plain; charset=utf-8``. The body is UTF-8, 8bit when its
lines are short and quoted-printable otherwise (RFC 5322 caps lines at 998
bytes); :func:`nnspam.mail.tokens.sms_text_from_bytes` reads the text back exactly.
"""

from __future__ import annotations

import quopri
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

__all__ = ["Sms", "sms_to_bytes", "message_id_for"]

_SID = re.compile(r"^[A-Za-z0-9]{2,64}$")
# Header values are single lines of printable ASCII; a phone number or a
# short code never needs more, and anything else could inject headers.
_HEADER_SAFE = re.compile(r"[^\x20-\x7e]")


@dataclass
class Sms:
    """One text message as Twilio reports it."""

    sid: str  # Twilio MessageSid (SM... / MM...): the idempotency key
    from_: str  # sender, E.164 (+447700900123) or a short code / alphanumeric id
    to: str  # the Twilio number it was sent to
    body: str
    date: datetime | None = None  # date sent; None = now

    def __post_init__(self) -> None:
        if not _SID.match(self.sid or ""):
            raise ValueError(f"not a Twilio MessageSid: {self.sid!r}")


def message_id_for(sid: str) -> str:
    """The Message-ID of the SMS with this sid: ``<SID@sms.twilio.nnspam>``."""
    return f"<{sid}@sms.twilio.nnspam>"


def _header_value(value: str) -> str:
    return _HEADER_SAFE.sub("?", value or "").strip() or "unknown"


def sms_to_bytes(sms: Sms) -> bytes:
    """The SMS as message bytes (CRLF-free, LF line ends, as maildirs store them)."""
    date = sms.date or datetime.now(UTC)
    if date.tzinfo is None:
        date = date.replace(tzinfo=UTC)
    text = sms.body or ""
    raw = text.encode("utf-8")
    # 8bit keeps the body readable in a mail client; it is only safe when no
    # line is too long and there are no bare CRs (which a maildir reader
    # could turn into line ends).
    if b"\r" in raw or any(len(line) > 900 for line in raw.split(b"\n")):
        cte = "quoted-printable"
        body = quopri.encodestring(raw).replace(b"\r", b"=0D")
    else:
        cte = "8bit"
        body = raw
    head = (
        f"From: {_header_value(sms.from_)}\n"
        f"To: {_header_value(sms.to)}\n"
        f"Date: {format_datetime(date.astimezone(UTC))}\n"
        f"Subject: SMS from {_header_value(sms.from_)}\n"
        f"Message-ID: {message_id_for(sms.sid)}\n"
        f"X-Twilio-MessageSid: {sms.sid}\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\n"
        f"Content-Transfer-Encoding: {cte}\n"
        "\n"
    )
    return head.encode("ascii") + body
