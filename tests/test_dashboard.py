"""The SMS dashboard (Flask test client): access control, lists, escaping, moves."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import (
    HAM,
    HAM2,
    HOSTILE,
    PASSWORD,
    SPAM,
    SPAM2,
    TOKEN,
    URL,
    csrf_of,
    fill,
    login,
    make_dashboard,
)

pytest.importorskip("flask")

from nnspam.mail import maildir as md  # noqa: E402


@pytest.fixture
def writable_model(tmp_path) -> Path:
    """A copy of the shipped SMS model that corrections may be learned into."""
    from nnspam.model.core import Model

    path = tmp_path / "sms-model"
    Model.load("default-sms").save(path)
    return path


@pytest.fixture
def dash(tmp_path):
    app, store = make_dashboard(tmp_path)
    yield app, store
    store.close()


def section(page: str, name: str) -> str:
    """The Inbox (``inbox``) or Spam (``spam``) section, entities decoded (so
    texts compare as written; the escaping itself is tested on the raw page)."""
    m = re.search(rf'<section id="{name}".*?</section>', page, re.S)
    assert m, f"no {name} section"
    return html.unescape(m.group(0))


def sid_of(store, body: str) -> str:
    return store.db.execute("SELECT sid FROM sms WHERE body=?", (body,)).fetchone()[0]


# -- access control ---------------------------------------------------------------

def test_without_a_password_hash_the_dashboard_refuses_to_serve(tmp_path):
    app, store = make_dashboard(tmp_path, password_hash=None)
    try:
        fill(store)
        c = app.test_client()
        for r in (c.get("/"), c.get("/login"), c.post("/login", data={"password": ""}),
                  c.post("/move", data={"sid": sid_of(store, SPAM), "to": "inbox"})):
            assert r.status_code == 403
            assert b"hash-password" in r.data and b"password_hash" in r.data
            assert SPAM.encode() not in r.data
        assert md.find_message(store.maildir / ".Junk", store.listing("junk")[0].uniq)
    finally:
        store.close()


def test_the_webhook_needs_no_login_or_csrf_token(dash):
    from twilio.request_validator import RequestValidator

    app, store = dash
    params = {"MessageSid": "SM" + "a" * 32, "From": "+447700900009", "To": "+441632960000",
              "Body": HAM}
    sig = RequestValidator(TOKEN).compute_signature(URL, params)
    r = app.test_client().post("/sms", data=params, headers={"X-Twilio-Signature": sig})
    assert r.status_code == 200 and b"<Response/>" in r.data
    assert store.count() == 1


def test_login_is_required_and_a_wrong_password_is_refused(dash):
    app, store = dash
    fill(store)
    c = app.test_client()
    r = c.get("/")
    assert r.status_code == 302 and r.headers["Location"].endswith("/login")
    page = c.get("/login").get_data(as_text=True)
    assert 'type="password"' in page and HAM not in page
    r = login(c, "not the password")
    assert r.status_code == 401 and b"Wrong password" in r.data
    assert c.get("/").status_code == 302
    r = login(c)
    assert r.status_code == 302 and r.headers["Location"].endswith("/")
    assert c.get("/").status_code == 200
    # Logging out ends the session.
    token = csrf_of(c.get("/").get_data(as_text=True))
    assert c.post("/logout", data={"csrf_token": token}).status_code == 302
    assert c.get("/").status_code == 302


def test_the_login_form_needs_its_csrf_token(dash):
    app, _ = dash
    c = app.test_client()
    c.get("/login")
    r = c.post("/login", data={"password": PASSWORD})
    assert r.status_code == 403
    assert c.get("/").status_code == 302


def test_session_cookie_is_httponly_and_samesite_strict(dash):
    app, _ = dash
    c = app.test_client()
    r = c.get("/login")
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_secret_key_comes_from_the_env_file(tmp_path, monkeypatch):
    from nnspam.front.dashboard.web import secret_key

    monkeypatch.delenv("NNSPAM_SECRET_KEY", raising=False)
    env = tmp_path / "x.env"
    env.write_text("NNSPAM_SECRET_KEY=s3cr3t-key-from-file\n")
    assert secret_key(str(env)) == (b"s3cr3t-key-from-file", True)
    monkeypatch.setenv("NNSPAM_SECRET_KEY", "from-environment")
    assert secret_key(str(env)) == (b"from-environment", True)
    monkeypatch.delenv("NNSPAM_SECRET_KEY")
    a, b = secret_key(str(tmp_path / "missing.env")), secret_key(None)
    assert not a[1] and not b[1] and len(a[0]) == 32 and a[0] != b[0]


# -- the lists ----------------------------------------------------------------------

def test_inbox_and_spam_are_listed_newest_first_with_all_fields(dash):
    app, store = dash
    fill(store)
    c = app.test_client()
    login(c)
    r = c.get("/")
    page = r.get_data(as_text=True)
    inbox, spam = section(page, "inbox"), section(page, "spam")
    assert HAM in inbox and HAM2 in inbox and SPAM not in inbox
    assert SPAM in spam and SPAM2 in spam and HAM not in spam
    assert inbox.index(HAM2) < inbox.index(HAM)  # newest first
    assert spam.index(SPAM2) < spam.index(SPAM)
    assert "+447700900005" in inbox and "2026-11-20 13:00 UTC" in inbox
    rec = store.listing("junk")[0]
    assert f"{rec.spamicity:.4f}" in spam
    # Styles come from the package (no CDN) and are served without login.
    assert "http://" not in page and "https://" not in page
    css = app.test_client().get("/static/dashboard/dashboard.css")
    assert css.status_code == 200 and b"font-family" in css.data
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]


def test_lists_are_paged(tmp_path):
    app, store = make_dashboard(tmp_path, page_size=1)
    try:
        fill(store)
        c = app.test_client()
        login(c)
        page = c.get("/").get_data(as_text=True)
        inbox = section(page, "inbox")
        assert HAM2 in inbox and HAM not in inbox and "inbox=2" in inbox
        page = c.get("/?inbox=2").get_data(as_text=True)
        inbox = section(page, "inbox")
        assert HOSTILE in inbox and HAM2 not in inbox and HAM not in inbox
        assert "inbox=1" in inbox and "inbox=3" in inbox and "page 2" in inbox
        inbox = section(c.get("/?inbox=3").get_data(as_text=True), "inbox")
        assert HAM in inbox and "inbox=4" not in inbox  # the oldest: no next page
        page = c.get("/?inbox=4&spam=nonsense").get_data(as_text=True)
        assert "No messages." in section(page, "inbox")
        assert "page 1" in section(page, "spam") and SPAM2 in section(page, "spam")
    finally:
        store.close()


def test_every_field_is_escaped(dash):
    app, store = dash
    fill(store)
    c = app.test_client()
    login(c)
    page = c.get("/").get_data(as_text=True)
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &#34;&amp;&#39; see you" in page
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in page


# -- moving --------------------------------------------------------------------------

def _move(c, sid: str, to: str, token: str | None):
    data = {"sid": sid, "to": to}
    if token is not None:
        data["csrf_token"] = token
    return c.post("/move", data=data)


def test_a_move_without_or_with_a_wrong_csrf_token_changes_nothing(dash):
    app, store = dash
    fill(store)
    c = app.test_client()
    login(c)
    sid = sid_of(store, SPAM)
    uniq = store.db.execute("SELECT uniq FROM sms WHERE sid=?", (sid,)).fetchone()[0]
    for token in (None, "", "x" * 43):
        assert _move(c, sid, "inbox", token).status_code in (400, 403)
    other = app.test_client()  # another session's token is wrong here too
    login(other)
    assert _move(c, sid, "inbox", csrf_of(other.get("/").get_data(as_text=True))
                 ).status_code == 403
    assert md.find_message(store.maildir / ".Junk", uniq) is not None
    assert md.find_message(store.maildir, uniq) is None
    assert store.sorter.state.get(store.key, uniq).place == "junk"
    assert c.get("/?x=1").status_code == 200
    # Not logged in, a valid-looking POST is not honoured either.
    anon = app.test_client()
    token = csrf_of(anon.get("/login").get_data(as_text=True))
    r = _move(anon, sid, "inbox", token)
    assert r.status_code == 302 and r.headers["Location"].endswith("/login")
    assert md.find_message(store.maildir / ".Junk", uniq) is not None


def test_moves_are_learned_and_move_the_score(tmp_path, writable_model):
    from nnspam.model.core import Model

    app, store = make_dashboard(tmp_path, model=str(writable_model))
    try:
        fill(store)
        c = app.test_client()
        login(c)
        token = csrf_of(c.get("/").get_data(as_text=True))
        model = store.sorter.model
        before = model.score([SPAM, HAM])
        on_disk = Model.load(writable_model).score([SPAM, HAM])

        sid = sid_of(store, SPAM)
        uniq = store.db.execute("SELECT uniq FROM sms WHERE sid=?", (sid,)).fetchone()[0]
        r = _move(c, sid, "inbox", token)
        assert r.status_code == 302
        path = md.find_message(store.maildir, uniq)
        assert path is not None and path.parent.name == "cur"
        assert md.find_message(store.maildir / ".Junk", uniq) is None
        assert store.sorter.state.get(store.key, uniq).place == "inbox"
        page = c.get("/").get_data(as_text=True)
        assert "learned it as ham" in page
        assert SPAM in section(page, "inbox") and SPAM not in section(page, "spam")

        sid = sid_of(store, HAM)
        uniq = store.db.execute("SELECT uniq FROM sms WHERE sid=?", (sid,)).fetchone()[0]
        assert _move(c, sid, "junk", token).status_code == 302
        assert md.find_message(store.maildir / ".Junk", uniq) is not None
        assert md.find_message(store.maildir, uniq) is None
        page = c.get("/").get_data(as_text=True)
        assert "learned it as spam" in page
        assert HAM in section(page, "spam") and HAM not in section(page, "inbox")

        after = model.score([SPAM, HAM])
        assert after[0] < before[0]  # learned as ham: less spammy
        assert after[1] > before[1]  # learned as spam: more spammy
        saved = Model.load(writable_model).score([SPAM, HAM])
        assert saved[0] < on_disk[0] and saved[1] > on_disk[1]  # saved at once
        kinds = [r[0] for r in store.db.execute(
            "SELECT label FROM corrections ORDER BY rowid").fetchall()]
        assert kinds == ["ham", "spam"]
        # Moving it again to where it is does nothing.
        assert _move(c, sid, "junk", token).status_code == 302
        assert "already in Spam" in c.get("/").get_data(as_text=True)
    finally:
        store.close()


def test_with_the_read_only_shipped_model_the_move_happens_unlearned(dash):
    app, store = dash
    fill(store)
    c = app.test_client()
    login(c)
    token = csrf_of(c.get("/").get_data(as_text=True))
    before = store.sorter.model.score([SPAM2])
    sid = sid_of(store, SPAM2)
    uniq = store.db.execute("SELECT uniq FROM sms WHERE sid=?", (sid,)).fetchone()[0]
    assert _move(c, sid, "inbox", token).status_code == 302
    assert md.find_message(store.maildir, uniq) is not None
    page = c.get("/").get_data(as_text=True)
    assert "not learned" in page and SPAM2 in section(page, "inbox")
    assert store.sorter.model.score([SPAM2])[0] == before[0]
    assert store.sorter.state.get(store.key, uniq).place == "inbox"


def test_move_rejects_bad_input(dash):
    app, store = dash
    fill(store)
    c = app.test_client()
    login(c)
    token = csrf_of(c.get("/").get_data(as_text=True))
    assert _move(c, sid_of(store, HAM), "trash", token).status_code == 400
    assert _move(c, "SM" + "f" * 32, "junk", token).status_code == 404


# -- the command line -------------------------------------------------------------------

def test_hash_password_prints_a_salted_hash_that_checks():
    from werkzeug.security import check_password_hash

    def run(pw: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "nnspam.front.cli", "sms", "hash-password",
                               "--stdin"], input=pw + "\n", capture_output=True, text=True)

    a, b = run(PASSWORD), run(PASSWORD)
    assert a.returncode == 0 and a.stdout.startswith("scrypt:")
    h = a.stdout.strip()
    assert h != b.stdout.strip()  # salted
    assert check_password_hash(h, PASSWORD) and not check_password_hash(h, PASSWORD + "x")
    short = run("short")
    assert short.returncode != 0 and "too short" in short.stderr


# -- paging parameters out of range (fault A) -------------------------------------------

@pytest.mark.parametrize(("value", "want"), [
    ("99999999999999999999", "max"), ("9223372036854775807", "max"),
    ("9223372036854775808", "max"), ("9" * 5000, "max"), (" 3 ", 3), ("+2", 2), ("007", 7),
    ("-9223372036854775809", 1), ("-1", 1), ("0", 1), ("", 1), ("abc", 1), ("1.5", 1),
    ("1e9", 1), ("0x10", 1), ("1_000", 1)])
@pytest.mark.parametrize("param", ["inbox", "spam"])
def test_out_of_range_or_non_numeric_page_numbers_are_clamped_never_500(dash, param, value,
                                                                         want):
    from nnspam.front.dashboard.web import MAX_PAGE

    app, store = dash
    fill(store)
    c = app.test_client()
    login(c)
    r = c.get("/", query_string={param: value})
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    shown = int(re.search(r"page (\d+)", section(r.get_data(as_text=True), param)).group(1))
    assert shown == (MAX_PAGE if want == "max" else want)
    # The other folder is untouched; its move forms carry the clamped page number on,
    # and a move posted with the raw value redirects to a page that works.
    page = r.get_data(as_text=True)
    other = "spam" if param == "inbox" else "inbox"
    assert "page 1" in section(page, other)
    assert f'name="{param}" value="{shown}"' in page
    token = csrf_of(c.get("/").get_data(as_text=True))
    r = c.post("/move", data={"sid": sid_of(store, HAM), "to": "junk", "csrf_token": token,
                              param: value})
    assert r.status_code == 302
    assert c.get(r.headers["Location"]).status_code == 200


def test_an_out_of_range_page_size_in_the_config_is_clamped(tmp_path):
    from nnspam.front.dashboard.web import MAX_PAGE, MAX_PAGE_SIZE

    for size, want in ((10**20, MAX_PAGE_SIZE), (-5, 1)):
        app, store = make_dashboard(tmp_path / str(size), page_size=size)
        try:
            fill(store)
            assert app.config["NNSPAM_DASHBOARD_PAGE_SIZE"] == want
            c = app.test_client()
            login(c)
            assert c.get("/", query_string={"inbox": str(MAX_PAGE + 1)}).status_code == 200
        finally:
            store.close()


# -- logout revokes the session server-side (fault B) -------------------------------------

def test_a_cookie_saved_before_logout_is_refused_after_it(dash):
    app, store = dash
    fill(store)
    c = app.test_client()
    login(c)
    page = c.get("/").get_data(as_text=True)
    token = csrf_of(page)
    saved = c.get_cookie("nnspam_session").value
    other = app.test_client()  # another session: not ended by this logout
    login(other)
    assert c.post("/logout", data={"csrf_token": token}).status_code == 302

    replay = app.test_client()
    replay.set_cookie("nnspam_session", saved)
    r = replay.get("/")
    assert r.status_code == 302 and r.headers["Location"].endswith("/login")
    assert HAM.encode() not in r.data
    sid = sid_of(store, SPAM)
    uniq = store.db.execute("SELECT uniq FROM sms WHERE sid=?", (sid,)).fetchone()[0]
    replay.set_cookie("nnspam_session", saved)
    r = _move(replay, sid, "inbox", token)
    assert r.status_code == 302 and r.headers["Location"].endswith("/login")
    assert md.find_message(store.maildir / ".Junk", uniq) is not None

    assert other.get("/").status_code == 200
    login(c)  # logging in again works and makes a new session
    assert c.get("/").status_code == 200
    assert c.get_cookie("nnspam_session").value != saved
    replay.set_cookie("nnspam_session", saved)
    assert replay.get("/").status_code == 302


def test_logging_in_again_ends_the_previous_session_of_that_browser(dash):
    app, _ = dash
    c = app.test_client()
    login(c)
    first = c.get_cookie("nnspam_session").value
    login(c)
    assert c.get("/").status_code == 200
    replay = app.test_client()
    replay.set_cookie("nnspam_session", first)
    assert replay.get("/").status_code == 302
