"""The SMS dashboard in a real browser: headless Chromium driven by Selenium.

The app is served by werkzeug on 127.0.0.1 (a free port) in a thread, over a
test SMS maildir filed by a writable copy of the shipped SMS model; for the email
pages, over a maildir of SpamAssassin messages filed by the daemon's Sorter with a
writable copy of the shipped email model. The email test saves the README's
screenshot, ``docs/dashboard-email.png`` (fixed window size, decision times and plot
date, so it changes only when the page does).

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium``
package (the dev extra). Without them the tests skip, unless CI is set: then
they fail. A screenshot of the dashboard after a move is saved in
``$NNSPAM_TEST_ARTIFACTS`` (default: the test's temporary directory).
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from conftest import needs_corpora
from helpers import (
    HAM,
    HAM2,
    HOSTILE,
    HOSTILE_FROM,
    NOW,
    PASSWORD,
    SPAM,
    SPAM2,
    build_mail,
    fill,
    make_app,
    make_dashboard,
)

CHROMEDRIVER = "/usr/bin/chromedriver"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _missing() -> str | None:
    """What is missing to run a real browser, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if _chromium() is None:
        return "chromium is not installed (apt-get install -y chromium)"
    if not os.access(CHROMEDRIVER, os.X_OK):
        return f"{CHROMEDRIVER} is not installed (apt-get install -y chromium-driver)"
    return None


MISSING = _missing()
# Skip only on a developer's machine without a browser; under CI every test
# here runs, and fails when something is missing.
pytestmark = pytest.mark.skipif(MISSING is not None and not os.environ.get("CI"),
                                reason=f"{MISSING} (CI always has it)")


def test_a_browser_is_available():
    assert MISSING is None, MISSING


@pytest.fixture
def served(tmp_path):
    """(base URL, store) for the dashboard over a filled test maildir."""
    from werkzeug.serving import make_server

    from nnspam.model.core import Model

    model = tmp_path / "sms-model"
    Model.load("default-sms").save(model)
    app, store = make_dashboard(tmp_path, model=str(model))
    fill(store)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", store
    finally:
        server.shutdown()
        thread.join(10)
        store.close()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = _chromium() or ""
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def texts(driver, folder: str) -> list[str]:
    """The SMS texts shown in the Inbox (``inbox``) or Spam (``spam``) section."""
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, f"#{folder} td.text")]


def click_and_wait(driver, element) -> None:
    """Click a submit button and wait until the next page has replaced this one."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def gone(_driver) -> bool:
        # Stale, or (mid-navigation) chromedriver's "node does not belong to
        # the document": either way the old page is going away.
        try:
            element.is_enabled()
        except WebDriverException:
            return True
        return False

    element.click()
    WebDriverWait(driver, 15).until(gone)
    WebDriverWait(driver, 15).until(
        lambda d: d.execute_script("return document.readyState") == "complete")


def log_in(driver, base: str, password: str = PASSWORD) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + "/")
    driver.find_element(By.ID, "password").send_keys(password)
    click_and_wait(driver, driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]"))


def no_alert(driver) -> bool:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        alert = driver.switch_to.alert
    except NoAlertPresentException:
        return True
    alert.dismiss()
    return False


def test_login_is_required_and_a_wrong_password_is_refused(served, browser):
    from selenium.webdriver.common.by import By

    base, _ = served
    browser.get(base + "/")
    assert browser.current_url.endswith("/login")
    assert browser.find_element(By.ID, "password").get_attribute("type") == "password"
    assert HAM not in browser.page_source and not browser.find_elements(By.ID, "inbox")
    log_in(browser, base, "wrong password")
    assert "Wrong password" in browser.find_element(By.CSS_SELECTOR, ".error").text
    assert not browser.find_elements(By.ID, "inbox")
    browser.get(base + "/")
    assert browser.current_url.endswith("/login")
    log_in(browser, base)
    assert browser.find_element(By.ID, "inbox").is_displayed()
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, ".logout button"))
    assert browser.current_url.endswith("/login")
    browser.get(base + "/")
    assert browser.current_url.endswith("/login")


def test_the_dashboard_lists_inbox_and_spam(served, browser):
    base, _ = served
    log_in(browser, base)
    inbox, spam = texts(browser, "inbox"), texts(browser, "spam")
    assert inbox == [HAM2, HOSTILE, HAM]  # newest first
    assert spam == [SPAM2, SPAM]


def test_a_click_moves_the_message_to_the_other_folder(served, browser, tmp_path):
    from selenium.webdriver.common.by import By

    base, store = served
    log_in(browser, base)
    before = store.sorter.model.score([SPAM])[0]
    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#spam tr.sms")
               if r.find_element(By.CSS_SELECTOR, "td.text").text == SPAM)
    button = row.find_element(By.CSS_SELECTOR, "button.move")
    assert button.text == "Not spam"
    click_and_wait(browser, button)
    assert SPAM in texts(browser, "inbox") and SPAM not in texts(browser, "spam")
    assert "learned it as ham" in browser.find_element(By.CSS_SELECTOR, ".flash").text
    assert store.sorter.model.score([SPAM])[0] < before
    out = Path(os.environ.get("NNSPAM_TEST_ARTIFACTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    shot = out / "dashboard-after-move.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 1000
    # And back: the ham button files it as spam again.
    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#inbox tr.sms")
               if r.find_element(By.CSS_SELECTOR, "td.text").text == SPAM)
    click_and_wait(browser, row.find_element(By.CSS_SELECTOR, "button.move"))
    assert SPAM in texts(browser, "spam") and SPAM not in texts(browser, "inbox")


def test_hostile_content_is_shown_as_text_and_never_runs(served, browser):
    from selenium.webdriver.common.by import By

    base, _ = served
    log_in(browser, base)
    assert no_alert(browser)
    assert HOSTILE in texts(browser, "inbox")
    froms = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#inbox td.from")]
    assert HOSTILE_FROM in froms
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert no_alert(browser)


# -- the email pages -------------------------------------------------------------------------

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "dashboard-email.png"


@pytest.fixture
def served_email(tmp_path, sa_corpus):
    """(base URL, Mail) for the dashboard without SMS (``nnspam dashboard``) over a maildir
    of SpamAssassin messages filed by the daemon's Sorter, decided over two weeks before
    the plot's fixed "now", and three of them moved by the user as in a mail client."""
    from werkzeug.serving import make_server

    from nnspam.model.core import Model
    from nnspam.services.delivery.sorter import Sorter
    from nnspam.services.delivery.state import State

    mail = build_mail(tmp_path, sa_corpus, n_ham=20, n_spam=12, spread=36000.0)
    daemon = Sorter.from_config(mail.cfg, Model.load(mail.model), State(mail.state),
                                model_name=mail.model)
    from nnspam.mail import maildir as md

    for i, (uniq, to) in enumerate(((mail.ham[3], "junk"), (mail.ham[9], "junk"),
                                    (mail.spam[4], "inbox"))):
        where, src = mail.where(uniq)
        if to == "junk":
            daemon.handle_junk(mail.maildir, md.move(src, mail.maildir / ".Junk" / "cur"))
        else:
            daemon.handle_inbox_cur(mail.maildir, md.move(src, mail.maildir / "cur",
                                                          name=src.name + ":2,"))
        daemon.state.db.execute("UPDATE corrections SET at=? WHERE uniq=?",
                                (NOW - 86400 * (2 + 4 * i), uniq))
    daemon.checkpoint()
    daemon.state.close()
    app, side = make_app(mail)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", mail
    finally:
        server.shutdown()
        thread.join(10)
        side.close()


def email_row(driver, uniq: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'#decisions tr.email[data-uniq="{uniq}"]')


@needs_corpora
def test_spam_on_a_ham_email_moves_it_to_junk_and_records_the_correction(
        served_email, browser, tmp_path):
    from selenium.webdriver.common.by import By

    base, mail = served_email
    log_in(browser, base)
    assert browser.current_url.endswith("/email/")
    assert browser.find_element(By.CSS_SELECTOR, "#plot svg.plot").is_displayed()
    uniq = mail.ham[-1]  # the newest ham: in the inbox, never corrected
    row = email_row(browser, uniq)
    assert row.get_attribute("data-where") == "inbox"
    assert row.find_element(By.CSS_SELECTOR, "td.where").text == "Inbox"
    button = row.find_element(By.CSS_SELECTOR, "button.spam")
    assert button.text == "Spam"
    click_and_wait(browser, button)
    assert "learned it as spam" in browser.find_element(By.CSS_SELECTOR, ".flash").text
    row = email_row(browser, uniq)
    assert row.get_attribute("data-where") == "junk"
    assert "corrected: spam" in row.find_element(By.CSS_SELECTOR, "td.verdict").text
    where, path = mail.where(uniq)
    assert where == "junk" and path.parent.parent == mail.maildir / ".Junk"
    rec = mail.record(uniq)
    assert (rec.place, rec.learned) == ("junk", "spam")
    assert mail.corrections()[-1] == (uniq, "spam", str(path))
    assert no_alert(browser)
    # The screenshot for the README: a fixed window, fixed decision times and plot "now".
    browser.set_window_size(1280, 1500)
    browser.get(base + "/email/")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10000
    out = Path(os.environ.get("NNSPAM_TEST_ARTIFACTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SCREENSHOT, out / "dashboard-email.png")


@needs_corpora
def test_the_message_view_shows_the_words_and_the_text_as_text(served_email, browser):
    from selenium.webdriver.common.by import By

    base, mail = served_email
    log_in(browser, base)
    uniq = mail.spam[-1]  # the newest spam: on the first page
    link = email_row(browser, uniq).find_element(By.CSS_SELECTOR, "td.subject a")
    click_and_wait(browser, link)
    assert browser.find_element(By.ID, "message").get_attribute("data-uniq") == uniq
    words = browser.find_elements(By.CSS_SELECTOR, "#explanation tr.word")
    assert 0 < len(words) <= 15
    deltas = [w.find_element(By.CSS_SELECTOR, "td.delta").text for w in words]
    assert all(d[0] in "+-" for d in deltas)
    assert browser.find_element(By.CSS_SELECTOR, "pre.body").text.strip()
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert no_alert(browser)
