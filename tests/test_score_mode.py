"""Issue 25, point 7: SpamAssassin's open score scale. With ``serve.score_mode: log-odds``
the points are the threshold's 5.0 plus one point per logit beyond it, so rules written
for SpamAssassin's scale (Exim's ``$spam_score_int > 120``) fire on sure spam, where
``10 x spamicity`` never passes 10; the server, the pipe filter's fields and the filter's
path through the server agree."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from nnspam.services.scoring import spamassassin_fields
from nnspam.services.spamd.protocol import score_line
from nnspam.services.verdict import sa_points

from conftest import Server, make_message


def test_sa_points():
    assert sa_points(0.5, 0.5, 10) == 5.0 == sa_points(0.5, 0.5, 10, "log-odds")
    assert sa_points(0.999999, 0.5, 10) == pytest.approx(10.0, abs=1e-4)  # never above 10
    sure = 1 / (1 + math.exp(-7.5))
    assert sa_points(sure, 0.5, 10, "log-odds") == pytest.approx(12.5)  # > 12: Exim's 120
    assert sa_points(1 / (1 + math.exp(3)), 0.5, 10, "log-odds") == pytest.approx(2.0)
    assert sa_points(0.0, 0.5, 10, "log-odds") < -20  # clear ham is negative, as in SA
    assert sa_points(1.0, 0.5, 10, "log-odds") > 30
    assert score_line(sure, 0.5, 10.0, "log-odds") == b"Spam: True ; 12.5 / 5.0"
    fields = dict(spamassassin_fields(sure, 0.5, 10.0, "log-odds"))
    assert fields["X-Spam-Status"].startswith("Yes, score=12.5 required=5.0")
    assert fields["X-Spam-Level"] == "*" * 12
    assert dict(spamassassin_fields(0.01, 0.5, 10.0, "log-odds"))["X-Spam-Level"] == ""


def test_serve_and_filter_in_log_odds(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("filter:\n  spamassassin_headers: true\nserve:\n  score_mode: log-odds\n")
    spam = make_message("WIN CASH NOW", "Click here to get a free prize, limited time offer, "
                        "act now, viagra casino winner, cheap pills, 100% free")
    srv = Server(tmp_path, cfg=cfg)
    try:
        got = srv.request(f"CHECK SPAMC/1.5\r\nContent-length: {len(spam)}\r\n\r\n".encode()
                          + spam)
        line = [x for x in got.split(b"\r\n") if x.startswith(b"Spam:")][0]
        pts = float(line.split(b";")[1].split(b"/")[0])
        inproc = subprocess.run([sys.executable, "-m", "nnspam", "filter", "-c", str(cfg),
                                 "-m", "default"], input=spam, capture_output=True, timeout=60)
        cfg2 = tmp_path / "c2.yaml"
        cfg2.write_text(cfg.read_text().replace("filter:\n", f"filter:\n  server: {srv.sock}\n"))
        via = subprocess.run([sys.executable, "-m", "nnspam", "filter", "-c", str(cfg2),
                              "-m", "default"], input=spam, capture_output=True, timeout=60)
    finally:
        srv.stop()
    status = [x for x in inproc.stdout.split(b"\n") if x.startswith(b"X-Spam-Status:")][0]
    score = float(status.split(b"score=")[1].split()[0])
    assert abs(score - pts) <= 0.1
    assert via.stdout == inproc.stdout and b"not usable" not in via.stderr
