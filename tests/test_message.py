"""Tests for nnspam.mail.message: MIME decoding, HTML to text, link hosts, and never raising.

Fixtures in tests/fixtures/mime/ are small hand-written messages, several deliberately
broken. Random inputs use fixed seeds so failures are reproducible.
"""

from __future__ import annotations

import base64
import random
from pathlib import Path

import pytest

import nnspam.mail.message as message_mod
from nnspam.mail.message import (
    Attachment,
    ParsedMessage,
    html_to_text,
    parse_message,
    strip_mbox_from_line,
)

FIXTURES = Path(__file__).parent / "fixtures" / "mime"
FIXTURE_FILES = sorted(FIXTURES.glob("*.eml"))


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def parse(name: str, **kwargs) -> ParsedMessage:
    return parse_message(load(name), **kwargs)


def assert_well_formed(pm: ParsedMessage) -> None:
    """Type invariants every result must satisfy, whatever the input."""
    assert isinstance(pm, ParsedMessage)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in pm.headers)
    assert all(k == k.lower() for k, _ in pm.headers)
    assert all(isinstance(t, str) for t in pm.texts)
    assert isinstance(pm.html_parts, int) and pm.html_parts >= 0
    assert all(isinstance(h, str) and h and h == h.lower() for h in pm.link_hosts)
    assert len(pm.link_hosts) == len(set(pm.link_hosts))
    assert all(isinstance(a, Attachment) and a.size >= 0 for a in pm.attachments)
    assert all(isinstance(c, str) and c == c.lower() for c in pm.content_types)
    assert all(isinstance(d, str) for d in pm.defects)
    assert len(pm.defects) == len(set(pm.defects))


# ----------------------------------------------------------------------------- basics


def test_fixtures_present():
    assert len(FIXTURE_FILES) >= 15


def test_plain_message():
    pm = parse("plain.eml")
    assert pm.header("subject") == "Lunch on Thursday?"  # runs of spaces collapsed
    assert pm.header("From") == "Alice <alice@example.com>"
    # Folded Received header: folding whitespace collapsed to single spaces.
    received = pm.header("received")
    assert received is not None and "\n" not in received and "\t" not in received
    assert "by mx.example.net with ESMTP" in received
    assert pm.content_types == ["text/plain"]
    assert len(pm.texts) == 1 and "lunch on Thursday" in pm.texts[0]
    assert pm.link_hosts == ["www.cafe.example.com", "www.maps.example.org"]
    assert pm.attachments == [] and pm.html_parts == 0 and pm.defects == []


def test_headers_in_order_and_lookup_helpers():
    pm = parse("plain.eml")
    names = [k for k, _ in pm.headers]
    assert names == [
        "return-path", "received", "from", "to", "subject", "date", "message-id"
    ]  # fmt: skip
    assert pm.header("X-Missing") is None
    assert pm.header_all("SUBJECT") == ["Lunch on Thursday?"]
    assert pm.header_all("x-missing") == []
    multi = parse_message(b"Received: a\nReceived: b\nSubject: s\n\nbody\n")
    assert multi.header("received") == "a"
    assert multi.header_all("Received") == ["a", "b"]


def test_crlf_message_with_mbox_from_line():
    raw = load("crlf_mbox.eml")
    assert raw.startswith(b"From ") and b"\r\n" in raw  # the fixture really is CRLF
    pm = parse_message(raw)
    assert [k for k, _ in pm.headers] == ["from", "to", "subject", "content-type"]
    assert pm.header("subject") == "CRLF line ends"
    assert pm.texts == ["First line.\nSecond line, see https://docs.example.com/a/b?c=d.\n"]
    assert pm.link_hosts == ["docs.example.com"]
    assert pm.defects == []


def test_strip_mbox_from_line():
    assert strip_mbox_from_line(b"From a@b  Mon Sep 2\nSubject: x\n") == b"Subject: x\n"
    assert strip_mbox_from_line(b"From a@b  Mon\r\nX: y\r\n") == b"X: y\r\n"
    assert strip_mbox_from_line(b"From: a@b\n\nbody") == b"From: a@b\n\nbody"
    assert strip_mbox_from_line(b"From only-line") == b""
    assert strip_mbox_from_line(b"") == b""


def test_message_without_headers_still_yields_text():
    pm = parse("no_headers.eml")
    assert pm.headers == []
    assert len(pm.texts) == 1 and "no header block at all" in pm.texts[0]
    assert pm.content_types == ["text/plain"]


def test_empty_input():
    for raw in (b"", b"   \r\n\n", b"From someone  Mon Sep 2 10:00:00 2002\n"):
        pm = parse_message(raw)
        assert pm.defects == ["empty"]
        assert pm.texts == [] and pm.headers == [] and pm.content_types == []


def test_non_bytes_input_is_accepted():
    raw = load("plain.eml")
    assert parse_message(bytearray(raw)).texts == parse_message(raw).texts
    assert parse_message(memoryview(raw)).texts == parse_message(raw).texts


# ---------------------------------------------------------------- transfer encodings


def test_base64_utf8_text():
    pm = parse("base64_utf8.eml")
    assert pm.texts == [
        "Grüße aus München — price: 10 €\nSecond line with https://Example.org/path\n"
    ]
    assert pm.link_hosts == ["example.org"]
    assert pm.defects == []


def test_quoted_printable_iso_8859_1():
    pm = parse("qp_latin1.eml")
    text = pm.texts[0]
    assert text.startswith("Café crème brûlée, à bientôt.")
    assert "that is softly wrapped" in text  # soft line break joined
    # iso-8859-1 labels are decoded as cp1252 (as browsers do): 0x80 is the euro sign.
    assert "5 € (" in text
    assert pm.defects == []


def test_broken_base64_salvages_text_and_records_defect():
    pm = parse("broken_base64.eml")
    assert pm.texts == ["Hello from a broken base64 body. " * 3]
    assert "mailing list" not in pm.texts[0]  # appended footer is not decoded as base64
    assert "bad-base64" in pm.defects


@pytest.mark.parametrize(
    ("body", "expected", "broken"),
    [
        (b"aGVsbG8gd29ybGQh\n\naGVs", b"hello world!hel", False),  # blank line: fine
        (b"aGVsbG8gd29ybGQ", b"hello world", True),  # missing padding
        (b"aGVsbG8*gd29ybGQh", b"hello world!", True),  # stray char in a long line: skip it
        (b"aGVs*bG8", b"", True),  # short line that is not base64: stop there
        (b"aGVsbG8gd29ybGQhx", b"hello world!", True),  # dangling sextet dropped
        (b"aGVsbG8gd29ybGQh==\naGVs", b"hello world!", True),  # data after padding
        (b"!!!!", b"", True),  # nothing decodable
    ],
)
def test_base64_variants(body, expected, broken):
    raw = (
        b"Content-Type: application/octet-stream\n"
        b"Content-Transfer-Encoding: base64\n\n" + body + b"\n"
    )
    pm = parse_message(raw)
    assert_well_formed(pm)
    assert len(pm.attachments) == 1
    assert pm.attachments[0].size == len(expected)
    assert ("bad-base64" in pm.defects) == broken


def test_unknown_transfer_encoding_uses_raw_bytes():
    raw = b"Content-Type: text/plain\nContent-Transfer-Encoding: x-weird\n\nhello there\n"
    pm = parse_message(raw)
    assert pm.texts == ["hello there\n"]
    assert "bad-cte:x-weird" in pm.defects


def test_uuencode_transfer_encoding():
    body = b"begin 644 a.txt\n%:&5L;&\\`\n`\nend\n"
    raw = b"Content-Type: text/plain\nContent-Transfer-Encoding: x-uuencode\n\n" + body
    pm = parse_message(raw)
    assert_well_formed(pm)
    assert len(pm.texts) == 1


# --------------------------------------------------------------------------- charsets


def test_unknown_charset_falls_back_with_defect():
    pm = parse("unknown_charset.eml")
    assert pm.texts == ["Naïve café owners say ½ price.\n"]  # utf-8 fallback worked
    assert pm.defects == ["bad-charset:x-foo"]


def test_invalid_bytes_for_declared_charset():
    pm = parse("invalid_bytes.eml")
    assert pm.texts == ["Café crème \u201cquoted\u201d.\n"]  # cp1252 fallback
    assert pm.defects == ["bad-charset:utf-8"]


def _text_message(charset: str, body: bytes, cte: str = "8bit") -> bytes:
    return (
        f"Content-Type: text/plain; charset={charset}\n"
        f"Content-Transfer-Encoding: {cte}\n\n".encode()
        + body
    )


@pytest.mark.parametrize(
    ("charset", "text"),
    [
        ("us-ascii", "plain ascii"),
        ("iso-8859-1", "déjà vu"),
        ("windows-1252", "\u201csmart\u201d \u2014 quotes"),
        ("gb2312", "中文邮件"),
        ("ks_c_5601-1987", "한국어 메일"),
        ("euc-kr", "한국어"),
        ("koi8-r", "Привет"),
        ("shift_jis", "日本語"),
        ('"UTF-8"', "quoted label ✓"),
    ],
)
def test_declared_charsets_decode(charset, text):
    codec = {
        "ks_c_5601-1987": "cp949",
        "gb2312": "gb2312",
        '"UTF-8"': "utf-8",
        "iso-8859-1": "latin-1",
    }.get(charset, charset)
    pm = parse_message(_text_message(charset, text.encode(codec)))
    assert pm.texts == [text]
    assert pm.defects == []


def test_iso_2022_jp_is_not_taken_for_ascii():
    body = "日本語".encode("iso2022_jp")
    assert body.isascii()  # which is why the ASCII fast path must not apply
    pm = parse_message(_text_message("iso-2022-jp", body, "7bit"))
    assert pm.texts == ["日本語"]


@pytest.mark.parametrize("charset", ["x-unknown", "unknown-8bit", "base64", "unicode_escape"])
def test_unusable_charset_labels(charset):
    pm = parse_message(_text_message(charset, "naïve \\n".encode()))
    assert pm.texts == ["naïve \\n"]
    assert pm.defects == [f"bad-charset:{charset}"]


def test_garbage_and_empty_charset_labels():
    pm = parse_message(_text_message('"=?garbage?"', b"caf\xe9"))
    assert pm.texts == ["café"]
    assert len(pm.defects) == 1 and pm.defects[0].startswith("bad-charset:")
    pm = parse_message(_text_message('""', b"caf\xc3\xa9"))
    assert pm.texts == ["café"] and pm.defects == []


def test_undeclared_charset_8bit_guesses_utf8_then_cp1252():
    head = b"Content-Type: text/plain\n\n"
    assert parse_message(head + "naïve".encode()).texts == ["naïve"]
    assert parse_message(head + b"na\xefve \x80").texts == ["naïve €"]
    assert parse_message(head + b"na\xefve \x81").texts == ["naïve \x81"]  # latin-1 last
    assert parse_message(head + b"x").defects == []


def test_mostly_valid_multibyte_text_keeps_declared_charset():
    # A GB2312 text with one bad byte: decoding as cp1252 would be mojibake.
    body = "中文邮件内容很长".encode("gb2312") * 10 + b"\xff"
    pm = parse_message(_text_message("gb2312", body))
    assert pm.texts[0].startswith("中文邮件内容很长")
    assert "bad-charset:gb2312" in pm.defects


# ---------------------------------------------------------------------------- headers


def test_rfc2047_headers():
    pm = parse("rfc2047.eml")
    assert pm.header("from") == "André <andre@example.fr>"
    assert pm.header("subject") == "Grüße aus München"  # B encoding
    # Q encoding, folded over two lines; whitespace between encoded-words dropped.
    assert pm.header("x-q") == "Café crème brûlée plain tail"
    # A utf-8 character split across two encoded-words is reassembled.
    assert pm.header("x-split") == "price €9"
    # Broken encoded-words stay literal instead of raising or vanishing.
    assert pm.header("x-broken") == "before =?utf-8?B?not*base64!?= after"
    assert pm.header("x-unterminated") == "=?utf-8?Q?never_closed"
    assert pm.header("x-unknown-charset") == "hello world"
    assert "bad-encoded-word" in pm.defects
    assert "bad-charset:x-bogus" in pm.defects


def test_raw_8bit_headers():
    raw = "Subject: Grüße\nX-Other: déjà\n\nbody\n".encode()
    pm = parse_message(raw)
    assert pm.header("subject") == "Grüße" and pm.header("x-other") == "déjà"
    assert "8bit-header" in pm.defects
    # Non-utf-8 raw bytes are decoded with the charset the body declares.
    raw = (
        b"Subject: " + "한국어".encode("cp949") + b"\n"
        b"Content-Type: text/plain; charset=euc-kr\n\nbody\n"
    )
    assert parse_message(raw).header("subject") == "한국어"


# ------------------------------------------------------------------------------- HTML


def test_multipart_alternative_with_html():
    pm = parse("alternative_html.eml")
    assert pm.content_types == ["text/plain", "text/html"]
    assert pm.html_parts == 1
    plain, html_text = pm.texts
    assert plain == "Weekly deals: see http://deals.example.com/week"
    # script, style and comments are dropped with their content
    for hidden in ("scriptword", "color: red", "commentword", "document.write", "<", ">b"):
        assert hidden not in html_text.replace("<today>", "")
    # entities unescaped; nbsp collapsed like other whitespace
    assert "Fish & Chips <today> only €5 each!" in html_text
    # block tags separate words, inline tags and comments do not
    assert "Save big" in html_text and "cell1 cell2" in html_text
    assert "Viagra and split" in html_text
    assert "  " not in html_text and "\n" not in html_text
    assert pm.link_hosts == [
        "deals.example.com",  # plain part
        "bg.example.net",  # background=
        "tracker.example.com",  # userinfo and port removed, lowercased
        "quoted.example.org",
        "unquoted.example.net",
        "proto-relative.example.com",  # //host
        "203.0.113.9",  # IP host kept as-is
        "form.example.com",  # form action=
        "www.visible.example.info",  # bare URL in visible text
    ]
    assert not any("mailto" in h for h in pm.link_hosts)  # mailto: is ignored


def test_base64_encoded_html_spam():
    pm = parse("base64_html_spam.eml")
    assert pm.html_parts == 1
    assert pm.texts == ["Cheap Meds Buy Viagra now!!! Click HERE"]
    assert pm.link_hosts == ["spam-pharmacy.example.biz", "198.51.100.7"]
    assert pm.defects == []


def test_html_to_text_basics():
    text, hosts = html_to_text(
        "<html><body><p>One</p><p>Two<br/>Three</p>"
        "<SCRIPT>bad()</SCRIPT><Style>.x{}</STYLE>a &lt; b &amp;&amp; c > d</body></html>"
    )
    assert text == "One Two Three a < b && c > d"
    assert hosts == []


def test_html_to_text_unclosed_constructs():
    assert html_to_text("before<script>never closed")[0] == "before"
    assert html_to_text("before<!-- never closed")[0] == "before"
    assert html_to_text("a < b and c<d")[0] == "a < b and c<d"  # not tags
    assert html_to_text("x <a href='http://e.com/'")[0] == "x <a href='http://e.com/'"


def test_html_to_text_invisible_characters_and_plain_input():
    assert html_to_text("V\u200biag\u00adra")[0] == "Viagra"
    assert html_to_text("V&shy;iagra &#86;iagra")[0] == "Viagra Viagra"
    assert html_to_text("") == ("", [])
    assert html_to_text("no markup   at\n all") == ("no markup at all", [])


@pytest.mark.parametrize(
    ("fragment", "hosts"),
    [
        ('<a href="http://a.example.com/x">', ["a.example.com"]),
        ("<a href=HTTPS://B.Example.COM>", ["b.example.com"]),
        ("<a href='http://u:p@c.example.com:81/'>", ["c.example.com"]),
        ('<a href="//d.example.com/x">', ["d.example.com"]),
        ('<a href="www.e.example.com/x">', ["www.e.example.com"]),
        ('<img src="http://192.0.2.33:8080/p.gif">', ["192.0.2.33"]),
        ('<a href="http://[2001:db8::1]:8080/">', ["[2001:db8::1]"]),
        ('<a href="&#104;ttp://entity.example.com/">', ["entity.example.com"]),
        ('<a href="http://%77%77%77.pct.example.com/">', ["www.pct.example.com"]),
        ('<a href="http:\\\\back.example.com\\x">', ["back.example.com"]),
        ('<a href="http://f.example.com?q=1">', ["f.example.com"]),
        ('<a href="http://g.example.com.">', ["g.example.com"]),
        ('<form action="https://h.example.com/p">', ["h.example.com"]),
        ('<td background="http://i.example.com/bg.gif">', ["i.example.com"]),
        ('<a href="mailto:x@mail.example.com">', []),
        ('<a href="javascript:void(0)">', []),
        ('<img src="cid:part1@x">', []),
        ('<a href="/relative">', []),
        ('<a href="#top">', []),
        ('<a href="http://">', []),
        ('<a href="http://bad host.com/">', []),
    ],
)
def test_html_link_hosts(fragment, hosts):
    assert html_to_text(fragment + "text</a>")[1] == hosts


def test_html_link_hosts_deduplicated_in_order():
    _, hosts = html_to_text(
        '<a href="http://b.com/1">x</a><a href="http://a.com/">y</a>'
        '<a href="http://B.com/2">z</a> see http://c.com/ and www.a.com'
    )
    assert hosts == ["b.com", "a.com", "c.com", "www.a.com"]


def test_plain_text_url_hosts():
    raw = (
        b"Content-Type: text/plain\n\n"
        b"Go to HTTP://UPPER.example.com/ or https://x.example.org:443/a,\n"
        b"also www.third.example.net. Not: mailto:a@b.example, ftp://f.example.com\n"
        b"<http://angle.example.com/>\n"
    )
    assert parse_message(raw).link_hosts == [
        "upper.example.com",
        "x.example.org",
        "www.third.example.net",
        "angle.example.com",
    ]


# ------------------------------------------------------------------ structure and limits


def test_attachments_with_rfc2231_and_rfc2047_filenames():
    pm = parse("attachment_rfc2231.eml")
    assert pm.texts == ["Please find the invoice attached."]
    assert pm.content_types == ["text/plain", "application/pdf", "image/gif", "text/plain"]
    pdf, gif, notes = pm.attachments
    assert pdf == Attachment("application/pdf", "€ Rechnung März.pdf", 9 + 1024)
    assert gif == Attachment("image/gif", "über.gif", 106)  # inline images count too
    # A text part with Content-Disposition: attachment is an attachment, not a text.
    assert notes.content_type == "text/plain" and notes.filename == "notes.txt"
    # The line break before a boundary belongs to the boundary (RFC 2046).
    assert notes.size == len(b"attachment text must not appear in texts")
    assert not any("must not appear" in t for t in pm.texts)
    assert pm.defects == []


def test_attachment_filename_variants():
    raw = (
        "Content-Type: multipart/mixed; boundary=B\n\n"
        "--B\nContent-Type: application/pdf\n"
        'Content-Disposition: attachment; filename="Grüße.pdf"\n\nxx\n'  # raw utf-8
        "--B\nContent-Type: application/zip; name=Ärger.zip\n\nxx\n"  # name= only
        "--B\nContent-Type: application/octet-stream\n"
        "Content-Disposition: attachment; filename*0*=utf-8''Teil%20;"
        ' filename*1="zwei.bin"\n\nxx\n'  # RFC 2231 continuations
        "--B\nContent-Type: image/png\n\nxx\n"  # no name at all
        "--B--\n"
    ).encode()
    names = [a.filename for a in parse_message(raw).attachments]
    assert names == ["Grüße.pdf", "Ärger.zip", "Teil zwei.bin", None]


def test_nested_message_rfc822():
    pm = parse("nested_rfc822.eml")
    assert pm.content_types == ["text/plain", "text/plain", "text/html"]
    assert pm.texts == [
        "See the forwarded message below.",
        "Inner plain text at http://inner.example.org/",
        "Inner html text",
    ]
    assert pm.html_parts == 1
    assert pm.link_hosts == ["inner.example.org"]
    # Only top-level headers are reported; the nested Subject is ignored.
    assert pm.header_all("subject") == ["Fwd: original"]


def test_truncated_multipart_missing_close_boundary():
    pm = parse("truncated_multipart.eml")
    assert pm.texts == ["First part is complete.", "Second part is cut o"]
    assert "mime:close-boundary-not-found" in pm.defects


def test_multipart_without_boundary_is_read_as_text():
    pm = parse("no_boundary.eml")
    assert pm.texts == ["The body of a multipart that forgot its boundary parameter.\n"]
    assert "mime:no-boundary-in-multipart" in pm.defects


def test_part_larger_than_max_part_bytes_is_truncated():
    body = ("€uro " * 100).encode()  # 3-byte characters: the cut lands mid-character
    raw = _text_message("utf-8", body)
    pm = parse_message(raw, max_part_bytes=100)
    assert "part-truncated" in pm.defects
    assert not any(d.startswith("bad-charset") for d in pm.defects)  # partial char dropped
    assert len(pm.texts[0].encode()) <= 100
    assert pm.texts[0].startswith("€uro €uro")
    assert "part-truncated" not in parse_message(raw).defects


def test_max_parts():
    parts = "".join(f"--B\nContent-Type: text/plain\n\npart {i}\n" for i in range(10))
    raw = f"Content-Type: multipart/mixed; boundary=B\n\n{parts}--B--\n".encode()
    pm = parse_message(raw, max_parts=4)
    assert pm.texts == ["part 0", "part 1", "part 2", "part 3"]
    assert len(pm.content_types) == 4
    assert "too-many-parts" in pm.defects
    assert "too-many-parts" not in parse_message(raw).defects


@pytest.mark.parametrize("depth", [40, 3000])
def test_deep_nesting_never_raises(depth):
    head = "".join(
        f"--b{i}\nContent-Type: multipart/mixed; boundary=b{i + 1}\n\n" for i in range(depth)
    )
    raw = f"Content-Type: multipart/mixed; boundary=b0\n\n{head}--b{depth}\n\ndeep\n".encode()
    pm = parse_message(raw)
    assert_well_formed(pm)
    assert "too-deep" in pm.defects or any(d.startswith("parse-error") for d in pm.defects)


def test_message_delivery_status_is_not_split_into_texts():
    raw = (
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=R\n\n"
        b"--R\nContent-Type: text/plain\n\nDelivery failed.\n"
        b"--R\nContent-Type: message/delivery-status\n\n"
        b"Reporting-MTA: dns; mx.example.com\n\nFinal-Recipient: rfc822; a@b.example\n"
        b"--R--\n"
    )
    pm = parse_message(raw)
    assert pm.texts == ["Delivery failed."]
    assert pm.content_types == ["text/plain", "message/delivery-status"]
    assert pm.attachments == [Attachment("message/delivery-status", None, 0)]


def test_unexpected_exception_becomes_parse_error(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(message_mod, "_walk_leaves", boom)
    pm = parse_message(b"From x  Mon\nSubject: hi\n\nthe body\r\nline two\n")
    assert pm.defects == ["parse-error:RuntimeError"]
    assert pm.texts == ["the body\r\nline two\n"]
    pm = parse_message(b"no blank line at all")
    assert pm.texts == ["no blank line at all"]


# --------------------------------------------------------------------------- robustness


def test_binary_junk():
    rng = random.Random(20020902)
    for size in (1, 10, 100, 1000, 10000):
        junk = bytes(rng.getrandbits(8) for _ in range(size))
        pm = parse_message(junk)
        assert_well_formed(pm)


def test_junk_headers_and_bodies():
    samples = [
        b"\x00\x00\x00",
        b":\n:\n\n",
        b"Content-Type: \xff\xfe/\x00; charset=\xff\n\n\xff\xfe",
        b"Content-Type: text/html; charset=utf-16\n\n\xff\xfeh\x00i\x00",
        b"Content-Type: text/html; charset=utf-16\n\n\xff",
        b'Content-Type: multipart/mixed; boundary=""\n\n--\n\n----\n',
        b"Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\naGk=\n",
        b"Content-Type: text/plain; charset*=utf-8''%FF\n\nx",
        b"Content-Disposition: attachment; filename*0*=bogus''%ZZ; filename*1=x\n\nx",
        b"Subject: =?utf-8?B?=?=\n\n",
        b"Subject: =??B??=\n\n",
        b"=?utf-8?Q?x?=: header name that is an encoded word\n\nbody",
        b"Subject: " + b"=?utf-8?B?YQ==?=" * 2000 + b"\n\n",
        b"\n\n\n\nbody after blank lines",
        b"Content-Type: text/plain\n\n" + b"<" * 10000,
        b"Content-Type: text/html\n\n" + b"<a href=" * 2000,
    ]
    for raw in samples:
        assert_well_formed(parse_message(raw))


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """Apply 1-4 random corruptions of the kinds real mail transport produces."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:  # flip bytes
            for _ in range(rng.randint(1, 20)):
                buf[rng.randrange(len(buf))] = rng.getrandbits(8)
        elif op == 1:  # delete a slice
            del buf[pos : pos + rng.randint(1, 200)]
        elif op == 2:  # truncate
            del buf[pos:]
        elif op == 3:  # duplicate a slice
            buf[pos:pos] = buf[pos : pos + rng.randint(1, 300)]
        elif op == 4:  # insert random junk
            buf[pos:pos] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 50)))
        elif op == 5:  # insert MIME-significant text
            buf[pos:pos] = rng.choice(
                [b"\n--", b"=?utf-8?B?", b"?=", b"\n\n", b"\r", b"boundary=", b"<!--", b"<script"]
            )
        else:  # switch line ends
            buf = bytearray(bytes(buf).replace(b"\n", b"\r\n"))
    return bytes(buf)


def test_property_never_raises_on_mutated_fixtures():
    rng = random.Random(12345)
    for _ in range(200):
        raw = _mutate(rng.choice(FIXTURE_FILES).read_bytes(), rng)
        pm = parse_message(raw)
        assert_well_formed(pm)
        assert not any(d.startswith("parse-error") for d in pm.defects), raw[:200]


def test_every_fixture_is_well_formed():
    for path in FIXTURE_FILES:
        assert_well_formed(parse_message(path.read_bytes()))


def test_base64_body_in_fixture_round_trips():
    # Guard against the fixture generator drifting: the encoded HTML is what we expect.
    raw = load("base64_html_spam.eml")
    body = raw.split(b"\n\n", 1)[1]
    assert base64.b64decode(body).startswith(b"<html><head><title>Cheap Meds")
