"""Add, replace and remove header fields in the raw bytes of a message.

A filter that adds a verdict header must hand every other byte back exactly
as it came: 8-bit bytes, CRLF or LF line ends, a missing final newline, a
leading mbox ``From `` line, a message with no body, even input that is not
mail at all. So nothing here parses the message into objects and serialises
it again: :func:`set_header_fields` finds where the header section ends,
cuts out existing copies of the named fields (with their folded continuation
lines) and splices new lines in. It is a pure function on bytes, shared by
the pipe filter and any other service that marks messages (a scoring server).

Where the new lines go
    Just before the line that ends the header section: the empty line that
    separates header and body, or the first line that is not a header field
    (mail parsers start the body there too), or the end of the input when it
    is all header fields and ends with a line end. When the input ends inside
    a header line with no line end, or has no header fields at all before its
    first non-header line, the new lines go to the very top (after an mbox
    ``From `` line), where every parser reads them as header fields.

Which line end
    The one the message uses: the first line end of the input (CRLF or LF);
    LF when the input has none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = ["HeaderSection", "find_header_section", "set_header_fields", "strip_header_fields"]

# A header field line: a field name of printable ASCII except ':' (RFC 5322),
# optional white space (obsolete syntax, still seen), then the colon.
_FIELD = re.compile(rb"([!-9;-~]+)[ \t]*:")


class HeaderSection:
    """Where the parts of a raw message are.

    ``start``: offset of the first header line (after an mbox ``From `` line).
    ``end``: offset just after the last header field line (its line end
    included); the new lines are inserted here. ``complete``: False when the
    scan met the end of the input inside a header line, so ``end`` could not
    be placed after it. ``fields``: (name in lower case, start, stop) of each
    header field with its continuation lines. ``eol``: the line end to use.
    """

    __slots__ = ("start", "end", "complete", "fields", "eol")

    def __init__(self, start: int, end: int, complete: bool,
                 fields: list[tuple[bytes, int, int]], eol: bytes) -> None:
        self.start = start
        self.end = end
        self.complete = complete
        self.fields = fields
        self.eol = eol


def _eol_of(raw: bytes) -> bytes:
    nl = raw.find(b"\n")
    return b"\r\n" if nl > 0 and raw[nl - 1:nl] == b"\r" else b"\n"


def find_header_section(raw: bytes, at_eof: bool = True) -> HeaderSection:
    """Scan the header section of ``raw``.

    ``at_eof`` says whether ``raw`` is the whole message (True) or only its
    first bytes (False, for messages too big to hold): then a header line cut
    off by the end of ``raw`` is never taken as complete.
    """
    eol = _eol_of(raw)
    pos = 0
    if raw.startswith(b"From "):
        nl = raw.find(b"\n")
        if nl < 0:  # one line, no line end: there is nowhere after it to insert
            return HeaderSection(0, 0, False, [], eol)
        pos = nl + 1
    start = pos
    fields: list[tuple[bytes, int, int]] = []
    n = len(raw)
    while pos < n:
        nl = raw.find(b"\n", pos)
        if nl < 0:
            # The last line has no line end: a complete message may end in a
            # header line, but then nothing can be inserted after it.
            if at_eof:
                m = _FIELD.match(raw, pos)
                if m:
                    fields.append((m.group(1).lower(), pos, n))
                elif raw[pos:pos + 1] in (b" ", b"\t") and fields:
                    name, fstart, _ = fields[-1]
                    fields[-1] = (name, fstart, n)
            return HeaderSection(start, start, False, fields, eol)
        line_end = nl + 1
        line = raw[pos:line_end]
        if line in (b"\n", b"\r\n"):
            break  # the empty line before the body
        if line[:1] in (b" ", b"\t"):
            if fields:
                name, fstart, _ = fields[-1]
                fields[-1] = (name, fstart, line_end)
            else:
                # A first line that continues nothing: parsers (Python's
                # FirstHeaderLineIsContinuationDefect) skip it and read on.
                fields.append((b"", pos, line_end))
        else:
            m = _FIELD.match(raw, pos, line_end)
            if not m:
                break  # not a header field: the body starts here for parsers
            fields.append((m.group(1).lower(), pos, line_end))
        pos = line_end
    if pos >= n and not at_eof:
        # Ran into the end of a partial read: the next bytes may continue the
        # last field, so do not insert between them.
        return HeaderSection(start, start, False, fields, eol)
    if not fields:
        return HeaderSection(start, start, True, fields, eol)
    return HeaderSection(start, pos, True, fields, eol)


def tag_subject(raw: bytes, tag: str, at_eof: bool = True) -> bytes:
    """``raw`` with ``tag`` put at the start of its Subject's value, as SpamAssassin's
    ``rewrite_header Subject`` does; a message without a Subject gets ``Subject: TAG``,
    one whose Subject already starts with the tag is left as it is (a message filtered
    twice is tagged once). Only those bytes change: the rest, body included, stays."""
    t = tag.encode("ascii")
    sec = find_header_section(raw, at_eof)
    for name, a, b in sec.fields:
        if name == b"subject":
            k = raw.index(b":", a, b) + 1
            while k < b and raw[k:k + 1] in (b" ", b"\t"):
                k += 1
            if raw[k:k + len(t.rstrip())] == t.rstrip():
                return raw
            return raw[:k] + t + raw[k:]
    return set_header_fields(raw, [("Subject", tag.strip())], (), at_eof)


def strip_header_fields(raw: bytes, names: Iterable[str], at_eof: bool = True) -> bytes:
    """``raw`` without the header fields called ``names`` (any case), folded
    continuation lines included; everything else unchanged."""
    return set_header_fields(raw, [], names, at_eof)


def set_header_fields(raw: bytes, new_fields: Sequence[tuple[str, str]],
                      remove: Iterable[str] = (), at_eof: bool = True) -> bytes:
    """Insert ``new_fields`` ((name, value) pairs, ASCII) into the header of
    ``raw`` after removing every existing field whose name is in ``remove``
    (case-insensitive). See the module docstring for where they go.

    With ``at_eof=False`` (``raw`` is only the start of a message) a field is
    removed only if it ends before the end of ``raw``, since its continuation
    lines might go on beyond it.
    """
    sec = find_header_section(raw, at_eof)
    drop = {r.lower().encode("ascii") for r in remove}
    # Never cut a field that touches the end of a partial read.
    cut = [(a, b) for name, a, b in sec.fields if name in drop and (at_eof or b < len(raw))]
    insert = b"".join(
        name.encode("ascii") + b": " + value.encode("ascii") + sec.eol for name, value in new_fields
    )
    where = sec.end if sec.complete else sec.start
    out: list[bytes] = []
    pos = 0
    inserted = not insert
    for a, b in cut:
        if not inserted and where <= a:
            out.append(raw[pos:where])
            out.append(insert)
            pos = where
            inserted = True
        out.append(raw[pos:a])
        pos = b
    if not inserted:
        out.append(raw[pos:where])
        out.append(insert)
        pos = where
    out.append(raw[pos:])
    return b"".join(out)
