"""Tokens: what the network can see of a message.

Email tokens come from a :class:`nnspam.mail.message.ParsedMessage`: plain words
of the decoded body and subject, plus prefixed tokens for the header fields
and structure that carry evidence (``subject:``, ``from:``, ``url:``,
``attach:``...). SMS tokens come from the text alone and keep what matters in
short messages: numbers by shape, currency, URLs, shouting.

Choices and the measurements behind them are recorded next to the code that
makes them (SpamBayes' tokenizer.py is the model). Measurements are on the
SpamAssassin split (train part for training, test part for testing) unless
stated; see docs/lab/measurements.md "Measurements".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.utils import getaddresses, parseaddr

from nnspam.config import DEFAULTS
from nnspam.mail.message import ParsedMessage, parse_message

__all__ = ["text_only_copy", "tokenize_email", "tokenize_parsed",
           "tokenize_sms", "sms_text_from_bytes", "WORD_RE", "HEAD_MARK", "head_token"]

# A word: letters/digits with inner apostrophes, dots and dashes ("don't",
# "e-mail", "v1.2"), or a currency amount ("$100", "£5"). Lowercased first.
WORD_RE = re.compile(r"[$€£]?\d[\d,.]*\d|[$€£]\d|[^\W_](?:[\w'’.\-]*[^\W_])?")

# Words shorter than 3 characters are mostly noise; words longer than 20 are
# almost always base64 residue, hashes or glued-together URLs. SpamBayes keeps
# 3..12 and summarises the rest; we keep to 20 because German compounds and
# product names live in 13..20, and summarise longer ones as "skip:<first
# letter> <length//10*10>" (SpamBayes' trick: the count of long junk words is
# itself evidence).
MIN_WORD, MAX_WORD = 3, 20

# Headers whose presence or value reflects how a message was collected (the
# recipient's MTA, mail client or earlier filter), not what the sender sent.
# Learning them would learn the corpus, not spam: in the SpamAssassin corpus
# "Delivery-Date" is on 28% of spam and 4% of ham, "X-Keywords" on 31% and 1%
# purely because the spam and ham were collected through different clients.
# Received/Date are left out for the same reason: the spam_2 folder was
# collected two years after the ham, so relay names and years give it away.
ARTIFACT_HEADERS = frozenset(
    {
        "received", "date", "delivery-date", "delivered-to", "x-keywords", "x-status", "status",
        "x-uid", "lines", "content-length", "x-mozilla-status", "x-mozilla-status2",
        "x-evolution", "x-original-date", "x-spam-status", "x-spam-level", "x-spam-flag",
        "x-spam-checker-version", "x-spam-report", "x-spam-score", "x-virus-scanned",
        "x-nnspam-status", "x-nnspam-flag", "x-nnspam-words", "return-path", "x-original-to",
        "envelope-to", "x-envelope-from", "x-envelope-to", "x-real-to", "x-filter", "x-scanned-by",
    }
)

#: The mark of the head token a model's tokenizer appends to a message's tokens
#: (:meth:`nnspam.model.core.Model.tokens`): the message's first bytes, headers included,
#: for the model's grams part (:mod:`nnspam.model.grams`), which learns from the delivery
#: headers this tokenizer leaves out. The tokenizers never emit a NUL, so no word is
#: ever taken for it; every consumer of words skips tokens that start with one.
HEAD_MARK = "\x00head:"

# Our own verdict headers, taken out of the head before the grams part sees it: a message
# that passed the pipe filter or the server once must not teach its old verdict back.
_OWN_FIELDS = re.compile(
    rb"^(?:X-NNSpam-[!-9;-~]*|X-Spam-(?:Flag|Status|Level))[ \t]*:.*(?:\r?\n[ \t].*)*\r?\n",
    re.IGNORECASE | re.MULTILINE)


def head_token(raw: bytes, limit: int = 3000) -> str:
    """The head token of a raw message: :data:`HEAD_MARK` and its first ``limit`` bytes
    (as Latin-1, one character per byte), nnspam's own verdict headers taken out."""
    end = raw.find(b"\n\n", 0, limit * 4)
    end2 = raw.find(b"\r\n\r\n", 0, limit * 4)
    cut = min(x for x in (end, end2, limit * 4) if x >= 0)
    head = raw[:cut]
    low = head.lower()
    if b"x-nnspam-" in low or b"x-spam-" in low:
        head = _OWN_FIELDS.sub(b"", head)
    return HEAD_MARK + (head + raw[cut:cut + limit])[:limit].decode("latin-1")


_ADDR_HEADERS = ("from", "reply-to", "sender", "return-path")
_WS = re.compile(r"\s+")
_IP_RE = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")


def _words(text: str) -> list[str]:
    return WORD_RE.findall(text.lower())


def body_tokens(text: str) -> list[str]:
    """Words of 3..20 characters, plus a ``skip:`` summary of longer ones."""
    words = _words(text)
    out = [w for w in words if MIN_WORD <= len(w) <= MAX_WORD]
    out.extend(f"skip:{w[0]} {len(w) // 10 * 10}" for w in words if len(w) > MAX_WORD)
    return out


def _domain_tokens(prefix: str, domain: str) -> list[str]:
    """``prefix:example.co.uk`` and its parent domains down to two labels."""
    domain = domain.strip().strip(".").lower()
    if not domain:
        return []
    if _IP_RE.match(domain):
        return [f"{prefix}:ip", f"{prefix}:{domain}"]
    labels = domain.split(".")
    out = [f"{prefix}:{'.'.join(labels[i:])}" for i in range(max(1, len(labels) - 1))]
    return out


def _address_tokens(name: str, value: str) -> list[str]:
    real, addr = parseaddr(value)
    out: list[str] = []
    addr = addr.lower()
    if "@" in addr:
        local, _, domain = addr.rpartition("@")
        out.append(f"{name}:addr:{addr}")
        out.extend(_domain_tokens(f"{name}:domain", domain))
        if local.isdigit() or re.search(r"\d{4,}", local):
            out.append(f"{name}:local:digits")
    else:
        out.append(f"{name}:addr:none")
    if real:
        out.extend(f"{name}:name:{w}" for w in _words(real))
    else:
        out.append(f"{name}:name:none")
    return out


def header_tokens(msg: ParsedMessage) -> list[str]:
    """Prefixed tokens from the header fields that a sender controls."""
    out: list[str] = []
    seen_names = set()
    for name, _ in msg.headers:
        if name not in ARTIFACT_HEADERS and name not in seen_names:
            seen_names.add(name)
            # Which headers are present says a lot about the sending software
            # (SpamBayes found header-name counting one of its better clues).
            out.append(f"hdr:{name}")

    subject = msg.header("subject")
    if subject is None:
        out.append("subject:none")
    else:
        for w in _words(subject):
            out.append(f"subject:{w}")
        if "!" in subject:
            out.append("subject:bang")
        letters = [c for c in subject if c.isalpha()]
        if len(letters) >= 8 and sum(c.isupper() for c in letters) > 0.7 * len(letters):
            out.append("subject:shouting")

    for name in _ADDR_HEADERS:
        value = msg.header(name)
        if value is not None and name not in ARTIFACT_HEADERS:
            out.extend(_address_tokens(name, value))
    # The mailing list a message came through names its sender as a From address does for
    # a person: a user who moves one issue of a list's mail teaches the wide path about
    # the list (nnspam/model/wide.py, identity part). Not among the shipped model's inputs.
    list_id = msg.header("list-id")
    if list_id:
        found = re.search(r"<([^<>\s]+)>", list_id)
        out.append("list:" + (found.group(1) if found else _WS.sub(" ", list_id.strip()))[:100]
                   .lower())
    from_dom = parseaddr(msg.header("from") or "")[1].rpartition("@")[2].lower()
    reply_dom = parseaddr(msg.header("reply-to") or "")[1].rpartition("@")[2].lower()
    if reply_dom and from_dom and reply_dom != from_dom:
        out.append("reply-to:differs")

    recipients = []
    for name in ("to", "cc"):
        vals = msg.header_all(name)
        if vals:
            addrs = getaddresses(vals)
            recipients.extend(addrs)
            for _, addr in addrs:
                dom = addr.rpartition("@")[2].lower()
                if dom:
                    out.append(f"{name}:domain:{dom}")
            if any("undisclosed" in v.lower() for v in vals):
                out.append(f"{name}:undisclosed")
    out.append(f"recipients:{min(len(recipients), 10)}")

    msgid = msg.header("message-id")
    if msgid:
        mid = msgid.strip().strip("<>")
        dom = mid.rpartition("@")[2].lower() if "@" in mid else ""
        out.extend(_domain_tokens("msgid", dom) if dom else ["msgid:nodomain"])
    else:
        out.append("msgid:none")

    for name in ("x-mailer", "user-agent"):
        value = msg.header(name)
        if value:
            words = _words(value)[:2]
            out.append(f"mailer:{' '.join(words)}")
    for name in ("x-priority", "x-msmail-priority", "importance", "precedence"):
        value = msg.header(name)
        if value:
            out.append(f"{name}:{_WS.sub(' ', value.strip().lower())[:20]}")

    ctype = (msg.header("content-type") or "").lower()
    if ctype:
        out.append("ctop:" + ctype.split(";", 1)[0].strip())
        m = re.search(r'charset\s*=\s*"?([\w.:-]+)', ctype)
        if m:
            out.append("charset:" + m.group(1))
    return out


def structure_tokens(msg: ParsedMessage) -> list[str]:
    """Tokens for parts, attachments, link hosts and decoding problems."""
    out = [f"part:{t}" for t in msg.content_types]
    if msg.html_parts and "text/plain" not in msg.content_types:
        out.append("part:html-only")
    for att in msg.attachments:
        out.append(f"attach:{att.content_type}")
        if att.filename:
            fname = att.filename.lower()
            if "." in fname:
                out.append("attach-ext:" + fname.rsplit(".", 1)[1][:10])
            out.extend(f"attach-name:{w}" for w in _words(fname.rsplit(".", 1)[0])[:5])
    for host in msg.link_hosts:
        out.extend(_domain_tokens("url", host))
    for defect in msg.defects:
        out.append("defect:" + defect.split(":", 1)[0])
    return out


def base_domain(host: str) -> str:
    """The registrable part of a host name, near enough without a suffix
    list: the last two labels, or three under a two-letter country code with
    a short second level (``example.co.uk``, ``example.com.au``)."""
    labels = host.lower().strip(".").split(".")
    if len(labels) >= 3 and len(labels[-1]) == 2 and len(labels[-2]) <= 3:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def consistency_tokens(msg: ParsedMessage) -> list[str]:
    """Does the message hang together? A newsletter a user subscribed to
    links to its sender's own domain and carries a Message-ID from it; spam
    links elsewhere and forges the rest. Measured with a logistic regression
    on all tokens (SpamAssassin split): 1-ROCA 0.042% -> 0.034%, hams lost
    at the default ham bias 7 -> 5."""
    from_dom = parseaddr(msg.header("from") or "")[1].rpartition("@")[2]
    if not from_dom:
        return []
    fbase = base_domain(from_dom)
    out = []
    if msg.link_hosts:
        bases = {base_domain(h) for h in msg.link_hosts if not _IP_RE.match(h)}
        out.append("links:sender-domain" if fbase in bases else "links:other-domain")
        out.append(f"links:domains:{min(len(bases), 5)}")
    mid = (msg.header("message-id") or "").strip().strip("<>")
    if "@" in mid:
        same = base_domain(mid.rpartition("@")[2]) == fbase
        out.append("msgid:sender-domain" if same else "msgid:other-domain")
    return out


def tokenize_parsed(msg: ParsedMessage) -> list[str]:
    """All tokens of a parsed email, with repeats (counts are features)."""
    out = header_tokens(msg)
    out.extend(consistency_tokens(msg))
    out.extend(structure_tokens(msg))
    for text in msg.texts:
        out.extend(body_tokens(text))
    return out


def tokenize_email(raw: bytes, max_part_bytes: int = DEFAULTS["max_part_bytes"]) -> list[str]:
    """Bytes of an email -> tokens. Never raises on bad mail (see message.py)."""
    return tokenize_parsed(parse_message(raw, max_part_bytes=max_part_bytes))


def text_only_copy(raw: bytes, separator: bool = True,
                   max_part_bytes: int = DEFAULTS["max_part_bytes"]) -> bytes:
    """The message as a text-only archive or gateway hands it on: its Subject line, then
    its decoded text, with every other header, the MIME structure and the attachments
    gone; ``separator=False`` leaves out the blank line after the Subject, as some
    archives do (Enron-Spam's files, mail pasted into a form).

    Training on such a copy of each message beside the message itself
    (``features.augment: text-only``) teaches the network that a message without headers
    is not spam for that alone. Without it the shipped model, trained on the full headers
    of the SpamAssassin corpus, called 15.7% of the Enron-Spam hams of ``enron1`` spam
    before any correction: ``msgid:none``, ``recipients:0`` and ``defect:*`` had only
    ever been seen on spam (docs/lab/streams.md "Learning from a stream")."""
    msg = parse_message(raw, max_part_bytes=max_part_bytes)
    subject = _WS.sub(" ", msg.header("subject") or "").strip()
    head = f"Subject: {subject}\n" + ("\n" if separator else "")
    return (head + "\n".join(msg.texts)).encode("utf-8", "surrogateescape")


# --- SMS -------------------------------------------------------------------

_SMS_TOKEN = re.compile(
    r"(?P<url>(?:https?://|www\.)\S+|\b[\w-]+\.(?:com|net|org|co\.uk|biz|info|uk|tv)\b\S*)"
    r"|(?P<num>[£$€]?\d[\d\s\-.,]*\d|[£$€]?\d)"
    r"|(?P<word>[^\W\d_](?:[\w'’&\-]*[^\W_])?)"
    r"|(?P<sym>[£$€!?*#@%+]|:\)|:\(|:-\)|;\))"
)


def _number_shape(num: str) -> list[str]:
    """Numbers by shape: spam SMS are full of shortcodes (5 digits), premium
    and phone numbers (11 digits starting 08/09/07) and prices; ham numbers are
    times and small counts. The digits themselves rarely repeat."""
    out = []
    cur = num[0] if num[0] in "£$€" else ""
    digits = re.sub(r"\D", "", num)
    if cur:
        out.append("sms:money")
        out.append(f"sms:money:{cur}")
    n = len(digits)
    out.append(f"sms:digits:{n if n < 12 else 12}")
    if n >= 10 and digits[0] == "0":
        out.append(f"sms:phone:{digits[:2]}")
    if n in (5, 6) and not cur:
        out.append("sms:shortcode")
        out.append(f"num:{digits}")
    elif n <= 4:
        out.append(f"num:{digits}")
    return out


def tokenize_sms(text: str) -> list[str]:
    """Tokens of one SMS text (see the module docstring).

    Measured on the SMS split (seeds 1-3, same network): this tokenizer missed 12/13/13
    spams with 0/0/1 hams lost (1-ROCA 0.41-0.43%); the email body tokenizer (words of
    3..20 characters) missed 31/33/29 with 1 ham lost each (1-ROCA 1.2-1.6%). The short
    tokens it keeps ("£", "txt", shortcodes) carry most of the evidence in SMS spam."""
    out: list[str] = []
    for m in _SMS_TOKEN.finditer(text):
        kind = m.lastgroup
        tok = m.group()
        if kind == "word":
            low = tok.lower()
            out.append(low)
            if len(tok) >= 3 and tok.isupper():
                out.append("sms:caps")
        elif kind == "num":
            out.extend(_number_shape(tok.strip()))
        elif kind == "url":
            out.append("sms:url")
            host = re.sub(r"^(https?://)?(www\.)?", "", tok.lower()).split("/", 1)[0]
            if host:
                out.append("url:" + host.rstrip(".,!?"))
        else:
            out.append("sym:" + tok)
    length = len(text)
    out.append(f"sms:len:{min(length // 40, 5)}")
    return out


def sms_text_from_bytes(raw: bytes) -> str:
    """The text of an SMS delivered as an RFC 822 message (the SMS maildir):
    the decoded body, so the SMS model sees what it was trained on."""
    msg = parse_message(raw)
    return "\n".join(msg.texts)


def count_tokens(token_lists: Iterable[list[str]]) -> dict[str, int]:
    """Total occurrences of every token over many messages."""
    counts: dict[str, int] = {}
    for toks in token_lists:
        for t in toks:
            counts[t] = counts.get(t, 0) + 1
    return counts
