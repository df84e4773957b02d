"""Issue 25, point 2: with ``filter.unsure`` set, unsure means the same in every command.
``classify`` prints UNSURE, ``test`` counts the band in its table, and ``serve`` no longer
answers ``Spam: True`` for a message its own X-NNSpam-Status calls Unsure. SpamAssassin's
clients (spamc -c/-E, Exim's ``spam =``, spamass-milter) take that answer as a verdict, so
spam there starts at the top of the band (:func:`nnspam.services.verdict.sa_threshold`)."""

from __future__ import annotations

import pytest

from nnspam.front import cli
from nnspam.services.spamd.protocol import score_line
from nnspam.services.verdict import sa_threshold

from conftest import Server, make_message

# the shipped model scores it about 0.75: unsure in [0.3, 0.9), spam at 0.5 without a band
UNSURE_MSG = make_message("Great offer for you",
                          "Click here to get a free prize, limited time offer, act now")
CFG = "filter:\n  unsure: [0.3, 0.9]\n"


def test_sa_threshold_and_the_spam_line():
    assert sa_threshold(0.5, None) == 0.5 and sa_threshold(0.5, (0.3, 0.9)) == 0.9
    assert score_line(0.75, sa_threshold(0.5, (0.3, 0.9)), 10.0) == b"Spam: False ; 7.5 / 9.0"
    assert score_line(0.95, sa_threshold(0.5, (0.3, 0.9)), 10.0) == b"Spam: True ; 9.5 / 9.0"
    assert score_line(0.75, sa_threshold(0.5, None), 10.0) == b"Spam: True ; 7.5 / 5.0"


def test_classify_prints_unsure(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text(CFG)
    (tmp_path / "m.eml").write_bytes(UNSURE_MSG)
    assert cli.main(["classify", "-c", str(tmp_path / "config.yaml"), "-m", "default",
                     str(tmp_path / "m.eml")]) == 0
    assert capsys.readouterr().out.split()[0] == "UNSURE"
    assert cli.main(["classify", "-c", str(tmp_path / "config.yaml"), "-m", "default",
                     "--format", "tsv", str(tmp_path / "m.eml")]) == 0
    assert capsys.readouterr().out.rstrip("\n").split("\t")[2] == "unsure"


def test_test_counts_the_band(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text(CFG)
    for label, raw in (("ham", make_message("lunch", "see you at noon, bob")),
                       ("spam", UNSURE_MSG)):
        d = tmp_path / label
        d.mkdir()
        (d / "1").write_bytes(raw)
    assert cli.main(["test", "-c", str(tmp_path / "config.yaml"), "-m", "default", "--ham",
                     str(tmp_path / "ham"), "--spam", str(tmp_path / "spam"), "--errors"]) == 0
    out = capsys.readouterr().out
    row = [line for line in out.splitlines() if line.strip().startswith("Unsure [0.3, 0.9)")]
    assert len(row) == 1 and " 0 / 1 " in row[0] + " ", out
    assert "unsure (spam)" in out


def test_serve_answers_unsure_as_not_spam(tmp_path):
    (tmp_path / "config.yaml").write_text(CFG + "  spamassassin_headers: true\n")
    srv = Server(tmp_path, cfg=tmp_path / "config.yaml")
    try:
        raw = UNSURE_MSG
        got = srv.request(f"PROCESS SPAMC/1.5\r\nContent-length: {len(raw)}\r\n\r\n".encode()
                          + raw)
        head = got.split(b"\r\n\r\n", 1)[0]
        assert b"Spam: False ; 7." in head and b"/ 9.0" in head, head
        assert b"X-NNSpam-Status: Unsure" in got
        assert b"X-Spam-Flag: YES" not in got and b"X-Spam-Status: No," in got
    finally:
        srv.stop()


@pytest.mark.parametrize("args, rc", [(["-c"], 0), (["-E"], 0)])
def test_spamc_exit_codes_for_unsure(tmp_path, args, rc):
    """spamc -c and -E exit 1 for spam: an unsure message passes (exit 0)."""
    (tmp_path / "config.yaml").write_text(CFG)
    srv = Server(tmp_path, cfg=tmp_path / "config.yaml")
    try:
        assert srv.spamc(args, UNSURE_MSG).returncode == rc
    finally:
        srv.stop()
