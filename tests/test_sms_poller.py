"""The Twilio poller against a local fake Twilio API on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from helpers import files

pytest.importorskip("twilio")

from nnspam.front.sms.poller import Poller, make_client, read_cursor  # noqa: E402

ACCOUNT = "AC" + "1" * 32
NUMBER = "+441632960000"
BASE = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


class FakeTwilio:
    """The Messages list of Twilio's API (newest first, paged), with failures on demand."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.fail: list[int] = []  # status codes for the next requests (0 = answer normally)
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                fake.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, n: int, start: int = 0, direction: str = "inbound", to: str = NUMBER) -> None:
        for i in range(start, start + n):
            self.messages.append({
                "sid": f"SM{i:032d}", "account_sid": ACCOUNT, "from": f"+4477009{i:05d}",
                "to": to, "body": f"message number {i} see you at {i % 12 + 1}",
                "direction": direction, "status": "received", "num_media": "0",
                "date_sent": format_datetime(BASE + timedelta(minutes=i)),
                "date_created": format_datetime(BASE + timedelta(minutes=i)),
                "uri": f"/2010-04-01/Accounts/{ACCOUNT}/Messages/SM{i:032d}.json",
            })

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        u = urlsplit(h.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        self.requests.append({"path": u.path, **q})
        code = self.fail.pop(0) if self.fail else 0
        if u.path != f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json":
            code = 404
        if code:
            body = json.dumps({"code": 20429 if code == 429 else 20500, "status": code,
                               "message": "Too Many Requests" if code == 429 else "Oops",
                               "more_info": "https://www.twilio.com/docs/errors"}).encode()
            h.send_response(code)
        else:
            body = json.dumps(self.page(u.path, q)).encode()
            h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def page(self, path: str, q: dict) -> dict:
        from email.utils import parsedate_to_datetime

        after = q.get("DateSent>")
        rows = [m for m in self.messages if m["to"] == q.get("To", m["to"])]
        if after:
            t = datetime.fromisoformat(after.replace("Z", "+00:00"))
            rows = [m for m in rows if parsedate_to_datetime(m["date_sent"]) >= t]
        rows.sort(key=lambda m: parsedate_to_datetime(m["date_sent"]), reverse=True)
        size, page = int(q.get("PageSize", 50)), int(q.get("Page", 0))
        chunk = rows[page * size:(page + 1) * size]
        nq = dict(q, Page=str(page + 1), PageToken=f"PA{page + 1}")
        more = (page + 1) * size < len(rows)
        return {"messages": chunk, "page": page, "page_size": size,
                "uri": f"{path}?{urlencode(q)}",
                "first_page_uri": f"{path}?{urlencode(dict(q, Page='0'))}",
                "next_page_uri": f"{path}?{urlencode(nq)}" if more else None,
                "previous_page_uri": None}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    f = FakeTwilio()
    yield f
    f.close()


def poller(store, fake, tmp_path, **kw) -> Poller:
    client = make_client(ACCOUNT, "token", base_url=fake.url)
    return Poller(store, client, NUMBER, tmp_path / "state" / "cursor", page_size=3, **kw)


def stored_sids(store) -> list[str]:
    return sorted(r[0] for r in store.db.execute("SELECT sid FROM sms"))


def test_poll_stores_unseen_messages_across_pages_and_advances_the_cursor(store, fake, tmp_path):
    fake.add(7)
    fake.add(2, start=100, direction="outbound-api")  # our own replies are not stored
    fake.add(1, start=200, to="+15005550006")  # another number: filtered by To=
    p = poller(store, fake, tmp_path, since=BASE - timedelta(hours=1))
    assert p.poll_once() == 7
    assert stored_sids(store) == [f"SM{i:032d}" for i in range(7)]
    assert len([r for r in fake.requests if r["path"].endswith("Messages.json")]) == 3
    assert all(r["To"] == NUMBER for r in fake.requests)
    assert fake.requests[0]["DateSent>"] == "2026-11-20T08:00:00Z"
    assert read_cursor(tmp_path / "state" / "cursor") == BASE + timedelta(minutes=6)
    n_files = len(files(store.maildir)) + len(files(store.maildir / ".Junk"))
    assert n_files == 7
    # Next poll starts at the cursor; the messages at the cursor are not stored again.
    fake.add(2, start=7)
    fake.requests.clear()
    assert p.poll_once() == 2
    assert fake.requests[0]["DateSent>"] == "2026-11-20T09:06:00Z"
    assert len(stored_sids(store)) == 9
    assert read_cursor(tmp_path / "state" / "cursor") == BASE + timedelta(minutes=8)
    assert p.poll_once() == 0


def test_a_message_the_webhook_stored_is_not_stored_again(store, fake, tmp_path):
    from nnspam.front.sms.message import Sms

    fake.add(3)
    store.store(Sms("SM" + "0" * 31 + "1", "+1", NUMBER, "from the webhook"))
    assert poller(store, fake, tmp_path, since=BASE).poll_once() == 2
    assert store.count() == 3


@pytest.mark.parametrize("status", [429, 500])
def test_api_errors_are_logged_and_retried_later_without_loss_or_doubles(
        store, fake, tmp_path, caplog, status):
    fake.add(8)
    # First page answered, second page fails: a poll cut short half way.
    fake.fail = [0, status]
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return len(waits) >= 3  # stop after the third wait

    p = poller(store, fake, tmp_path, since=BASE, interval=10, wait=wait)
    with caplog.at_level(logging.INFO, logger="nnspam.front.sms"):
        # The twilio client may retry on its own; fail often enough to exhaust it.
        assert p.run() == 0
    assert stored_sids(store) == [f"SM{i:032d}" for i in range(8)]
    assert store.count() == 8
    assert len(files(store.maildir)) + len(files(store.maildir / ".Junk")) == 8
    err = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(err) == 1 and f"HTTP {status}" in err[0] and "retrying in 20 s" in err[0]
    if status == 429:
        assert "rate limited" in err[0]
    assert waits == [20, 10, 10]  # backoff after the failure, reset after a good poll
    assert read_cursor(tmp_path / "state" / "cursor") == BASE + timedelta(minutes=7)


def test_backoff_doubles_up_to_the_cap_and_once_reports_failure(store, fake, tmp_path, caplog):
    fake.fail = [503] * 5
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return len(waits) >= 4

    p = poller(store, fake, tmp_path, interval=10, max_backoff=50, wait=wait)
    p.run()
    assert waits == [20, 40, 50, 50]
    assert not (tmp_path / "state" / "cursor").exists()
    fake.fail = [429]
    assert poller(store, fake, tmp_path).run(once=True) == 1
    assert poller(store, fake, tmp_path).run(once=True) == 0


def test_connection_errors_are_retried(store, tmp_path, caplog):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    client = make_client(ACCOUNT, "token", base_url=f"http://127.0.0.1:{port}")
    p = Poller(store, client, NUMBER, tmp_path / "cursor")
    with caplog.at_level(logging.ERROR, logger="nnspam.front.sms"):
        assert p.run(once=True) == 1
    assert "network error" in caplog.text and store.count() == 0
