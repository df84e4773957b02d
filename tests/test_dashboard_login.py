"""Wrong dashboard passwords are rate-limited per client address (issue 22, fault 10):
nnspam/front/dashboard/web.py, LoginThrottle and the login view (Flask's test client,
the client's address set through REMOTE_ADDR)."""

from __future__ import annotations

import threading

import pytest

from helpers import PASSWORD, csrf_of, make_dashboard

pytest.importorskip("flask")

from nnspam.front.dashboard import web  # noqa: E402


@pytest.fixture
def app(tmp_path):
    app, store = make_dashboard(tmp_path)
    yield app
    store.close()


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(app, addr: str):
    c = app.test_client()
    c.environ_base["REMOTE_ADDR"] = addr
    return c


def attempt(c, password: str):
    token = csrf_of(c.get("/login").get_data(as_text=True))
    return c.post("/login", data={"csrf_token": token, "password": password})


def test_a_guesser_is_refused_after_five_wrong_passwords(app):
    """The hostile test's guesser: a burst of wrong passwords from one address gets five
    answers (401), then 429 with Retry-After; the password is no longer tried."""
    bad = client(app, "203.0.113.5")
    codes = [attempt(bad, f"guess{i}").status_code for i in range(20)]
    assert codes == [401] * 5 + [429] * 15
    r = attempt(bad, PASSWORD)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert bad.get("/").status_code == 302


def test_wrong_passwords_from_one_address_bring_429_and_a_growing_wait(app):
    LOGIN_FREE, LOGIN_DELAY = web.LOGIN_FREE, web.LOGIN_DELAY
    clock = Clock()
    app.config["NNSPAM_DASHBOARD_LOGIN_THROTTLE"].clock = clock
    bad = client(app, "192.0.2.7")
    for _ in range(LOGIN_FREE - 1):
        r = attempt(bad, "guess")
        assert r.status_code == 401 and "Retry-After" not in r.headers
    r = attempt(bad, "guess")  # the 5th: still told wrong, and when to come back
    assert r.status_code == 401 and r.headers["Retry-After"] == str(int(LOGIN_DELAY))
    # From now on the address is refused unheard, even with the right password.
    for pw in ("guess", PASSWORD):
        r = attempt(bad, pw)
        assert r.status_code == 429 and r.headers["Retry-After"] == str(int(LOGIN_DELAY))
        assert b"Too many wrong passwords" in r.data
    assert bad.get("/").status_code == 302  # not logged in
    clock.now += 10
    assert attempt(bad, "guess").headers["Retry-After"] == str(int(LOGIN_DELAY) - 10)
    # Another address is not affected.
    good = client(app, "198.51.100.3")
    assert attempt(good, PASSWORD).status_code == 302 and good.get("/").status_code == 200
    # After the wait, one more failure: twice the wait.
    clock.now += LOGIN_DELAY
    r = attempt(bad, "guess")
    assert r.status_code == 401 and r.headers["Retry-After"] == str(int(2 * LOGIN_DELAY))
    assert attempt(bad, PASSWORD).status_code == 429
    # After that wait, the right password logs in and clears the count.
    clock.now += 2 * LOGIN_DELAY
    assert attempt(bad, PASSWORD).status_code == 302 and bad.get("/").status_code == 200
    again = client(app, "192.0.2.7")
    for _ in range(LOGIN_FREE - 1):
        assert attempt(again, "guess").status_code == 401


def test_a_failure_count_is_forgotten_after_the_window():
    clock = Clock()
    t = web.LoginThrottle(free=3, delay=30, max_delay=60, window=100, clock=clock)
    for _ in range(3):
        t.failed("192.0.2.1")
    assert t.wait("192.0.2.1") == 30
    clock.now += 101
    assert t.wait("192.0.2.1") == 0 and len(t) == 0
    assert t.failed("192.0.2.1") == 0  # counting from 1 again


def test_the_wait_is_capped():
    clock = Clock()
    t = web.LoginThrottle(free=1, delay=30, max_delay=300, clock=clock)
    waits = []
    for _ in range(100):
        waits.append(t.failed("192.0.2.1"))
        clock.now += waits[-1]
    assert waits[:5] == [30, 60, 120, 240, 300] and max(waits) == 300


def test_an_attacker_cycling_addresses_cannot_grow_the_table():
    t = web.LoginThrottle(size=100)
    for i in range(20_000):
        t.failed(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    assert len(t) == 100
    # The newest stay (the ones whose last failure is oldest made room).
    assert t.wait("10.0.78.31") == 0 and t._table["10.0.78.31"][0] == 1


def test_ipv6_addresses_count_by_their_64():
    t = web.LoginThrottle(free=2)
    t.failed("2001:db8:1:2::1")
    assert t.failed("2001:db8:1:2:ffff::9") > 0  # the same /64: the same count
    assert t.wait("2001:db8:1:3::1") == 0
    assert web.LoginThrottle.key("::ffff:192.0.2.1") == "192.0.2.1"


def test_the_counts_are_thread_safe():
    t = web.LoginThrottle(free=10**9)
    threads = [threading.Thread(target=lambda: [t.failed("192.0.2.9") for _ in range(500)])
               for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert t._table["192.0.2.9"][0] == 4000
