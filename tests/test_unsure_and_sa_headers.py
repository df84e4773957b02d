"""Three verdicts and SpamAssassin's fields, alike from every front.

The unsure band (``filter.unsure: [low, high]``) makes ``X-NNSpam-Status: Unsure`` (no
flag) and ``--verdict-exit`` 2 in the pipe filter, in-process and through ``nnspam
serve``; ``filter.spamassassin_headers`` adds ``X-Spam-Flag``/``X-Spam-Status``/
``X-Spam-Level`` to the filter's output, the same bytes as the server's PROCESS, and
rules written for SpamAssassin (Sieve) file on them unchanged.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from nnspam.services.scoring import SA_FIELDS, classify, spamassassin_fields

from conftest import Server, need, needs_corpora
from helpers import FixedModel, SieveEnv, sa_sample, sorter_settings


def _filter(args: list[str], raw: bytes) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnspam", "filter", *args], input=raw,
                          capture_output=True, timeout=120)


def test_spamassassin_fields_follow_the_score():
    ham = dict(spamassassin_fields(0.123, 0.5, 10))
    assert ham["X-Spam-Status"].startswith("No, score=1.2 required=5.0 tests=NNSPAM_HAM ")
    assert ham["X-Spam-Level"] == "*" and "X-Spam-Flag" not in ham
    spam = dict(spamassassin_fields(0.97, 0.5, 10))
    assert spam["X-Spam-Flag"] == "YES" and spam["X-Spam-Level"] == "*" * 9
    assert spam["X-Spam-Status"].startswith("Yes, score=9.7 required=5.0 tests=NNSPAM_SPAM")
    assert dict(spamassassin_fields(0.01, 0.5, 10))["X-Spam-Level"] == ""
    assert set(SA_FIELDS) == {"X-Spam-Flag", "X-Spam-Status", "X-Spam-Level"}


def test_classify_writes_them_and_replaces_forged_ones():
    raw = b"X-Spam-Flag: YES\nX-Spam-Level: ******\nSubject: x\n\nbody \r\n\xff"
    out = classify(raw, lambda r: 0.2, 0.5, spamassassin=10.0).output
    assert b"X-Spam-Flag" not in out and out.count(b"X-Spam-Level: **\n") == 1
    assert b"X-Spam-Status: No, score=2.0 required=5.0" in out
    assert out.endswith(b"\n\nbody \r\n\xff")  # the body byte for byte


@needs_corpora
def test_unsure_and_sa_fields_alike_in_process_and_through_the_server(sa_corpus, tmp_path):
    cfg = ("filter:\n  unsure: [0.05, 0.95]\n  spamassassin_headers: true\n")
    srv = Server(tmp_path, "default", extra_cfg=cfg)
    plain = tmp_path / "plain.yaml"
    plain.write_text(cfg)
    via = tmp_path / "via.yaml"
    via.write_text(cfg.replace("filter:\n", f"filter:\n  server: {srv.sock}\n"))
    words = set()
    try:
        for raw in sa_sample(sa_corpus, 30):
            a = _filter(["-c", str(plain), "--verdict-exit"], raw)
            b = _filter(["-c", str(via), "--verdict-exit"], raw)
            assert (a.returncode, a.stdout) == (b.returncode, b.stdout)
            assert b.stderr == b""  # the server's answer was used, no fallback logged
            status = re.search(rb"X-NNSpam-Status: (\w+),", a.stdout).group(1)
            words.add(status)
            assert a.returncode == {b"Yes": 0, b"No": 1, b"Unsure": 2}[status]
            assert b"\nX-Spam-Status: " in a.stdout and b"\nX-Spam-Level: " in a.stdout
            assert (b"X-Spam-Flag: YES" in a.stdout) == (b"X-Spam-Status: Yes" in a.stdout)
            symbols = srv.spamc(["-y"], raw).stdout
            assert (b"NNSPAM_UNSURE" in symbols) == (status == b"Unsure")
    finally:
        assert srv.stop() == 0
    assert words >= {b"Yes", b"No"}


@needs_corpora
def test_a_sieve_rule_written_for_spamassassin_files_nnspam_spam(sa_corpus, tmp_path):
    """Dovecot's sieve-test runs an unchanged SpamAssassin rule on the filter's output."""
    need("sieve-test")
    env = SieveEnv()
    rule = env.dir / "sa.sieve"
    rule.write_text('require ["fileinto"];\n'
                    'if header :contains "X-Spam-Flag" "YES" { fileinto "Junk"; stop; }\n'
                    'if header :matches "X-Spam-Level" "*****" { fileinto "Maybe"; }\n')
    cfg = tmp_path / "c.yaml"
    cfg.write_text("filter:\n  spamassassin_headers: true\n")
    spam = sorted((sa_corpus / "spam").iterdir())[0].read_bytes()
    ham = sorted((sa_corpus / "easy_ham").iterdir())[0].read_bytes()
    try:
        for raw, folder in ((spam, b"Junk"), (ham, b"INBOX")):
            msg = env.dir / "m.eml"
            msg.write_bytes(_filter(["-c", str(cfg)], raw).stdout)
            r = env.sieve_test(rule, msg)
            assert r.returncode == 0, r.stderr
            if folder == b"Junk":
                assert b"store message in folder: Junk" in r.stdout, r.stdout
            else:
                assert b"Junk" not in r.stdout and b"keep" in r.stdout, r.stdout
    finally:
        env.close()


@pytest.mark.parametrize("band", ["[0.2, 0.1]", "[0.6, 0.9]"])
def test_a_bad_band_is_a_config_error_and_mail_passes(tmp_path, band):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"filter:\n  unsure: {band}\n")
    raw = b"Subject: x\n\nhello\n"
    r = _filter(["-c", str(cfg), "--verdict-exit"], raw)
    assert (r.returncode, r.stdout) == (3, raw)


def test_the_daemon_files_unsure_mail_apart_and_learns_where_the_user_moves_it(tmp_path):
    """The sorter (the daemon's, and the SMS store's) files a message in the unsure band
    into daemon.unsure_folder; moved from there into Junk it is a spam correction, back
    into the inbox a ham one. Without a folder, unsure mail stays in the inbox."""
    import copy
    import os

    from nnspam.config import DEFAULTS
    from nnspam.mail import maildir as md
    from nnspam.model.core import Model
    from nnspam.services.delivery.sorter import Sorter
    from nnspam.services.delivery.state import State

    box = md.ensure_maildir(tmp_path / "Maildir")
    st = State(tmp_path / "s.sqlite3")
    sorter = Sorter(FixedModel(0.4), st, sorter_settings(adaptive=False, unsure=(0.3, 0.7),
                                                        unsure_folder=".Unsure"))
    key = sorter.key(box)
    a = md.deliver(box, b"Subject: a\n\nmaybe\n")
    b = md.deliver(box, b"Subject: b\n\nmaybe not\n")
    assert sorter.handle_new(box, a) == "unsure" and sorter.handle_new(box, b) == "unsure"
    ua, ub = box / ".Unsure" / "new" / a.name, box / ".Unsure" / "new" / b.name
    assert ua.exists() and ub.exists() and not a.exists()
    assert st.get(key, a.name).place == "unsure"
    # the user: a is spam (to Junk), b is ham (to the inbox, read)
    md.ensure_folder(box, ".Junk")
    ja = box / ".Junk" / "cur" / (a.name + ":2,S")
    os.rename(ua, ja)
    assert sorter.handle_junk(box, ja) == "corrected"
    ib = box / "cur" / (b.name + ":2,S")
    os.rename(ub, ib)
    assert sorter.handle_inbox_cur(box, ib) == "corrected"
    assert st.get(key, b.name).place == "inbox"
    # no folder: unsure mail stays where it was delivered
    keep = Sorter(FixedModel(0.4), st, sorter_settings(adaptive=False, unsure=(0.3, 0.7)))
    c = md.deliver(box, b"Subject: c\n\nhmm\n")
    assert keep.handle_new(box, c) == "unsure" and c.exists()
    st.close()
    # the config wires both (the daemon and the SMS store build their Sorter this way)
    cfg = copy.deepcopy(DEFAULTS)
    cfg["filter"]["unsure"] = [0.2, 0.8]
    cfg["daemon"]["unsure_folder"] = ".Unsure"
    s = Sorter.from_config(cfg, Model.load("default"), State(tmp_path / "t.sqlite3"),
                           model_name="default")
    assert s.settings.point.unsure == (0.2, 0.8) and s.settings.unsure_folder == ".Unsure"
    s.state.close()
