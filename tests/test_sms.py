"""SMS down the same path: message, delivery and filing, the Twilio webhook."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nnspam.front.sms.message import Sms, message_id_for, sms_to_bytes
from nnspam.mail import maildir as md
from nnspam.mail.tokens import sms_text_from_bytes

from conftest import SMS_FILE, free_port, needs_corpora
from helpers import TOKEN, URL, files, sms_config, wait_listening


def sms_lines(label: str, n: int) -> list[str]:
    """The first n texts of one class in the SMS Spam Collection (read, never copied)."""
    out = []
    with open(SMS_FILE, encoding="utf-8") as fh:
        for line in fh:
            lab, text = line.rstrip("\n").split("\t", 1)
            if lab == label:
                out.append(text)
                if len(out) == n:
                    break
    return out


# -- the message -----------------------------------------------------------------

def test_sms_becomes_a_message_with_the_right_headers():
    from nnspam.mail.message import parse_message

    body = "Cheers 😀 that's £5\nsee you at 8\n\nbye"
    date = datetime(2026, 11, 23, 14, 5, 6, tzinfo=UTC)
    raw = sms_to_bytes(Sms("SMabc123", "+447700900123", "+441632960000", body, date))
    head, _, payload = raw.partition(b"\n\n")
    lines = head.decode("ascii").splitlines()
    assert "From: +447700900123" in lines
    assert "To: +441632960000" in lines
    assert "Date: Mon, 23 Nov 2026 14:05:06 +0000" in lines
    assert "X-Twilio-MessageSid: SMabc123" in lines
    assert f"Message-ID: {message_id_for('SMabc123')}" in lines
    assert "MIME-Version: 1.0" in lines
    assert "Content-Type: text/plain; charset=utf-8" in lines
    assert "Content-Transfer-Encoding: 8bit" in lines
    assert payload == body.encode("utf-8")
    assert sms_text_from_bytes(raw) == body
    assert parse_message(raw).texts  # the email parser reads it as any message


def test_long_lines_and_carriage_returns_are_quoted_printable():
    body = "£" * 700 + "\n" + "x\ry"
    raw = sms_to_bytes(Sms("SMlong", "+1", "+2", body))
    assert b"Content-Transfer-Encoding: quoted-printable" in raw
    assert max(len(x) for x in raw.split(b"\n")) <= 78
    assert sms_text_from_bytes(raw) == body


def test_header_injection_is_neutralised():
    raw = sms_to_bytes(Sms("SMinj", "+1\nBcc: evil@example.org", "+2", "hi"))
    assert b"\nBcc:" not in raw
    with pytest.raises(ValueError):
        Sms("not a sid!", "+1", "+2", "x")


# -- delivery and filing -----------------------------------------------------------

@needs_corpora
def test_spam_sms_is_filed_into_junk_and_ham_stays(store):
    spam = sms_lines("spam", 1)[0]  # "Free entry in 2 a wkly comp to win FA Cup final ..."
    ham = sms_lines("ham", 1)[0]  # "Go until jurong point, crazy.. ..."
    r1 = store.store(Sms("SMspam0000000001", "+447700900001", "+441632960000", spam))
    r2 = store.store(Sms("SMham00000000001", "+447700900002", "+441632960000", ham))
    assert (r1.action, r2.action) == ("spam", "ham")
    junk = store.maildir / ".Junk"
    assert [p.name for p in files(junk)] == [r1.path.name]
    assert [p.name for p in files(store.maildir)] == [r2.path.name]
    assert r1.path.parent == junk / "new" and (junk / "maildirfolder").exists()
    assert r1.spamicity >= 0.5 > r2.spamicity
    assert sms_text_from_bytes(r1.path.read_bytes()) == spam
    assert list((store.maildir / "tmp").iterdir()) == []
    # What a dashboard lists: date, from, text, spamicity per folder.
    (inbox,), (junked,) = store.listing("inbox"), store.listing("junk")
    assert (inbox.from_number, inbox.body, inbox.place) == ("+447700900002", ham, "inbox")
    assert (junked.sid, junked.body, junked.place) == ("SMspam0000000001", spam, "junk")
    assert junked.spamicity == pytest.approx(r1.spamicity)


def test_same_sid_twice_stores_one_message(store):
    sms = Sms("SMdup0000000000001", "+447700900003", "+441632960000", "see you at 6")
    first = store.store(sms)
    again = store.store(sms)
    assert again.action == "duplicate" and again.path == first.path
    assert store.count() == 1
    assert len(files(store.maildir)) + len(files(store.maildir / ".Junk")) == 1


def test_a_crash_between_row_and_file_is_finished_by_the_retry(store, monkeypatch):
    from nnspam.front.sms import store as store_mod

    sms = Sms("SMcrash00000000001", "+447700900004", "+441632960000", "on my way home")

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(store_mod.md, "deliver", crash)
    with pytest.raises(OSError):
        store.store(sms)
    monkeypatch.undo()
    assert files(store.maildir) == []
    # Within RESUME_AFTER another process may still be storing it: left alone.
    assert store.store(sms).path is None and files(store.maildir) == []
    monkeypatch.setattr(store_mod, "RESUME_AFTER", 0.0)
    again = store.store(sms)
    assert again.path is not None and again.path.exists()
    assert store.count() == 1 and len(files(store.maildir)) == 1
    assert store.listing("inbox")[0].sid == sms.sid


def test_webhook_and_poller_processes_racing_for_one_sid_store_it_once(store, tmp_path,
                                                                        monkeypatch):
    from nnspam.front.sms import store as store_mod

    other = store_mod.open_store(sms_config(tmp_path))  # the other process, same files
    sms = Sms("SMrace000000000001", "+447700900006", "+441632960000", "ok see you then")
    orig = store_mod.md.unique_name
    raced = []

    def other_wins_the_race() -> str:
        if not raced:  # between our SELECT and our INSERT the other process stores it
            raced.append(1)
            other.store(sms, source="poll")
        return orig()

    monkeypatch.setattr(store_mod.md, "unique_name", other_wins_the_race)
    assert store.store(sms).action == "duplicate"
    other.close()
    assert raced and store.count() == 1
    assert len(files(store.maildir)) + len(files(store.maildir / ".Junk")) == 1


def test_the_shipped_sms_model_is_not_written(store):
    assert store.sorter.model_path is None  # default-sms is read-only
    assert store.sorter.model.kind == "sms"


def test_daemon_and_sms_store_build_one_sorter_from_the_config(tmp_path):
    """Sorter.from_config is the one wiring of both: every setting the same, the ham bias
    and threshold the config's (the SMS store once took them from the model, the daemon
    from the config, as the filter, the server and nnspam classify do)."""
    from nnspam.front.sms.store import open_store
    from nnspam.model.core import Model
    from nnspam.services.delivery.daemon import Daemon, settings_from_config

    model = Model.load("default-sms")
    assert (model.ham_factor, model.spam_factor, model.threshold) == (0.9, 0.1, 0.5)
    cfg = sms_config(tmp_path)
    cfg.update(ham_factor=0.7, spam_factor=0.3, threshold=0.6)
    cfg["daemon"].update(junk=".Spam", checkpoint_every=3, max_message_bytes=4096,
                         state=str(tmp_path / "daemon.sqlite3"))
    cfg["adaptive"].update(learn_on_confident=True, confident_margin=0.3, half_life=250)
    store = open_store(cfg)
    box = md.ensure_maildir(tmp_path / "Maildir")
    daemon = Daemon(settings_from_config(cfg, [str(box)], "default-sms"))
    daemon._load()
    try:
        names = ("settings", "model_path", "rule")
        sms = {k: getattr(store.sorter, k) for k in names}
        assert sms == {k: getattr(daemon.sorter, k) for k in names}
        got = sms["settings"]
        assert (got.point.ham_factor, got.point.spam_factor, got.point.threshold) == (
            0.7, 0.3, 0.6)
        assert (got.junk, got.checkpoint_every, got.max_message_bytes) == (".Spam", 3, 4096)
        assert (got.learn_on_confident, got.confident_margin) == (True, 0.3)
        assert sms["model_path"] is None  # default-sms is read-only for both
        for sorter in (store.sorter, daemon.sorter):  # the adaptive: section applied
            assert sorter.model.adaptive.settings["half_life"] == 250
    finally:
        store.close()
        daemon.state.close()


def test_an_sms_is_judged_at_the_configs_threshold(tmp_path):
    """What the shared constructor changes for an SMS: a spam by the model's own bias is
    ham when the config says spam needs more (as nnspam classify would say)."""
    from nnspam.front.sms.store import open_store

    cfg = sms_config(tmp_path)
    cfg.update(threshold=0.999999, spam_factor=1.0e-9)
    st = open_store(cfg)
    try:
        text = "WINNER!! Claim your FREE prize now, call 09061701461 txt WIN to 80086"
        r = st.store(Sms("SMcfg000000000001", "+447700900009", "+441632960000", text))
        assert st.sorter.model.score([text], ham_factor=0.9, spam_factor=0.1)[0] >= 0.5
        assert r.action == "ham" and r.path.parent == st.maildir / "new"
    finally:
        st.close()


# -- the webhook -------------------------------------------------------------------

@pytest.fixture
def webhook_app(store, tmp_path):
    from nnspam.front.sms.webhook import create_app

    cfg = sms_config(tmp_path, public_url=URL)
    (tmp_path / "twilio.env").write_text(f"# test\nTWILIO_AUTH_TOKEN='{TOKEN}'\n")
    a = create_app(cfg, store=store)
    a.testing = True
    return a


def signed(params: dict, token: str = TOKEN, url: str = URL) -> dict:
    from twilio.request_validator import RequestValidator

    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, params)}


def form(sid: str, body: str) -> dict:
    return {"MessageSid": sid, "SmsSid": sid, "AccountSid": "AC" + "0" * 32,
            "From": "+447700900005", "To": "+441632960000", "Body": body, "NumMedia": "0"}


@needs_corpora
def test_signed_request_is_accepted_filed_and_answered_with_empty_twiml(webhook_app, store):
    import xml.etree.ElementTree as ET

    spam = sms_lines("spam", 2)[1]
    params = form("SMweb000000000001", spam)
    r = webhook_app.test_client().post("/sms", data=params, headers=signed(params))
    assert r.status_code == 200
    assert r.mimetype == "text/xml"
    root = ET.fromstring(r.data)
    assert root.tag == "Response" and len(root) == 0 and not (root.text or "").strip()
    (junked,) = store.listing("junk")
    assert junked.sid == "SMweb000000000001" and junked.body == spam
    assert len(files(store.maildir / ".Junk")) == 1


def test_the_token_comes_from_the_environment_before_the_env_file(store, tmp_path, monkeypatch):
    from nnspam.front.sms.webhook import create_app

    (tmp_path / "twilio.env").write_text("TWILIO_AUTH_TOKEN=from-file\n")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "from-env")
    app = create_app(sms_config(tmp_path, public_url=URL), store=store)
    params = form("SMenv000000000001", "hello")
    c = app.test_client()
    assert c.post("/sms", data=params, headers=signed(params, "from-file")).status_code == 403
    assert c.post("/sms", data=params, headers=signed(params, "from-env")).status_code == 200
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    (tmp_path / "twilio.env").unlink()
    with pytest.raises(RuntimeError, match="TWILIO_AUTH_TOKEN"):
        create_app(sms_config(tmp_path), store=store)


def test_without_public_url_the_request_url_is_signed(store, tmp_path):
    from nnspam.front.sms.webhook import create_app

    app = create_app(sms_config(tmp_path), store=store, auth_token=TOKEN)
    params = form("SMurl000000000001", "hello")
    c = app.test_client()
    assert c.post("/sms", data=params, headers=signed(params)).status_code == 403
    ok = signed(params, url="http://localhost/sms")
    assert c.post("/sms", data=params, headers=ok).status_code == 200


@pytest.mark.parametrize("case", ["unsigned", "wrong", "replay-changed-body", "other-token"])
def test_bad_signatures_get_403_and_store_nothing(webhook_app, store, case, caplog):
    params = form("SMbad000000000001", "hello there")
    if case == "unsigned":
        headers: dict = {}
    elif case == "wrong":
        headers = {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}
    elif case == "replay-changed-body":
        headers = signed(params)
        params = dict(params, Body="WINNER! claim your prize at http://example.com")
    else:
        headers = signed(params, token="f" * 32)
    with caplog.at_level(logging.WARNING, logger="nnspam.front.sms"):
        r = webhook_app.test_client().post("/sms", data=params, headers=headers)
    assert r.status_code == 403
    assert store.count() == 0
    assert files(store.maildir) == [] and files(store.maildir / ".Junk") == []
    assert "rejected" in caplog.text


def test_a_retried_message_sid_stores_one_message(webhook_app, store):
    params = form("SMretry0000000001", "running late, 10 min")
    c = webhook_app.test_client()
    for _ in range(3):
        r = c.post("/sms", data=params, headers=signed(params))
        assert r.status_code == 200 and b"<Response/>" in r.data
    assert store.count() == 1
    assert len(files(store.maildir)) + len(files(store.maildir / ".Junk")) == 1


def test_get_is_not_allowed(webhook_app):
    assert webhook_app.test_client().get("/sms").status_code == 405


# -- the command line ----------------------------------------------------------------

def test_flask_and_twilio_stay_off_the_filter_and_daemon_path():
    import subprocess
    import sys

    code = ("import sys, nnspam.front.cli as c; c.build_parser(); "
            "import nnspam.services.delivery.daemon, nnspam.services.delivery.sorter; "
            "import nnspam.model.core; "
            "import nnspam.services.delivery.pipefilter; "
            "import nnspam.front.sms.store; "
            "nnspam.model.core.Model.load('default-sms').score(['hello']);"
            "print(sorted(m for m in ('flask', 'twilio', 'werkzeug', 'waitress') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_sms_serve_answers_signed_requests_on_127_0_0_1(tmp_path):
    import os
    import subprocess
    import sys
    import urllib.error
    import urllib.parse
    import urllib.request

    pytest.importorskip("waitress")
    port = free_port()
    conf = tmp_path / "config.yaml"
    conf.write_text(f"sms:\n  maildir: {tmp_path / 'SMS'}\n  state: {tmp_path / 's.sqlite3'}\n"
                    f"  env_file: {tmp_path / 'twilio.env'}\n")
    (tmp_path / "twilio.env").write_text(f"TWILIO_AUTH_TOKEN={TOKEN}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    proc = subprocess.Popen([sys.executable, "-m", "nnspam", "sms", "serve", "-c", str(conf),
                             "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_listening(proc, port)
        url = f"http://127.0.0.1:{port}/sms"
        params = form("SMcli000000000001", "Are we still on for lunch? 🙂")

        def post(headers: dict) -> tuple[int, bytes, str]:
            req = urllib.request.Request(url, data=urllib.parse.urlencode(params).encode(),
                                         headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return r.status, r.read(), r.headers.get_content_type()
            except urllib.error.HTTPError as e:
                return e.code, e.read(), ""

        assert post({})[0] == 403
        status, body, ctype = post(signed(params, url=url))
        assert (status, ctype) == (200, "text/xml") and body.endswith(b"<Response/>")
        assert post(signed(params, url=url))[0] == 200  # Twilio's retry
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    msgs = files(tmp_path / "SMS") + files(tmp_path / "SMS" / ".Junk")
    assert len(msgs) == 1
    assert sms_text_from_bytes(msgs[0].read_bytes()) == "Are we still on for lunch? 🙂"


def test_sms_poll_needs_a_number_and_credentials(tmp_path, capsys, monkeypatch):
    from nnspam.front.cli import main

    for k in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    conf = tmp_path / "config.yaml"
    conf.write_text(f"sms:\n  maildir: {tmp_path / 'SMS'}\n  state: {tmp_path / 's.sqlite3'}\n"
                    f"  env_file: {tmp_path / 'twilio.env'}\n")
    assert main(["sms", "poll", "-c", str(conf), "--once"]) == 2
    assert "no Twilio number" in capsys.readouterr().err
    assert main(["sms", "poll", "-c", str(conf), "--once", "--to", "+441632960000"]) == 2
    assert "TWILIO_ACCOUNT_SID" in capsys.readouterr().err


# -- sms serve: startup errors (faults C and D) ----------------------------------------------

def _sms_serve(args: list[str], home: Path, token: bool, timeout: float = 60):
    """Run ``nnspam sms serve ARGS`` with HOME=home (so defaults land there), no
    NNSPAM_CONFIG, and TWILIO_AUTH_TOKEN set or not. A server that started
    instead of refusing is killed by the timeout (the test then fails)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TWILIO_", "NNSPAM_")) and k != "XDG_CONFIG_HOME"}
    env["HOME"] = str(home)
    if token:
        env["TWILIO_AUTH_TOKEN"] = TOKEN
    return subprocess.run([sys.executable, "-m", "nnspam", "sms", "serve", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_sms_serve_on_a_taken_port_says_so_in_one_line_and_exits_2(tmp_path):
    import socket

    home = tmp_path / "home"
    home.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = _sms_serve(["--host", "127.0.0.1", "--port", str(port)], home, token=True)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "OSError" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("nnspam:")]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0], r.stderr
    assert "in use" in errors[0]
    # Nothing was created for a server that never started.
    assert not (home / "SMS").exists()
    assert not (home / ".local" / "state" / "nnspam").exists()


@pytest.mark.parametrize("port", ["-1", "65536"])
def test_sms_serve_with_an_impossible_port_says_so_in_one_line(tmp_path, port):
    home = tmp_path / "home"
    home.mkdir()
    r = _sms_serve(["--port", port], home, token=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"127.0.0.1:{port}" in r.stderr
    assert not (home / "SMS").exists()


def test_sms_serve_without_a_token_refuses_before_creating_anything(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    r = _sms_serve([], home, token=False)
    assert r.returncode == 2, r.stderr
    assert "TWILIO_AUTH_TOKEN" in r.stderr and "Traceback" not in r.stderr
    assert not (home / "SMS").exists()  # the default sms.maildir, ~/SMS
    assert not (home / ".local" / "state" / "nnspam").exists()  # the default sms.state


def test_sms_serve_with_a_missing_model_refuses_before_creating_anything(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    r = _sms_serve(["-m", str(tmp_path / "no-such-model")], home, token=True)
    assert r.returncode == 2, r.stderr
    assert "no-such-model" in r.stderr and "Traceback" not in r.stderr
    assert not (home / "SMS").exists()
    assert not (home / ".local" / "state" / "nnspam").exists()
