"""Issue 25, point 8: a writable copy of the shipped model (``nnspam model copy``), the
journal's subject column shows the Subject line, ``inspect`` prints a summary to read
(``--json`` the raw one)."""

from __future__ import annotations

import json

from nnspam.front import cli
from nnspam.model.core import Model, is_shipped
from nnspam.model.journal import subject_of

from conftest import make_message


def test_model_copy_makes_a_writable_model_that_learns(tmp_path, capsys):
    dest = tmp_path / "mine"
    assert cli.main(["model", "copy", str(dest)]) == 0
    assert not is_shipped(dest)
    m, shipped = Model.load(dest), Model.load("default")
    toks = shipped.tokens(make_message("hello", "see you at noon"))
    assert (m.judge_tokens([toks])[1] == shipped.judge_tokens([toks])[1]).all()
    msg = tmp_path / "m.eml"
    msg.write_bytes(make_message("cheap pills", "buy now"))
    assert cli.main(["learn", "-m", str(dest), "--spam", str(msg)]) == 0
    assert Model.load(dest).summary["learned"]["spam"] == 1
    # never over an existing model, and a missing source is one line, exit 2
    assert cli.main(["model", "copy", "default", str(dest)]) == 2
    assert cli.main(["model", "copy", str(tmp_path / "nope"), str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "exists; give a new directory" in err and "Traceback" not in err


def test_the_journal_shows_the_subject_line(tmp_path):
    m = Model.load("default")
    raw = (b"From: a@example.org\nSubject: =?utf-8?q?Caf=C3=A9?= menu\n for today\n\n"
           b"the menu\n")
    assert subject_of(m.tokens(raw)) == "Café menu for today"
    assert subject_of(["subject:old", "subject:style"]) == "old style"  # no head token


def test_inspect_prints_a_summary_and_json_on_request(capsys):
    assert cli.main(["inspect", "-m", "default", "--words", "1"]) == 0
    out = capsys.readouterr().out
    assert "on 2862 ham and 1329 spam messages" in out and '"trained_at"' not in out
    assert "3 networks of" in out
    assert cli.main(["inspect", "-m", "default", "--words", "1", "--json"]) == 0
    out = capsys.readouterr().out
    body = out.split("Training (model.json's summary):\n", 1)[1].split("\nInput words", 1)[0]
    assert json.loads("{" + body + "}")["messages"] == {"ham": 2862, "spam": 1329}


def test_progress_lines_when_asked(tmp_path, capsys):
    """Issue 25, point 9: test and classify say how far they are (--progress), and say
    nothing of it when not asked and stderr is no terminal."""
    for label in ("ham", "spam"):
        d = tmp_path / label
        d.mkdir()
        for i in range(3):
            (d / str(i)).write_bytes(make_message(f"{label} {i}", "hello there"))
    assert cli.main(["test", "-m", "default", "--ham", str(tmp_path / "ham"), "--spam",
                     str(tmp_path / "spam"), "--progress"]) == 0
    assert "testing" in capsys.readouterr().err
    assert cli.main(["classify", "-m", "default", str(tmp_path / "ham")]) == 0
    assert "classifying" not in capsys.readouterr().err
    assert cli.main(["classify", "-m", "default", "--progress", str(tmp_path / "ham")]) == 0
    assert "classifying" in capsys.readouterr().err


def test_the_dashboard_has_its_own_section():
    """Issue 25, point 8: the email dashboard's password is dashboard.password_hash (made by
    nnspam hash-password); sms.dashboard, where it lived, is read when it is unset."""
    from nnspam.config import DEFAULTS, dashboard_settings, merge

    new = merge(DEFAULTS, {"dashboard": {"password_hash": "scrypt:new"},
                           "sms": {"dashboard": {"password_hash": "scrypt:old"}}})
    assert dashboard_settings(new)["password_hash"] == "scrypt:new"
    old = merge(DEFAULTS, {"sms": {"dashboard": {"password_hash": "scrypt:old",
                                                 "page_size": 10}}})
    assert dashboard_settings(old) == {"password_hash": "scrypt:old", "page_size": 10}
    assert cli.build_parser().parse_args(["hash-password", "--stdin"]).stdin
