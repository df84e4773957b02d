"""The dashboard's email pages (Flask test client): the maildir daemon's decisions, the
message view and its explanation, the Spam / Not spam / Forget buttons, the plot.

The state is real: SpamAssassin messages are delivered into a temporary maildir and
filed by a Sorter built as the daemon builds its own (``Sorter.from_config``), with a
writable copy of the shipped email model (or the shipped, read-only one).
"""

from __future__ import annotations

import copy
import html
import re
import time
from pathlib import Path

import pytest

from helpers import (
    PW_HASH,
    TOKEN,
    Mail,
    build_mail,
    csrf_of,
    logged_in,
    make_app,
    post,
    rows_of,
    wait_listening,
)

pytest.importorskip("flask")

from nnspam.config import DEFAULTS  # noqa: E402
from nnspam.mail import maildir as md  # noqa: E402

from conftest import free_port, needs_corpora  # noqa: E402

pytestmark = needs_corpora

HOSTILE = (b"From: \"<b>Mallory</b>\" <mallory@example.org>\n"
           b"To: bob@example.net\n"
           b"Subject: <script>alert(1)</script> lunch\n"
           b"Message-ID: <hostile@example.org>\n"
           b"MIME-Version: 1.0\n"
           b"Content-Type: text/html; charset=utf-8\n\n"
           b"<p>See you at <img src=x onerror=alert(2)> lunch &lt;script&gt;</p>\n")


@pytest.fixture
def mail(tmp_path, sa_corpus) -> Mail:
    return build_mail(tmp_path, sa_corpus)


@pytest.fixture
def email_dash(mail):
    app, side = make_app(mail)
    yield app, side, mail
    side.close()


def flash_of(c) -> str:
    """The flash message the next page shows."""
    page = c.get("/email/").get_data(as_text=True)
    m = re.search(r'<p class="flash[^"]*" role="status">(.*?)</p>', page, re.S)
    return html.unescape(m.group(1)) if m else ""


# -- access ---------------------------------------------------------------------------

def test_email_pages_need_a_login(email_dash):
    app, side, mail = email_dash
    c = app.test_client()
    uniq = mail.ham[0]
    for url in ("/email/", f"/email/message?box=0&uniq={uniq}", "/"):
        r = c.get(url)
        assert r.status_code == 302 and r.headers["Location"].endswith("/login"), url
    # A valid-looking POST without a session is not honoured either.
    token = csrf_of(c.get("/login").get_data(as_text=True))
    for url, data in (("/email/move", {"to": "junk"}), ("/email/forget", {})):
        r = post(c, url, token, box="0", uniq=uniq, **data)
        assert r.status_code == 302 and r.headers["Location"].endswith("/login")
    assert mail.where(uniq)[0] == "inbox"
    assert mail.corrections() == []


def test_without_an_sms_store_the_front_page_is_the_email_page(email_dash):
    app, _, _ = email_dash
    c = logged_in(app)
    r = c.get("/")
    assert r.status_code == 302 and r.headers["Location"].endswith("/email/")
    page = c.get("/email/").get_data(as_text=True)
    assert 'href="/email/"' in page and 'href="/"' not in page  # no SMS link
    assert c.post("/move", data={"csrf_token": csrf_of(page), "sid": "x",
                                 "to": "junk"}).status_code == 404


def test_buttons_need_the_csrf_token(email_dash):
    app, _, mail = email_dash
    c = logged_in(app)
    other = logged_in(app)
    wrong = csrf_of(other.get("/email/").get_data(as_text=True))
    uniq = mail.ham[0]
    for token in (None, "", "x" * 43, wrong):
        assert post(c, "/email/move", token, box="0", uniq=uniq, to="junk").status_code == 403
        assert post(c, "/email/forget", token, box="0", uniq=uniq).status_code == 403
    assert mail.where(uniq)[0] == "inbox"
    assert mail.record(uniq).place == "inbox" and mail.corrections() == []


# -- the list ------------------------------------------------------------------------------

def test_decisions_are_listed_newest_first_with_from_subject_spamicity_verdict_and_place(
        email_dash):
    from nnspam.mail.message import parse_message

    app, side, mail = email_dash
    c = logged_in(app)
    r = c.get("/email/")
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    assert rows_of(page) == mail.order[::-1]
    assert f"{len(mail.order)} decisions of the daemon" in page
    for uniq in mail.order:
        row = re.search(rf'<tr class="email" data-uniq="{re.escape(uniq)}" '
                        r'data-where="(\w+)">(.*?)</tr>', page, re.S)
        cells = html.unescape(row.group(2))
        parsed = parse_message(mail.data[uniq])
        assert " ".join(parsed.header("subject").split()) in cells
        assert " ".join(parsed.header("from").split()) in cells
        rec = mail.record(uniq)
        assert f"{rec.spamicity:.4f}" in cells and rec.verdict in cells
        want = "inbox" if uniq in mail.ham else "junk"
        assert row.group(1) == want and (">Inbox<" if want == "inbox" else ">Junk<") in cells
        assert ('class="spam">Spam<' in cells) == (want == "inbox")
        assert ('class="ham">Not spam<' in cells) == (want == "junk")
        assert 'class="forget">Forget<' in cells
    newest = mail.record(mail.order[-1]).decided_at
    assert time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(newest)) in page
    assert "<script" not in page and "default-src 'none'" in r.headers["Content-Security-Policy"]


def test_paging_clamps_like_the_sms_pages(tmp_path, sa_corpus):
    from nnspam.front.dashboard.web import MAX_PAGE

    mail = build_mail(tmp_path, sa_corpus, page_size=3)
    app, side = make_app(mail)
    try:
        c = logged_in(app)
        newest = mail.order[::-1]
        page1 = c.get("/email/").get_data(as_text=True)
        assert rows_of(page1) == newest[:3] and "page=2" in page1 and "page 1" in page1
        page2 = c.get("/email/?page=2").get_data(as_text=True)
        assert rows_of(page2) == newest[3:6] and "page=1" in page2 and "page=3" in page2
        page3 = c.get("/email/?page=3").get_data(as_text=True)
        assert rows_of(page3) == newest[6:] and "page=4" not in page3  # the oldest
        for value, shown in (("99999999999999999999", MAX_PAGE), ("-3", 1), ("abc", 1),
                             ("1.5", 1), ("9" * 5000, MAX_PAGE), (" 2 ", 2)):
            r = c.get("/email/", query_string={"page": value})
            assert r.status_code == 200, value
            text = r.get_data(as_text=True)
            assert f"page {shown}" in text
            if shown == MAX_PAGE:
                assert "No messages." in text and rows_of(text) == []
        # A button posted with a wild page number still comes back to a page that works.
        token = csrf_of(page1)
        r = post(c, "/email/move", token, box="0", uniq=mail.ham[0], to="junk",
                 page="9" * 40)
        assert r.status_code == 302 and c.get(r.headers["Location"]).status_code == 200
    finally:
        side.close()


def test_a_message_that_is_gone_shows_as_gone_without_buttons(email_dash):
    app, _, mail = email_dash
    uniq = mail.ham[1]
    mail.where(uniq)[1].unlink()
    c = logged_in(app)
    page = c.get("/email/").get_data(as_text=True)
    row = re.search(rf'data-uniq="{re.escape(uniq)}" data-where="gone">(.*?)</tr>', page, re.S)
    assert row and ">gone<" in row.group(1) and "<button" not in row.group(1)
    view = c.get(f"/email/message?box=0&uniq={uniq}").get_data(as_text=True)
    assert "The message is gone" in view
    token = csrf_of(page)
    assert post(c, "/email/move", token, box="0", uniq=uniq, to="junk").status_code == 302
    assert "gone" in flash_of(c)


# -- the message view --------------------------------------------------------------------

def test_the_message_view_explains_the_spamicity_word_by_word(email_dash):
    from nnspam.model.core import Model
    from nnspam.model.explain import explain

    app, side, mail = email_dash
    c = logged_in(app)
    uniq = mail.spam[0]
    r = c.get(f"/email/message?box=0&uniq={uniq}&page=1")
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    model = Model.load(mail.model)
    toks = model.tokens(mail.data[uniq])
    expl = explain(model, toks, DEFAULTS["ham_factor"], DEFAULTS["spam_factor"])
    words = re.findall(r'<tr class="word (spammy|hammy)">\s*<td class="word"><code>(.*?)</code>'
                       r'</td>\s*<td class="count">(\d+)</td>\s*<td class="delta">([-+][0-9.e+-]+)'
                       r'</td>\s*<td class="logit">([-+][0-9.]+)</td>', page)
    top = expl.top(15)
    assert len(words) == len(top) > 0
    for (kind, word, count, delta, logit), want in zip(words, top, strict=True):
        assert html.unescape(word) == want.word and int(count) == want.count
        assert float(delta) == pytest.approx(want.delta, rel=0.06, abs=5e-5)
        assert logit == f"{want.logit:+.2f}" and delta[0] == ("+" if want.delta >= 0 else "-")
        assert kind == ("spammy" if want.logit > 0 else "hammy")
    assert f"{expl.spamicity:.6f}" in page  # the spamicity now
    assert "journal holds no lesson" in page
    # Headers and the text are there, decoded.
    from nnspam.mail.message import parse_message

    parsed = parse_message(mail.data[uniq])
    text = html.unescape(page)
    assert " ".join(parsed.header("subject").split()) in text
    first_line = next(ln for ln in parsed.texts[0].splitlines() if len(ln.strip()) > 10)
    assert first_line.strip() in text
    # No such message: 404, never a 500.
    for url in ("/email/message?box=0&uniq=nope", "/email/message?box=7&uniq=" + uniq,
                "/email/message?box=x&uniq=" + uniq, "/email/message?uniq=" + uniq):
        assert c.get(url).status_code == 404, url


def test_hostile_headers_and_html_are_shown_as_text(tmp_path, sa_corpus):
    mail = build_mail(tmp_path, sa_corpus, n_ham=1, n_spam=1, extra=(HOSTILE,))
    app, side = make_app(mail)
    try:
        c = logged_in(app)
        uniq = mail.order[-1]
        for url in ("/email/", f"/email/message?box=0&uniq={uniq}"):
            page = c.get(url).get_data(as_text=True)
            assert "<script" not in page and "<img" not in page and "<b>" not in page, url
            assert "&lt;script&gt;alert(1)&lt;/script&gt; lunch" in page
        # The HTML part is shown as its text, never as markup.
        assert "See you at" in page and "onerror" not in page
    finally:
        side.close()


# -- the buttons ---------------------------------------------------------------------------

def test_spam_moves_the_file_into_junk_and_the_correction_is_learned_and_saved(email_dash):
    from nnspam.model.core import Model

    app, side, mail = email_dash
    c = logged_in(app)
    uniq = mail.ham[0]
    raw = mail.data[uniq]
    before = Model.load(mail.model).score([raw])[0]
    token = csrf_of(c.get("/email/").get_data(as_text=True))
    r = post(c, "/email/move", token, box="0", uniq=uniq, to="junk", page="1")
    assert r.status_code == 302 and r.headers["Location"].endswith("/email/?page=1")
    where, path = mail.where(uniq)
    assert where == "junk" and path.parent == mail.maildir / ".Junk" / "new"
    assert md.find_message(mail.maildir, uniq) is None
    rec = mail.record(uniq)
    assert (rec.place, rec.learned, rec.verdict) == ("junk", "spam", "ham")
    assert mail.corrections() == [(uniq, "spam", str(path))]
    assert "learned it as spam" in flash_of(c)
    saved = Model.load(mail.model)  # saved at once, through the model writer
    assert saved.score([raw])[0] > max(before, 0.5)
    entry = saved.journal.entries[-1]
    assert (entry.label, entry.source) == ("spam", "dashboard")
    # The list says where it is now, and what was learned.
    page = c.get("/email/").get_data(as_text=True)
    row = re.search(rf'data-uniq="{re.escape(uniq)}" data-where="junk">(.*?)</tr>', page, re.S)
    assert row and "corrected: spam" in row.group(1)
    # Again: it is in Junk already; nothing more is learned or recorded.
    r = post(c, "/email/move", token, box="0", uniq=uniq, to="junk")
    assert "already in Junk" in flash_of(c)
    assert len(mail.corrections()) == 1


def test_the_daemon_then_sees_the_dashboards_move_as_known(email_dash):
    """A daemon's Sorter that notices the same move afterwards does not learn it again."""
    from nnspam.model.core import Model
    from nnspam.services.delivery.sorter import Sorter
    from nnspam.services.delivery.state import State

    app, side, mail = email_dash
    c = logged_in(app)
    uniq = mail.ham[2]
    token = csrf_of(c.get("/email/").get_data(as_text=True))
    post(c, "/email/move", token, box="0", uniq=uniq, to="junk")
    daemon = Sorter.from_config(mail.cfg, Model.load(mail.model), State(mail.state),
                                model_name=mail.model)
    try:
        assert daemon.handle_junk(mail.maildir, mail.where(uniq)[1]) == "known"
        assert daemon.stats["learned"] == 0
    finally:
        daemon.state.close()


def test_a_dashboard_move_learns_what_the_daemon_learns_from_the_same_move(
        tmp_path, sa_corpus):
    """One correction routine: the model after "Spam" is the model after the daemon saw
    the user move the message into Junk."""
    import numpy as np

    from nnspam.model.core import Model
    from nnspam.services.delivery.sorter import Sorter
    from nnspam.services.delivery.state import State

    a = build_mail(tmp_path / "a", sa_corpus, n_ham=2, n_spam=1)
    b = build_mail(tmp_path / "b", sa_corpus, n_ham=2, n_spam=1)
    app, side = make_app(a)
    try:
        c = logged_in(app)
        token = csrf_of(c.get("/email/").get_data(as_text=True))
        post(c, "/email/move", token, box="0", uniq=a.ham[0], to="junk")
    finally:
        side.close()
    daemon = Sorter.from_config(b.cfg, Model.load(b.model), State(b.state), model_name=b.model)
    src = b.where(b.ham[0])[1]
    dest = md.move(src, b.maildir / ".Junk" / src.parent.name)
    assert daemon.handle_junk(b.maildir, dest) == "corrected"
    daemon.checkpoint()
    daemon.state.close()
    ma, mb = Model.load(a.model), Model.load(b.model)
    wa, wb = ma.wide.arrays(), mb.wide.arrays()
    assert wa.keys() == wb.keys()
    for k in wa:
        assert np.array_equal(wa[k], wb[k]), k
    raw = a.data[a.ham[0]]
    assert ma.score([raw])[0] == mb.score([raw])[0]


def test_not_spam_moves_the_file_back_into_the_inbox_cur(email_dash):
    from nnspam.model.core import Model

    app, side, mail = email_dash
    c = logged_in(app)
    uniq = mail.spam[1]
    raw = mail.data[uniq]
    before = Model.load(mail.model).score([raw])[0]
    token = csrf_of(c.get("/email/").get_data(as_text=True))
    r = post(c, "/email/move", token, box="0", uniq=uniq, to="inbox", back="message")
    assert r.status_code == 302 and "/email/message?" in r.headers["Location"]
    view = c.get(r.headers["Location"])
    assert view.status_code == 200 and "learned it as ham" in view.get_data(as_text=True)
    where, path = mail.where(uniq)
    assert where == "inbox" and path.parent == mail.maildir / "cur"
    assert path.name == uniq + ":2,"
    rec = mail.record(uniq)
    assert (rec.place, rec.learned) == ("inbox", "ham")
    assert mail.corrections() == [(uniq, "ham", str(path))]
    assert Model.load(mail.model).score([raw])[0] < min(before, 0.5)


def test_forget_undoes_the_last_lesson_and_saves_the_model(email_dash):
    import numpy as np

    from nnspam.model.core import Model
    from nnspam.model.journal import message_key

    app, side, mail = email_dash
    c = logged_in(app)
    uniq = mail.ham[3]
    raw = mail.data[uniq]
    start = Model.load(mail.model)
    wide_before = start.ensure_wide().arrays()
    before = start.score([raw])[0]
    token = csrf_of(c.get("/email/").get_data(as_text=True))
    post(c, "/email/move", token, box="0", uniq=uniq, to="junk")
    assert Model.load(mail.model).score([raw])[0] > 0.5
    view = c.get(f"/email/message?box=0&uniq={uniq}").get_data(as_text=True)
    assert "journal holds a lesson of this message: learned as spam" in view
    r = post(c, "/email/forget", token, box="0", uniq=uniq, back="message")
    assert r.status_code == 302 and "/email/message?" in r.headers["Location"]
    view = c.get(r.headers["Location"]).get_data(as_text=True)
    assert "forgot its last lesson" in html.unescape(view)
    assert "journal holds no lesson" in view
    after = Model.load(mail.model)
    assert after.score([raw])[0] == pytest.approx(before, abs=1e-6)
    assert after.journal.find(message_key(after.tokens(raw))) is None
    for k, v in after.ensure_wide().arrays().items():
        if v.dtype.kind == "f":  # the weights and counts the lesson changed, put back
            assert np.allclose(v, wide_before[k], atol=1e-5), k
    # The file stays where the move put it (Forget undoes the lesson, not the move).
    assert mail.where(uniq)[0] == "junk"
    post(c, "/email/forget", token, box="0", uniq=uniq)
    assert "Nothing to forget" in flash_of(c)


def test_bad_button_input_is_refused(email_dash):
    app, _, mail = email_dash
    c = logged_in(app)
    token = csrf_of(c.get("/email/").get_data(as_text=True))
    uniq = mail.ham[0]
    assert post(c, "/email/move", token, box="0", uniq=uniq, to="trash").status_code == 400
    assert post(c, "/email/move", token, box="0", uniq="", to="junk").status_code == 400
    assert post(c, "/email/move", token, box="0", uniq="nope", to="junk").status_code == 404
    assert post(c, "/email/move", token, box="9", uniq=uniq, to="junk").status_code == 404
    assert post(c, "/email/move", token, box="-1", uniq=uniq, to="junk").status_code == 404
    assert post(c, "/email/forget", token, box="0", uniq="nope").status_code == 404
    assert mail.where(uniq)[0] == "inbox" and mail.corrections() == []


def test_a_read_only_model_moves_and_records_but_refuses_to_learn_on_the_page(
        tmp_path, sa_corpus):
    from nnspam.model.core import Model

    mail = build_mail(tmp_path, sa_corpus, shipped=True, n_ham=2, n_spam=2)
    app, side = make_app(mail)
    try:
        c = logged_in(app)
        page = c.get("/email/").get_data(as_text=True)
        assert "(read-only)" in page and "not learned: the model default is the shipped" in page
        token = csrf_of(page)
        uniq = mail.ham[0]
        raw = mail.data[uniq]
        before = Model.load("default").score([raw])[0]
        r = post(c, "/email/move", token, box="0", uniq=uniq, to="junk")
        assert r.status_code == 302
        text = flash_of(c)
        assert "recorded as a correction" in text and "read-only" in text
        assert mail.where(uniq)[0] == "junk"
        assert mail.record(uniq).place == "junk" and len(mail.corrections()) == 1
        assert side.sorter.model.score([raw])[0] == before
        r = post(c, "/email/forget", token, box="0", uniq=uniq)
        assert r.status_code == 302
        text = flash_of(c)
        assert "Nothing forgotten" in text and "read-only" in text
        view = c.get(f"/email/message?box=0&uniq={uniq}")
        assert view.status_code == 200
    finally:
        side.close()


# -- the plot --------------------------------------------------------------------------------

def test_the_plot_counts_each_days_verdicts_and_corrections(tmp_path, sa_corpus):
    from nnspam.front.dashboard.plot import daily_svg

    day = 86400.0
    mail = build_mail(tmp_path, sa_corpus, n_ham=4, n_spam=3, spread=day)
    app, side = make_app(mail)
    try:
        days = side.days(14)
        assert len(days) == 14 and days[-1].day == "2026-11-20" and days[0].day == "2026-11-07"
        # One message a day, the newest an hour before NOW (the 20th): ham, spam, ...
        got = {d.day: (d.spam, d.ham, d.unsure) for d in days if d.spam + d.ham + d.unsure}
        order = ["ham" if u in mail.ham else "spam" for u in mail.order]
        want = {f"2026-11-{20 - i:02d}": (int(v == "spam"), int(v == "ham"), 0)
                for i, v in enumerate(reversed(order))}
        assert got == want
        assert sum(d.corrections for d in days) == 0
        c = logged_in(app)
        token = csrf_of(c.get("/email/").get_data(as_text=True))
        post(c, "/email/move", token, box="0", uniq=mail.ham[0], to="junk")
        today = time.strftime("%Y-%m-%d", time.gmtime())
        counted = {d.day: d.corrections for d in side.days(14, now=time.time())}
        assert counted[today] == 1
        page = c.get("/email/").get_data(as_text=True)
        m = re.search(r'<svg xmlns="http://www.w3.org/2000/svg" class="plot".*?</svg>', page, re.S)
        assert m and m.group(0) == daily_svg(side.days(14))
        assert "<title>2026-11-20: 1 " in m.group(0)
        assert "<script" not in page
    finally:
        side.close()


def test_tiny_changes_of_the_spamicity_keep_their_sign_and_size():
    from nnspam.front.dashboard.email_pages import signed

    assert signed(0.31) == "+0.3100" and signed(-0.00012) == "-0.0001" and signed(0) == "+0.0000"
    assert signed(3.2e-9) == "+3.2e-09" and signed(-4e-6) == "-4.0e-06"


def test_the_svg_plot_is_plain_markup_with_a_bar_per_count():
    from nnspam.front.dashboard.email_side import Day
    from nnspam.front.dashboard.plot import daily_svg, nice_top

    assert nice_top(0) == (1, 1) and nice_top(7) == (8, 2) and nice_top(23) == (25, 5)
    assert nice_top(101) == (150, 50) and nice_top(100) == (100, 20)
    days = [Day("2026-11-19", spam=3, ham=10, unsure=1, corrections=2),
            Day("2026-11-20")]
    svg = daily_svg(days, title="<b>x</b>")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "&lt;b&gt;x&lt;/b&gt;</title>" in svg and "<b>" not in svg
    for t in ("2026-11-19: 10 ham", "2026-11-19: 1 unsure", "2026-11-19: 3 spam",
              "2026-11-19: 2 corrections"):
        assert f"<title>{t}</title>" in svg
    assert "style=" not in svg and "script" not in svg  # nothing the CSP would block
    assert "nothing decided" in daily_svg([Day("2026-11-20")])


# -- without the daemon -----------------------------------------------------------------------

def test_without_maildirs_or_state_the_email_page_says_so(tmp_path):
    from nnspam.front.dashboard.app import create_app

    cfg = copy.deepcopy(DEFAULTS)
    cfg["sms"]["dashboard"] = {"password_hash": PW_HASH, "page_size": 25}
    cfg["sms"]["env_file"] = str(tmp_path / "none.env")
    app = create_app(cfg)
    app.testing = True
    c = logged_in(app)
    page = html.unescape(c.get("/email/").get_data(as_text=True))
    assert "No maildir is configured" in page and "daemon.maildirs" in page
    assert c.get("/email/message?box=0&uniq=x").status_code == 404

    maildir = md.ensure_maildir(tmp_path / "Maildir")
    cfg["daemon"].update(maildirs=[str(maildir)], state=str(tmp_path / "nowhere" / "d.db"))
    app = create_app(cfg)
    app.testing = True
    c = logged_in(app)
    page = html.unescape(c.get("/email/").get_data(as_text=True))
    assert "No daemon state at" in page and "nnspam daemon has not run" in page
    assert not (tmp_path / "nowhere").exists()  # nothing created
    cfg["daemon"]["maildirs"] = [str(tmp_path / "not-a-maildir")]
    page = html.unescape(create_app(cfg).test_client().get("/login").get_data(as_text=True))
    assert "Log in" in page


def test_sms_serve_serves_the_email_pages_too(tmp_path, sa_corpus):
    from nnspam.front.dashboard.email_side import open_email_side
    from nnspam.front.sms.store import open_store
    from nnspam.front.sms.webhook import create_app

    mail = build_mail(tmp_path, sa_corpus, n_ham=1, n_spam=1)
    store = open_store(mail.cfg)
    side = open_email_side(mail.cfg)
    try:
        app = create_app(mail.cfg, store=store, auth_token=TOKEN, email=side)
        app.testing = True
        c = logged_in(app)
        front = c.get("/").get_data(as_text=True)
        assert '<section id="inbox"' in front and 'href="/email/"' in front
        page = c.get("/email/").get_data(as_text=True)
        assert rows_of(page) == mail.order[::-1] and 'href="/"' in page
    finally:
        side.close()
        store.close()


# -- nnspam dashboard ---------------------------------------------------------------------------

def _config_file(tmp_path: Path, mail: Mail | None, password: bool = True) -> Path:
    import yaml

    conf: dict = {"sms": {"env_file": str(tmp_path / "none.env"),
                          "state": str(tmp_path / "sms-state" / "sms.db"),
                          "maildir": str(tmp_path / "SMS")}}
    if password:
        conf["sms"]["dashboard"] = {"password_hash": PW_HASH}
    if mail is not None:
        conf["model"] = mail.model
        conf["daemon"] = {"maildirs": [str(mail.maildir)], "state": str(mail.state)}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def _dashboard(args: list[str], timeout: float = 60):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "NNSPAM_"))}
    return subprocess.run([sys.executable, "-m", "nnspam", "dashboard", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_nnspam_dashboard_serves_the_email_pages_without_twilio(tmp_path, sa_corpus):
    import os
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    pytest.importorskip("waitress")
    mail = build_mail(tmp_path, sa_corpus, n_ham=1, n_spam=1)
    conf = _config_file(tmp_path, mail)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "NNSPAM_"))}
    proc = subprocess.Popen([sys.executable, "-m", "nnspam", "dashboard", "-c", str(conf),
                             "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_listening(proc, port)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=30) as r:
            assert r.status == 200 and b'type="password"' in r.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/email/", timeout=30) as r:
            assert r.url.endswith("/login")  # login first
        # No Twilio: the webhook is not there.
        req = urllib.request.Request(f"http://127.0.0.1:{port}/sms", data=b"x=1", method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=30)
        assert e.value.code in (403, 404, 405)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not (tmp_path / "SMS").exists() and not (tmp_path / "sms-state").exists()


def test_nnspam_dashboard_refuses_to_start_in_one_line(tmp_path, sa_corpus):
    import socket

    mail = build_mail(tmp_path, sa_corpus, n_ham=1, n_spam=1)

    def one_line(r, *words: str) -> None:
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("nnspam:")]
        assert len(errors) == 1 and all(w in errors[0] for w in words), r.stderr

    conf = _config_file(tmp_path, mail, password=False)
    one_line(_dashboard(["-c", str(conf), "--port", str(free_port())]), "no password",
             "dashboard.password_hash")
    conf = _config_file(tmp_path, mail)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        one_line(_dashboard(["-c", str(conf), "--port", str(port)]), f"127.0.0.1:{port}",
                 "in use")
    one_line(_dashboard(["-c", str(conf), "--port", "70000"]), "127.0.0.1:70000")
    one_line(_dashboard(["-c", str(conf), "-m", str(tmp_path / "no-such-model"),
                         "--port", str(free_port())]), "no-such-model")
    assert not (tmp_path / "SMS").exists() and not (tmp_path / "sms-state").exists()


def test_beside_a_running_daemon_each_button_is_one_correction_learned_once(
        tmp_path, sa_corpus):
    """``nnspam daemon`` watches the maildir and sees the dashboard's renames: it must find
    them recorded (the state file's lock), not learn them a second time."""
    import os
    import queue
    import subprocess
    import sys
    import threading

    import yaml

    from nnspam.model.core import Model

    from conftest import make_message

    mail = build_mail(tmp_path, sa_corpus, n_ham=2, n_spam=1)
    conf = tmp_path / "daemon.yaml"
    conf.write_text(yaml.safe_dump({"model": mail.model, "daemon": {
        "maildirs": [str(mail.maildir)], "state": str(mail.state)}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNSPAM_")}
    daemon = subprocess.Popen([sys.executable, "-m", "nnspam", "daemon", "-c", str(conf)],
                              env=env, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in daemon.stderr], daemon=True).start()
    seen: list[str] = []

    def wait_for(text: str) -> None:
        while not any(text in ln for ln in seen):
            assert daemon.poll() is None, "\n".join(seen)
            seen.append(lines.get(timeout=60))

    app, side = make_app(mail)
    try:
        wait_for("rescan of")  # watching, and the start-up rescan is done
        c = logged_in(app)
        token = csrf_of(c.get("/email/").get_data(as_text=True))
        post(c, "/email/move", token, box="0", uniq=mail.ham[0], to="junk")
        post(c, "/email/move", token, box="0", uniq=mail.spam[0], to="inbox")
        # The daemon's one worker takes events in order: once it has filed a message
        # delivered after the moves, it has handled the moves' events too.
        marker = md.deliver(mail.maildir, make_message("marker", "lunch at noon?"))
        wait_for(f"decision file={marker}")
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        side.close()
    assert not [ln for ln in seen if "correction file=" in ln], seen  # the daemon's own
    assert sorted(mail.corrections()) == sorted([
        (mail.ham[0], "spam", str(mail.where(mail.ham[0])[1])),
        (mail.spam[0], "ham", str(mail.where(mail.spam[0])[1]))])
    lessons = [(e.label, e.source) for e in Model.load(mail.model).journal.entries]
    assert lessons == [("spam", "dashboard"), ("ham", "dashboard")]
