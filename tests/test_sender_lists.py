"""Issue 25, point 7: the user's allow and deny lists of senders, applied before the model
in every front: the pipe filter, the server, the daemon's Sorter and classify."""

from __future__ import annotations

import pytest

from nnspam.config import DEFAULTS, ConfigError, load_config, merge
from nnspam.front import cli
from nnspam.services.scoring import classify, model_scorer, settings
from nnspam.services.verdict import HAM, SPAM, SenderLists, score_tokens

from conftest import Server, make_message

SPAMMY = ("WIN CASH NOW", "Click here to get a free prize, limited time offer, act now, "
          "viagra casino winner, cheap pills, 100% free")


def test_matching(shipped):
    lists = SenderLists(allow=["boss@corp.example", "@friends.example"],
                        deny=["spam.example", "boss@corp.example"])
    toks = {s: shipped.tokens(make_message("x", "y", sender=s)) for s in (
        "boss@corp.example", "Boss@CORP.example", "amy@friends.example",
        "bob@mail.friends.example", "x@spam.example", "y@deep.spam.example",
        "z@notspam.example", "other@corp.example")}
    got = {s: lists.verdict(t) for s, t in toks.items()}
    assert got == {"boss@corp.example": HAM, "Boss@CORP.example": HAM,  # allow wins
                   "amy@friends.example": HAM, "bob@mail.friends.example": HAM,
                   "x@spam.example": SPAM, "y@deep.spam.example": SPAM,
                   "z@notspam.example": None, "other@corp.example": None}


def test_score_tokens_and_the_filter(shipped):
    raw = make_message(*SPAMMY, sender="newsletter@friends.example")
    cfg = merge(DEFAULTS, {"lists": {"allow": ["friends.example"]}})
    s = settings(cfg, None)
    toks = shipped.tokens(raw)
    assert score_tokens(shipped, [toks], 0.5)[0][1] == "spam"  # the model alone
    assert score_tokens(shipped, [toks], 0.5, lists=s.lists)[0] == (0.0, "ham")
    res = classify(raw, model_scorer(shipped, s), s.threshold)
    assert res.verdict == "ham" and b"X-NNSpam-Status: No, spamicity=0.000" in res.output
    deny = settings(merge(DEFAULTS, {"lists": {"deny": ["@corp.example"]}}), None)
    ham = make_message("lunch", "see you at noon", sender="bob@corp.example")
    assert classify(ham, model_scorer(shipped, deny), 0.5).verdict == "spam"


def test_bad_lists_are_config_errors(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lists:\n  allow: bob@example.org\n")  # a string, not a list
    with pytest.raises(ConfigError, match="lists.allow"):
        load_config(f)
    f.write_text("lists:\n  deny: ['two words']\n")
    with pytest.raises(ConfigError, match="lists.deny"):
        load_config(f)


def test_classify_and_serve_use_the_lists(tmp_path, capsys):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("lists:\n  allow: [friends.example]\n")
    raw = make_message(*SPAMMY, sender="news@friends.example")
    (tmp_path / "m.eml").write_bytes(raw)
    assert cli.main(["classify", "-c", str(cfg), "-m", "default", str(tmp_path / "m.eml")]) == 0
    assert capsys.readouterr().out.split()[:2] == ["HAM", "0.000000"]
    srv = Server(tmp_path, cfg=cfg)
    try:
        assert srv.check(raw) == 0.0
    finally:
        srv.stop()


def test_the_daemon_s_sorter_files_by_the_lists(shipped, tmp_path):
    """A ham from a denied domain goes to Junk; a spammy message from an allowed one stays."""
    from nnspam.mail import maildir as md
    from nnspam.services.delivery.sorter import Sorter
    from nnspam.services.delivery.state import State

    cfg = merge(DEFAULTS, {"lists": {"deny": ["corp.example"], "allow": ["friends.example"]}})
    box = md.ensure_maildir(tmp_path / "Maildir")
    sorter = Sorter.from_config(cfg, shipped, State(tmp_path / "s.sqlite3"), model_name=None)
    ham = md.deliver(box, make_message("lunch", "see you at noon", sender="bob@corp.example"))
    spam = md.deliver(box, make_message(*SPAMMY, sender="news@friends.example"))
    assert sorter.handle_new(box, ham) == "spam"
    assert sorter.handle_new(box, spam) == "ham"
    assert md.find_message(box / ".Junk", md.base_name(ham.name)) is not None


def test_serve_reads_each_user_s_own_lists(tmp_path):
    """serve.user_lists: each spamc user's own file, added to the site's lists:, read again
    when it changes; a missing file adds nothing, a bad one is logged and adds nothing, and
    a hostile user name never becomes a path."""
    lists = tmp_path / "lists"
    lists.mkdir()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"lists:\n  deny: [corp.example]\nserve:\n  user_lists: {lists}/%u.yaml\n")
    (lists / "amy.yaml").write_text("allow: [friends.example]\ndeny: ['bob@home.example']\n")
    spam = make_message(*SPAMMY, sender="news@friends.example")
    ham = make_message("lunch", "see you at noon", sender="bob@home.example")
    site_denied = make_message("lunch", "see you at noon", sender="x@corp.example")
    srv = Server(tmp_path, cfg=cfg)
    try:
        assert srv.check(spam, "amy") == 0.0  # amy allows friends.example
        assert srv.check(spam, "carl") > 5.0  # carl has no file: the model decides
        assert srv.check(ham, "amy") == 10.0  # amy denies bob@home.example
        assert srv.check(ham, "carl") < 5.0
        assert srv.check(site_denied, "amy") == 10.0  # the site's deny applies to amy too
        (lists / "amy.yaml").write_text("allow: []\n")  # amy changes her mind
        assert srv.check(spam, "amy") > 5.0
        (lists / "carl.yaml").write_text("allow: friends.example\n")  # not a list
        assert srv.check(spam, "carl") > 5.0
        got = srv.request(b"CHECK SPAMC/1.5\r\nContent-length: 1\r\nUser: ../amy\r\n\r\nx")
        assert b"EX_NOUSER" in got or b" 67 " in got
    finally:
        srv.stop()
    assert "carl.yaml not used" in srv.log() and "must hold 'allow:' and 'deny:'" in srv.log()
