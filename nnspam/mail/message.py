"""Turn the raw bytes of one email into a decoded, tokenizer-ready structure.

``parse_message`` is the only entry point the rest of the filter needs. It is built for
two things that pull in different directions:

* **Robustness.** Spam is frequently malformed on purpose. Nothing here may raise: every
  problem (unknown charset, broken base64, missing boundary, ...) is recorded as a short
  string in ``ParsedMessage.defects`` - which doubles as a useful spam signal - and the
  best available text is still returned.
* **Speed.** The whole filter must classify >= 1000 messages/s, so parsing uses the
  ``compat32`` policy (the fastest), reads raw header values and payloads directly, does
  its own RFC 2047 / base64 / charset handling with C-level fast paths, and converts HTML
  with a handful of regular expressions instead of an HTML parser.

Decisions that callers may care about:

* ``headers`` holds the *top-level* headers only. Headers of nested ``message/rfc822``
  parts are ignored (their Subject is *not* added to ``texts``) so that ``texts`` stays
  exactly "one entry per text part"; the text parts inside the nested message do count.
* ``texts`` has one entry per text leaf part (any ``text/*`` that is not
  ``Content-Disposition: attachment``), even if the entry is empty. ``text/html`` is
  converted by ``html_to_text`` (the ``<title>`` text is kept: it is spam-typical);
  other text keeps its line breaks, with CRLF normalised to LF. A leaf that claims
  ``multipart/*`` or ``message/*`` but has no parsed structure (for example a multipart
  without a boundary) is treated as ``text/plain`` because its body is usually the real
  message text. Parsed non-text containers such as ``message/delivery-status`` become an
  attachment of size 0.
* Charsets: ``iso-8859-1`` is read as cp1252 (as browsers do); GB2312/GBK, EUC-KR/
  ks_c_5601-1987, Shift_JIS and Big5 are read with their Microsoft supersets. Raw 8-bit
  header bytes are tried as utf-8, then as the first charset the body declares, then
  cp1252.
* ``link_hosts`` is de-duplicated, in order of first appearance. ``mailto:`` links are
  ignored (they are addresses, not hosts a browser visits). Besides ``href``/``src``/
  ``action`` we also read ``background`` attributes (spam uses them for tracking
  images), and the visible text of HTML parts is scanned for bare URLs like plain text.
* ``html_parts`` counts ``text/html`` parts that were decoded as text (HTML attachments
  are counted as attachments instead).
* Defect strings: ``empty``, ``parse-error:<Exc>``, ``bad-charset:<name>``,
  ``bad-base64``, ``bad-cte:<name>``, ``bad-encoded-word``, ``8bit-header``,
  ``part-truncated``, ``too-many-parts``, ``too-deep``, and the stdlib parser's own
  defects as ``mime:<kebab-name>`` (e.g. ``mime:close-boundary-not-found`` for a
  truncated multipart). Each defect appears at most once.
* Nesting deeper than the stdlib parser's recursion allows (thousands of levels) ends
  in ``parse-error:RecursionError`` and the raw-body fallback; we never raise.
"""

from __future__ import annotations

import binascii
import codecs
import email
import email.message
import email.policy
import html as _html  # aliased: html_to_text's parameter is named `html`
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import unquote

from nnspam.config import DEFAULTS

__all__ = [
    "Attachment",
    "ParsedMessage",
    "html_to_text",
    "parse_message",
    "strip_mbox_from_line",
]

# Nested multiparts deeper than this are not descended into: real mail rarely exceeds 5,
# and a hostile message could otherwise make us walk thousands of levels.
_MAX_DEPTH = 32


@dataclass
class Attachment:
    """One non-text leaf part (or a text part explicitly marked as an attachment)."""

    content_type: str
    filename: str | None
    size: int


@dataclass
class ParsedMessage:
    """The decoded view of one email that the tokenizer consumes."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    html_parts: int = 0
    link_hosts: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        """Return the first value of header ``name`` (case-insensitive), or None."""
        key = name.lower()
        for k, v in self.headers:
            if k == key:
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        """Return every value of header ``name`` (case-insensitive), in order."""
        key = name.lower()
        return [v for k, v in self.headers if k == key]


class _Defects:
    """Ordered set of defect strings: repeated problems are recorded once."""

    __slots__ = ("items", "_seen")

    def __init__(self) -> None:
        self.items: list[str] = []
        self._seen: set[str] = set()

    def add(self, defect: str) -> None:
        if defect not in self._seen:
            self._seen.add(defect)
            self.items.append(defect)


# --------------------------------------------------------------------------- charsets

# Labels seen in real mail that Python does not know, or where a superset decodes what
# senders actually produce (mail clients label cp949/GBK/cp932 text with the older names).
_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cn-gb": "gb18030",
    "euc-cn": "gb18030",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "ksc5601": "cp949",
    "euc-kr": "cp949",
    "euc_kr": "cp949",  # Python's canonical name, reached via other aliases
    "x-sjis": "cp932",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-euc-jp": "euc_jp",
    "big5": "cp950",
    "chinesebig5": "cp950",
    "gb2312_charset": "gb18030",
    "x-mac-roman": "mac_roman",
    "macintosh": "mac_roman",
    "iso-8859-8-i": "iso8859_8",
    "windows-874": "cp874",
    "unicode-1-1-utf-7": "utf-7",
}

# Codecs that are technically text encodings but make no sense for mail bodies (and
# "unicode_escape" would happily interpret backslashes in the text).
_REJECTED_CODECS = frozenset(
    {"unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined", "mbcs", "oem"}
)

# Codecs in which pure-ASCII bytes do *not* mean the same ASCII text; the "bytes are
# ASCII, so just decode as ASCII" fast path must not be used for them.
_NON_ASCII_COMPATIBLE = (
    "utf-16",
    "utf-32",
    "utf-7",
    "iso2022",
    "hz",
    "cp037",
    "cp273",
    "cp424",
    "cp500",
    "cp875",
    "cp1026",
    "cp1140",
)

_LATIN1 = "_latin1"  # pseudo codec: cp1252 (what "iso-8859-1" senders mean) else latin-1
_UNKNOWN = ""  # sentinel returned by _resolve_charset for labels we cannot use

_LABEL_JUNK_RE = re.compile(r"[^a-z0-9._:+-]")


def _defect_label(name: str) -> str:
    """Sanitise a charset/CTE name for use inside a defect string (it may be garbage)."""
    label = _LABEL_JUNK_RE.sub("", name.lower())[:32]
    return label or "invalid"


@lru_cache(maxsize=512)  # bounded: garbage labels from spam must not grow memory forever
def _resolve_charset(label: str) -> str:
    """Map a declared charset label to a usable Python codec name, or ``_UNKNOWN``."""
    name = _CHARSET_ALIASES.get(label, label)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):
        return _UNKNOWN
    if not getattr(info, "_is_text_encoding", True) or info.name in _REJECTED_CODECS:
        return _UNKNOWN
    if info.name == "iso8859-1":
        return _LATIN1
    return _CHARSET_ALIASES.get(info.name, info.name)


def _latin(data: bytes) -> str:
    """Decode 8-bit bytes of unknown origin: cp1252 (smart quotes etc.), else latin-1."""
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # never fails


def _strict(data: bytes, codec: str, partial: bool) -> str:
    """Strict decode; with ``partial`` an incomplete multibyte tail (cut-off data) is
    dropped instead of counting as an error."""
    if partial:
        return codecs.getincrementaldecoder(codec)("strict").decode(data, final=False)
    return data.decode(codec)


def _guess_decode(data: bytes, partial: bool = False) -> str:
    """Decode bytes whose charset is undeclared or wrong: utf-8, else cp1252/latin-1."""
    try:
        return _strict(data, "utf-8", partial)
    except UnicodeDecodeError:
        return _latin(data)


def _decode_bytes(
    data: bytes, charset: str | None, defects: _Defects, partial: bool = False
) -> str:
    """Decode ``data`` with the declared ``charset`` (may be None/empty/garbage).

    Falls back to utf-8 -> cp1252 -> latin-1 and records ``bad-charset:<name>`` when a
    declared charset is unknown or does not fit the bytes. One extra step for a *known*
    codec that fails: if the bytes are not utf-8 either but decode with the declared codec
    with at most ~2% replacement characters, that is kept - a GB2312 spam with three bad
    bytes is far better tokenized in Chinese than as cp1252 mojibake.
    """
    if not data:
        return ""
    if not charset:
        return data.decode("ascii") if data.isascii() else _guess_decode(data, partial)
    codec = _resolve_charset(charset)
    if not codec:  # _UNKNOWN
        defects.add("bad-charset:" + _defect_label(charset))
        return data.decode("ascii") if data.isascii() else _guess_decode(data, partial)
    if data.isascii() and not codec.startswith(_NON_ASCII_COMPATIBLE):
        return data.decode("ascii")  # the overwhelmingly common case, at C speed
    if codec == _LATIN1:
        return _latin(data)
    try:
        return _strict(data, codec, partial)
    except Exception:  # noqa: BLE001 - UnicodeDecodeError, or exotic codec failures - never raise
        defects.add("bad-charset:" + _defect_label(charset))
    try:
        return _strict(data, "utf-8", partial)  # mislabelled utf-8 is the usual culprit
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode(codec, "replace")
        if text.count("\ufffd") * 50 <= len(text):
            return text
    except Exception:  # noqa: BLE001 - whatever the codec raises: latin-1 below
        pass
    return _latin(data)


# ---------------------------------------------------------------------------- headers

# RFC 2047 encoded-word. The encoded text may (illegally, but commonly) contain spaces.
_EW_RE = re.compile(r"=\?([^?\s]*)\?([bBqQ])\?([^?]*)\?=")
_B64_TEXT_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_CHARSET_RE = re.compile(r"""charset\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s;"']+))""", re.I)


def _fix_8bit(value: str, defects: _Defects, hint: str | None = None) -> str:
    """Turn surrogate-escaped raw 8-bit bytes (how compat32 stores them) into text.

    Raw 8-bit headers are usually utf-8 or in the charset the body declares (``hint``;
    Korean/Chinese spam writes EUC-KR/GB2312 straight into the Subject), else cp1252.
    """
    if value.isascii():
        return value
    try:
        raw = value.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return value  # already real unicode, nothing to fix
    defects.add("8bit-header")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    codec = _resolve_charset(hint) if hint else _UNKNOWN
    if codec and codec != _LATIN1:
        try:
            return raw.decode(codec)
        except Exception:  # noqa: BLE001 - whatever the codec raises: latin-1 below
            pass
    return _latin(raw)


def _ew_bytes(kind: str, text: str) -> bytes | None:
    """Decode the payload of one encoded-word, or None if it is hopelessly broken."""
    if kind in "bB":
        text = "".join(text.split())
        if not _B64_TEXT_RE.fullmatch(text):
            return None
        text = text.rstrip("=")
        rem = len(text) % 4
        if rem == 1:
            return None
        try:
            return binascii.a2b_base64(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            return None
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raw = text.encode("utf-8")
    return binascii.a2b_qp(raw, header=True)  # header=True: "_" means space


def _decode_encoded_words(value: str, defects: _Defects) -> str:
    """RFC 2047 decoding that tolerates real-world breakage.

    Adjacent encoded-words in the same charset are joined as *bytes* before decoding,
    because many mailers split multibyte characters across words. Whitespace between
    encoded-words is dropped (RFC 2047 section 6.2). Undecodable words stay literal.
    """
    out: list[str] = []
    pos = 0
    run_cs: str | None = None
    run: list[bytes] = []
    for m in _EW_RE.finditer(value):
        gap = value[pos : m.start()]
        pos = m.end()
        data = _ew_bytes(m.group(2), m.group(3))
        if data is None:
            defects.add("bad-encoded-word")
            if run_cs is not None:
                out.append(_decode_bytes(b"".join(run), run_cs, defects))
                run_cs, run = None, []
            out.append(gap)
            out.append(m.group(0))
            continue
        cs = m.group(1).split("*", 1)[0].strip().lower()  # drop RFC 2231 "*lang" suffix
        adjacent = run_cs is not None and (not gap or gap.isspace())
        if adjacent and cs == run_cs:
            run.append(data)
            continue
        if run_cs is not None:
            out.append(_decode_bytes(b"".join(run), run_cs, defects))
        if not adjacent:
            out.append(gap)
        run_cs, run = cs, [data]
    if run_cs is not None:
        out.append(_decode_bytes(b"".join(run), run_cs, defects))
    out.append(value[pos:])
    return "".join(out)


def _decode_header_value(value: object, defects: _Defects, hint: str | None = None) -> str:
    """Raw compat32 header value -> unicode with encoded-words decoded, folding collapsed."""
    if not isinstance(value, str):
        value = str(value)
    value = _fix_8bit(value, defects, hint)
    if "=?" in value:
        value = _decode_encoded_words(value, defects)
    return " ".join(value.split())


# --------------------------------------------------------------------------- links

_URL_SCHEMES = ("http:", "https:", "ftp:")
_HOST_END_RE = re.compile(r"[/\\?#;]")  # whitespace is not an end: "a b.com" is invalid
_HOST_OK_RE = re.compile(r"[\w.-]+|\[[0-9a-f:.]+\]")
# URL scanners run on a lowercased copy of the text: hosts are case-insensitive, and
# literal-prefix patterns without re.IGNORECASE let the regex engine skip ahead at C speed
# (measured 3-5x faster than one case-insensitive alternation).
_HTTP_URL_RE = re.compile(r"https?://[^\s<>\"']+")
_WWW_URL_RE = re.compile(r"www\.[^\s<>\"']+")
# No leading \b: it stops the engine from using the first-character prefix scan and made
# this pattern 3x slower; "data-src=" also matching is harmless.
_ATTR_URL_RE = re.compile(
    r"""(?:href|src|action|background)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+))"""
)


def _url_host(url: str) -> str | None:
    """Host of an absolute (``scheme://``), protocol-relative (``//``) or ``www.`` URL.

    Userinfo and port are removed, percent-escapes in the host decoded (browsers do,
    so spammers use them), the result lowercased. Relative links, ``mailto:``,
    ``javascript:``, ``cid:`` etc. give None.
    """
    url = url.strip()
    if "&" in url:
        url = _html.unescape(url)  # "&#104;ttp://" obfuscation and plain "&amp;"
    if "\n" in url or "\t" in url or "\r" in url:
        url = "".join(url.split())  # browsers ignore these inside URLs
    head = url[:8].lower()
    if head.startswith(_URL_SCHEMES):
        rest = url[url.index(":") + 1 :].lstrip("/\\")
    elif head.startswith(("//", "\\\\")):
        rest = url.lstrip("/\\")
    elif head.startswith("www."):
        rest = url
    else:
        return None
    m = _HOST_END_RE.search(rest)
    host = rest[: m.start()] if m else rest
    host = host.rpartition("@")[2]  # userinfo
    if host.startswith("["):
        host = host[: host.find("]") + 1]  # IPv6 literal keeps its colons
    else:
        host = host.partition(":")[0]  # port
    if "%" in host:
        host = unquote(host)
    host = host.lower().strip(".")
    if host and _HOST_OK_RE.fullmatch(host):
        return host
    return None


def _text_hosts(text: str, hosts: list[str]) -> None:
    """Append hosts of ``http(s)://`` and ``www.`` URLs found in plain text, in order."""
    if "http" not in text and "www" not in text and not _maybe_url_upper(text):
        return  # cheap substring checks spare the lowercasing and regex scans
    low = text.lower()
    found = [(m.start(), m.group(0)) for m in _HTTP_URL_RE.finditer(low)]
    if "www." in low:
        # "www." inside an http URL yields the same host again; the dedupe drops it.
        found.extend((m.start(), m.group(0)) for m in _WWW_URL_RE.finditer(low))
        found.sort()
    for _, url in found:
        host = _url_host(url)
        if host:
            hosts.append(host)


def _maybe_url_upper(text: str) -> bool:
    """Rare case for ``_text_hosts``: URLs written in capitals."""
    return "HTTP" in text or "WWW" in text or "Http" in text or "Www" in text


# ---------------------------------------------------------------------------- HTML


def _ci_trie(words: list[str]) -> str:
    """Regex alternation matching ``words`` case-insensitively, as a prefix trie.

    Explicit ``[xX]`` classes in a trie are ~1.7x faster than ``re.I`` with a flat
    alternation for the block-tag pass, which dominated ``html_to_text``.
    """
    root: dict = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict) -> str:
        alts = [
            (f"[{ch}{ch.upper()}]" if ch.isalpha() else re.escape(ch)) + emit(sub)
            for ch, sub in sorted(node.items())
            if ch
        ]
        if not alts:
            return ""
        if "" in node:
            return "(?:" + "|".join(alts) + ")?"
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return emit(root)


# Tags that break the line in a browser become a space; every other tag (b, font, span,
# unknown ones...) becomes nothing, because spam splits words with inline tags.
_BLOCK_TAGS = (
    "address area article aside blockquote body br button caption center dd div dl dt"
    " fieldset figure footer form frame h1 h2 h3 h4 h5 h6 head header hr html iframe img"
    " input li main nav noscript ol option p pre section select table tbody td textarea"
    " tfoot th thead title tr ul"
).split()
_BLOCK_TAG_RE = re.compile(r"</?" + _ci_trie(_BLOCK_TAGS) + r"\b[^>]*>")
# Comments go first and are replaced by nothing: "V<!-- x -->iagra" renders as "Viagra".
# Unclosed comments/scripts run to the end of the document, as they do in browsers.
_COMMENT_RE = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
_SCRIPT_STYLE_RE = re.compile(r"<(script|style)\b.*?(?:</\1\s*>|\Z)", re.S | re.I)
# A tag starts with a letter, "/", "!" or "?"; a bare "<" followed by anything else is
# text ("a < b") and must not swallow everything up to the next ">".
_TAG_RE = re.compile(r"<[A-Za-z/!?][^>]*>")
# Invisible characters spam inserts inside words (soft hyphen, zero-width joiners, BOM).
_INVISIBLE = "\u00ad\u200b\u200c\u200d\u2060\ufeff"


def html_to_text(html: str) -> tuple[str, list[str]]:
    """Convert HTML to visible text and collect link hosts.

    Regex-based on purpose: it is several times faster than ``html.parser`` and good
    enough for tokenizing. Returns ``(text, hosts)``: whitespace-collapsed visible text
    (script/style/comments removed, entities unescaped) and the de-duplicated hosts of
    ``href``/``src``/``action``/``background`` URLs plus bare URLs in the visible text.
    """
    hosts: list[str] = []
    text = html
    if "<" in text:
        if "<!--" in text:
            text = _COMMENT_RE.sub("", text)
        low = text.lower()
        if "=" in low:
            # findall (tuples, no match objects) and de-duplicated URLs: spam repeats
            # the same link many times.
            urls = dict.fromkeys(a or b or c for a, b, c in _ATTR_URL_RE.findall(low))
            for url in urls:
                host = _url_host(url)
                if host:
                    hosts.append(host)
        if "<script" in low or "<style" in low:
            text = _SCRIPT_STYLE_RE.sub(" ", text)
        text = _BLOCK_TAG_RE.sub(" ", text)
        text = _TAG_RE.sub("", text)
    if "&" in text:
        text = _html.unescape(text)
    if not text.isascii():
        for ch in _INVISIBLE:
            if ch in text:
                text = text.replace(ch, "")
    text = " ".join(text.split())
    _text_hosts(text, hosts)
    return text, list(dict.fromkeys(hosts))


# ------------------------------------------------------------------------ payloads

_B64_LINE_RE = re.compile(rb"[A-Za-z0-9+/]+=*")
_B64_JUNK_RE = re.compile(rb"[^A-Za-z0-9+/]")
_WS_BYTES = b" \t\r\n\x0b\x0c"


def _b64decode(raw: bytes, defects: _Defects) -> bytes:
    """Decode a base64 body, salvaging what is decodable from broken ones.

    Fast path: whitespace removed, strict C decoder. Slow path (records ``bad-base64``):
    line by line, stopping at the first line that is clearly not base64 - typically a
    mailing-list footer appended after the encoded body - and tolerating stray
    characters inside otherwise good lines.
    """
    data = raw.translate(None, _WS_BYTES)
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        pass
    defects.add("bad-base64")
    chunks: list[bytes] = []
    for line in raw.splitlines():
        s = line.strip()
        if not s:
            continue
        if _B64_LINE_RE.fullmatch(s):
            chunks.append(s.rstrip(b"="))
            if s.endswith(b"="):
                break  # padding marks the end of the data
            continue
        cleaned = _B64_JUNK_RE.sub(b"", s.rstrip(b"="))
        if len(s) >= 16 and len(cleaned) * 10 >= len(s) * 9:
            chunks.append(cleaned)  # a good line with a few stray characters
            continue
        break  # not base64 at all: footer or garbage, stop here
    data = b"".join(chunks)
    if len(data) % 4 == 1:
        data = data[:-1]  # a lone trailing sextet cannot form a byte
    data += b"=" * (-len(data) % 4)
    try:
        return binascii.a2b_base64(data)
    except (binascii.Error, ValueError):
        return b""


def _payload_bytes(part: email.message.Message, cte: str, defects: _Defects) -> bytes:
    """The transfer-decoded payload of a leaf part."""
    # ``_payload`` is read directly: ``get_payload()`` re-decodes 8-bit payloads through
    # the declared charset with errors="replace", which is slow and loses the raw bytes.
    payload = getattr(part, "_payload", None)
    if isinstance(payload, bytes | bytearray):
        raw = bytes(payload)
    elif isinstance(payload, str):
        try:
            raw = payload.encode("ascii", "surrogateescape")
        except UnicodeEncodeError:
            raw = payload.encode("utf-8", "replace")
    else:
        return b""
    if cte == "base64":
        return _b64decode(raw, defects)
    if cte == "quoted-printable":
        return binascii.a2b_qp(raw)
    if cte in ("", "7bit", "8bit", "binary"):
        return raw
    if cte in ("x-uuencode", "uuencode", "x-uue", "uue"):
        try:
            data = part.get_payload(decode=True)
            return data if isinstance(data, bytes) else raw
        except Exception:  # noqa: BLE001 - a broken uuencoded part is a defect, not a crash
            defects.add("bad-cte:" + cte)
            return raw
    defects.add("bad-cte:" + _defect_label(cte))
    return raw


# ---------------------------------------------------------------------------- parsing

_CAMEL_RE = re.compile(r"(?<!^)(?=[A-Z])")
_MIME_DEFECT_NAMES: dict[type, str] = {}


def _mime_defect_name(defect: object) -> str:
    """``CloseBoundaryNotFoundDefect`` -> ``mime:close-boundary-not-found`` (cached)."""
    cls = type(defect)
    name = _MIME_DEFECT_NAMES.get(cls)
    if name is None:
        base = cls.__name__.removesuffix("Defect") or cls.__name__
        name = "mime:" + _CAMEL_RE.sub("-", base).lower()
        _MIME_DEFECT_NAMES[cls] = name
    return name


def strip_mbox_from_line(raw: bytes) -> bytes:
    """Drop a leading mbox ``From `` envelope line: it is not an RFC 822 header and the
    parser would otherwise misread the header block."""
    if raw.startswith(b"From "):
        nl = raw.find(b"\n")
        return b"" if nl < 0 else raw[nl + 1 :]
    return raw


def _content_type(part: email.message.Message, ct_raw: str | None) -> str:
    """Lowercased ``type/subtype`` with the stdlib's defaulting rules."""
    if ct_raw is None:
        return part.get_default_type()  # text/plain, or message/rfc822 in a digest
    ctype = "".join(ct_raw.split(";", 1)[0].split()).lower()
    if ctype.count("/") != 1 or ctype.startswith("/") or ctype.endswith("/"):
        return "text/plain"  # what RFC 2045 says to assume for an invalid type
    if not ctype.isascii():
        ctype = ctype.encode("ascii", "replace").decode("ascii")
    return ctype


def _charset_param(ct_raw: str | None) -> str | None:
    """Lowercased ``charset`` parameter of a raw Content-Type value, or None."""
    if ct_raw is None or "harset" not in ct_raw and "HARSET" not in ct_raw:
        return None
    m = _CHARSET_RE.search(ct_raw)
    if not m:
        return None
    return (m.group(1) or m.group(2) or m.group(3) or "").strip().lower() or None


_RAW_PARAM_RES = (
    (
        "content-disposition",
        re.compile(r"""(?<![\w*-])filename\s*=\s*(?:"([^"]*)"|([^;\s]+))""", re.I),
    ),
    ("content-type", re.compile(r"""(?<![\w*-])name\s*=\s*(?:"([^"]*)"|([^;\s]+))""", re.I)),
)


def _filename(
    part: email.message.Message,
    hdrs: dict[str, str],
    defects: _Defects,
    hint: str | None = None,
) -> str | None:
    """Decoded attachment file name (RFC 2231 via the stdlib, then RFC 2047).

    Raw 8-bit names are read from the header ourselves: the stdlib would turn those
    bytes into U+FFFD before we could decode them.
    """
    name = None
    for header, param_re in _RAW_PARAM_RES:
        value = hdrs.get(header)
        if value and not value.isascii():
            m = param_re.search(value)
            if m:
                name = m.group(1) if m.group(1) is not None else m.group(2)
                break
    if name is None:
        try:
            name = part.get_filename()
        except Exception:  # noqa: BLE001 - a malformed filename parameter: no name
            return None
    if not name:
        return None
    name = _decode_header_value(name, defects, hint)
    return name or None


def _walk_leaves(msg: email.message.Message, defects: _Defects) -> Iterator[email.message.Message]:
    """Yield leaf parts depth-first, in document order, without recursion.

    Also records every part's parser defects. ``email.message.Message.walk`` recurses
    and would hit the recursion limit on hostile nesting.
    """
    stack: list[tuple[email.message.Message, int]] = [(msg, 0)]
    while stack:
        part, depth = stack.pop()
        for d in getattr(part, "defects", ()):
            defects.add(_mime_defect_name(d))
        payload = getattr(part, "_payload", None)
        if isinstance(payload, list):
            maintype = part.get_content_maintype()
            if maintype == "multipart" or part.get_content_type() in (
                "message/rfc822",
                "message/news",
                "message/global",
            ):
                if depth >= _MAX_DEPTH:
                    defects.add("too-deep")
                    continue
                for sub in reversed(payload):
                    if isinstance(sub, email.message.Message):
                        stack.append((sub, depth + 1))
                continue
        # Leaves, including parsed header blocks such as message/delivery-status.
        yield part


def _parse(
    raw: bytes, max_part_bytes: int, max_parts: int, result: ParsedMessage, defects: _Defects
) -> None:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    texts = result.texts
    hint: str | None = None  # first declared charset: used for raw 8-bit headers
    hosts: list[str] = []
    nparts = 0
    for part in _walk_leaves(msg, defects):
        if nparts >= max_parts:
            defects.add("too-many-parts")
            break
        nparts += 1
        hdrs: dict[str, str] = {}
        for k, v in part.raw_items():
            hdrs.setdefault(k.lower(), v if isinstance(v, str) else str(v))
        ct_raw = hdrs.get("content-type")
        ctype = _content_type(part, ct_raw)
        result.content_types.append(ctype)
        cte = "".join(hdrs.get("content-transfer-encoding", "").split()).lower()
        disposition = hdrs.get("content-disposition", "")
        is_attachment = disposition.split(";", 1)[0].strip().lower() == "attachment"
        maintype = ctype.partition("/")[0]
        charset = _charset_param(ct_raw)
        if hint is None and charset:
            hint = charset
        structured = isinstance(getattr(part, "_payload", None), list)
        if structured or is_attachment or maintype not in ("text", "multipart", "message"):
            size = 0 if structured else len(_payload_bytes(part, cte, defects))
            filename = _filename(part, hdrs, defects, charset)
            result.attachments.append(Attachment(ctype, filename, size))
            continue
        data = _payload_bytes(part, cte, defects)
        truncated = len(data) > max_part_bytes
        if truncated:
            defects.add("part-truncated")
            data = data[:max_part_bytes]
        text = _decode_bytes(data, charset, defects, partial=truncated)
        if ctype == "text/html":
            result.html_parts += 1
            text, part_hosts = html_to_text(text)
            hosts.extend(part_hosts)
        else:
            if "\r" in text:
                text = text.replace("\r\n", "\n")
            _text_hosts(text, hosts)
        texts.append(text)
    result.link_hosts = list(dict.fromkeys(hosts))
    # Headers last, so that raw 8-bit ones can be decoded with the body's charset.
    headers = result.headers
    for k, v in msg.raw_items():
        # Inline fast path: almost every header is plain ASCII without encoded-words,
        # and a function call per header was a measurable share of the parse time.
        if isinstance(v, str) and v.isascii() and "=?" not in v:
            v = " ".join(v.split())
        else:
            v = _decode_header_value(v, defects, hint)
        k = k.lower() if k.isascii() else _decode_header_value(k, defects).lower()
        headers.append((k, v))


def _fallback_text(raw: bytes) -> str:
    """Body after the first blank line (or everything), decoded without a charset."""
    m = re.search(rb"\r?\n\r?\n", raw)
    body = raw[m.end() :] if m else raw
    return _guess_decode(body)


def parse_message(raw: bytes, max_part_bytes: int = DEFAULTS["max_part_bytes"],
                  max_parts: int = 64) -> ParsedMessage:
    """Parse one email's raw bytes into a ``ParsedMessage``. Never raises.

    ``max_part_bytes`` caps each text part's decoded payload (``part-truncated``);
    ``max_parts`` caps the number of leaf parts processed (``too-many-parts``). Any
    unexpected exception yields ``parse-error:<ExceptionName>`` and the raw body as the
    only text, so the caller always gets something to classify.
    """
    result = ParsedMessage()
    defects = _Defects()
    try:
        if not isinstance(raw, bytes):
            raw = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else bytes(raw)
        raw = strip_mbox_from_line(raw)
        if not raw.strip():
            defects.add("empty")
        else:
            _parse(raw, max_part_bytes, max_parts, result, defects)
    except Exception as exc:  # noqa: BLE001 - hostile mail is a defect, never a crash
        defects.add("parse-error:" + type(exc).__name__)
        headers = result.headers
        result = ParsedMessage(headers=headers)
        try:
            result.texts = [_fallback_text(raw)]
        except Exception:  # noqa: BLE001 - the last resort failed too: no text
            result.texts = []
    result.defects = defects.items
    return result
