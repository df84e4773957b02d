"""Issue 25, point 7: ``filter.rewrite_subject`` tags a spam's Subject as SpamAssassin's
``rewrite_header Subject`` does, in the pipe filter and in the server's PROCESS alike,
changing only those bytes."""

from __future__ import annotations

import pytest

from nnspam.mail.headers import tag_subject
from nnspam.services.scoring import classify, settings

from conftest import Server, make_message


@pytest.mark.parametrize("raw, want", [
    (b"From: a\nSubject: hello\n\nbody\n", b"From: a\nSubject: [SPAM] hello\n\nbody\n"),
    (b"Subject:hello\r\n\r\nb", b"Subject:[SPAM] hello\r\n\r\nb"),
    (b"Subject: [SPAM] hello\n\nb", b"Subject: [SPAM] hello\n\nb"),  # not twice
    (b"Subject: =?utf-8?q?Caf=C3=A9?=\n\tfolded\n\nb",
     b"Subject: [SPAM] =?utf-8?q?Caf=C3=A9?=\n\tfolded\n\nb"),
    (b"From: a\n\nbody", b"From: a\nSubject: [SPAM]\n\nbody"),
])
def test_tag_subject(raw, want):
    assert tag_subject(raw, "[SPAM] ") == want


def test_the_filter_tags_spam_only():
    raw = b"From: a@example.org\nSubject: offer\n\nbuy now\n"
    spam = classify(raw, lambda r: 0.97, 0.5, rewrite_subject="[SPAM] ")
    assert b"\nSubject: [SPAM] offer\n" in spam.output and spam.output.endswith(b"buy now\n")
    for sp, band in ((0.2, None), (0.7, (0.3, 0.9))):  # ham, unsure: untouched Subject
        out = classify(raw, lambda r, s=sp: s, 0.5, band, rewrite_subject="[SPAM] ").output
        assert b"\nSubject: offer\n" in out


@pytest.mark.parametrize("bad", ["", "   ", "x\ny", "\u00e9t\u00e9", "x" * 65, 3])
def test_a_bad_tag_is_a_config_error(bad):
    from nnspam.config import DEFAULTS, merge

    with pytest.raises(ValueError, match="rewrite_subject"):
        settings(merge(DEFAULTS, {"filter": {"rewrite_subject": bad}}), None)


def test_serve_and_the_filter_through_it_tag_alike(tmp_path):
    """The server's PROCESS tags the spam, and nnspam filter --server gives the same bytes
    as the in-process filter (its check of the server's answer knows the tag)."""
    import subprocess
    import sys

    cfg = tmp_path / "config.yaml"
    cfg.write_text('filter:\n  rewrite_subject: "[SPAM] "\n')
    raw = make_message("Great offer for you",
                       "Click here to get a free prize, limited time offer, act now")
    srv = Server(tmp_path, cfg=cfg)
    try:
        got = srv.request(f"PROCESS SPAMC/1.5\r\nContent-length: {len(raw)}\r\n\r\n".encode()
                          + raw)
        assert b"Subject: [SPAM] Great offer for you" in got
        inproc = subprocess.run([sys.executable, "-m", "nnspam", "filter", "-c", str(cfg),
                                 "-m", "default"], input=raw, capture_output=True, timeout=60)
        cfg2 = tmp_path / "c2.yaml"
        cfg2.write_text(cfg.read_text() + f"  server: {srv.sock}\n")
        via = subprocess.run([sys.executable, "-m", "nnspam", "filter", "-c", str(cfg2),
                              "-m", "default"], input=raw, capture_output=True, timeout=60)
        assert inproc.stdout == via.stdout and b"Subject: [SPAM] Great" in via.stdout
        assert b"not usable" not in via.stderr and b"in-process" not in via.stderr  # taken
    finally:
        srv.stop()
