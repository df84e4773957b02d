"""Issue 25, point 6: the habits a SpamAssassin or bogofilter user brings. Learning a
message as the other class replaces its lesson (sa-learn; bogofilter -Sn/-Ns), so one
--forget removes it; learning it again as the same class does nothing and says so (spamc:
"already learned")."""

from __future__ import annotations

import shutil

from nnspam.front import cli
from nnspam.model.core import Model, resolve_model_path
from nnspam.model.journal import message_key

from conftest import make_message


def _model(tmp_path):
    d = tmp_path / "model"
    shutil.copytree(resolve_model_path("default"), d)
    return d


def test_relearning_as_the_other_class_replaces_the_lesson(tmp_path, capsys):
    d = _model(tmp_path)
    msg = tmp_path / "m.eml"
    msg.write_bytes(make_message("quarterly numbers", "the figures you asked for, bob"))
    before = Model.load(d)
    toks = before.tokens(msg.read_bytes())
    z0 = float(before.judge_tokens([toks])[1][0])
    assert cli.main(["learn", "-m", str(d), "--ham", str(msg)]) == 0
    assert cli.main(["learn", "-m", str(d), "--spam", str(msg)]) == 0
    assert "learned before as the other class" in capsys.readouterr().err
    m = Model.load(d)
    entries = [e for e in m.journal.entries if e.key == message_key(toks)]
    assert [e.label for e in entries] == ["spam"]  # the ham lesson is gone
    assert m.summary["learned"] == {"ham": 0, "spam": 1}
    assert float(m.judge_tokens([toks])[1][0]) > 0  # spam now
    # one forget takes the message back to where it started
    assert cli.main(["learn", "-m", str(d), "--forget", str(msg)]) == 0
    m = Model.load(d)
    assert m.journal.find(message_key(toks)) is None
    assert abs(float(m.judge_tokens([toks])[1][0]) - z0) < 1e-4


def test_learning_the_same_class_twice_is_already_learned(tmp_path, capsys):
    d = _model(tmp_path)
    msg = tmp_path / "m.eml"
    msg.write_bytes(make_message("cheap pills", "buy now, best price, click here"))
    assert cli.main(["learn", "-m", str(d), "--spam", str(msg)]) == 0
    capsys.readouterr()
    stamp = (d / "weights.npz").stat().st_mtime_ns
    assert cli.main(["learn", "-m", str(d), "--spam", str(msg)]) == 0
    err = capsys.readouterr().err
    assert "learned 0 spam message(s)" in err and "1 already learned as spam" in err
    m = Model.load(d)
    assert len(m.journal) == 1 and m.summary["learned"]["spam"] == 1
    assert (d / "weights.npz").stat().st_mtime_ns == stamp  # not even saved again
