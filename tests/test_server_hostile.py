"""``nnspam serve`` under hostile input: hypothesis-generated and hand-made bad
requests each get a spamd error code or a closed connection (never a crash
of the worker), while another client is served at the same time, and the
server's memory stays bounded over 2,000 hostile requests (measured: the
resident set of the supervisor and its workers, printed)."""

from __future__ import annotations

import random
import socket
import threading
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Server
from helpers import exchange, sa_sample, spamd_request

CODES = {0, 64, 65, 67, 69, 73, 74, 76, 77}  # 70 (EX_SOFTWARE) would be a bug of ours


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("hostile"), args=("--workers", "2"),
                 extra_cfg="serve:\n  timeout: 2\n  max_size: 200000\n")
    yield srv
    assert srv.stop() == 0
    log = srv.log()
    assert "Traceback" not in log and "request failed" not in log, log[-3000:]


class Bystander:
    """A well-behaved client checking one message in a loop, to show that the
    server keeps serving others while it is attacked."""

    def __init__(self, srv: Server, raw: bytes) -> None:
        self.srv, self.raw = srv, raw
        self.ok = 0
        self.bad: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            resp = self.srv.request(spamd_request("CHECK", self.raw))
            if resp.startswith(b"SPAMD/1.5 0 EX_OK\r\nSpam: True ; "):
                self.ok += 1
            else:
                self.bad.append(resp)
            time.sleep(0.01)

    def __enter__(self) -> Bystander:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.bad, self.bad[:3]
        assert self.ok > 0


def send(srv: Server, data: bytes, half_close: bool = True, timeout: float = 20) -> bytes | None:
    """Send ``data``; the answer, or None when the server closed the connection
    on us (reset, broken pipe: the endless-line case)."""
    try:
        return exchange(srv.port, data, half_close=half_close, timeout=timeout)
    except TimeoutError:
        raise  # the server neither answered nor closed: a failure
    except OSError:  # reset, broken pipe, not connected: closed on us
        return None


def check_answer(resp: bytes | None) -> None:
    """A spamd status line with a known code, or nothing (connection closed)."""
    if not resp:
        return
    assert resp.startswith(b"SPAMD/1.5 "), resp[:200]
    code = int(resp.split(b" ", 2)[1])
    assert code in CODES, resp[:200]


# -- hypothesis ----------------------------------------------------------------------

VERB = st.one_of(st.sampled_from(["PING", "CHECK", "SYMBOLS", "REPORT", "REPORT_IFSPAM",
                                  "HEADERS", "PROCESS", "TELL", "SKIP"]),
                 st.text(min_size=0, max_size=12))
PROTO = st.sampled_from(["SPAMC/1.5", "SPAMC/1.2", "SPAMC/", "HTTP/1.1", "", "SPAMC/1.5 x"])
CL = st.one_of(st.integers(-5, 300).map(str), st.sampled_from(
    ["", "abc", "1e3", "0x10", " 12", "²", "٣", "99999999999999999999", "-0", "4294967296"]))
HEADER = st.one_of(
    CL.map(lambda v: f"Content-length: {v}"),
    st.sampled_from(["Compress: zlib", "Compress: gzip", "User: alice", "User: ../../etc",
                     "Message-class: spam", "Message-class: eggs", "Set: local",
                     "Remove: local", "Set: remote", "no colon", ": empty name"]),
    st.text(max_size=40).filter(lambda t: "\n" not in t and "\r" not in t))


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    verb, proto = draw(VERB), draw(PROTO)
    lines = [f"{verb} {proto}".encode("utf-8", "replace")]
    lines += [h.encode("utf-8", "replace") for h in draw(st.lists(HEADER, max_size=6))]
    body = draw(st.binary(max_size=300))
    if draw(st.booleans()):
        body = zlib.compress(body) if draw(st.booleans()) else body
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    data = eol.join(lines) + eol + eol + body
    cut = draw(st.integers(0, len(data)))
    return data[:cut] if draw(st.booleans()) else data


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(req=requests())
def test_generated_bad_requests_get_an_error_code_or_a_close(hostile_server, req):
    check_answer(send(hostile_server, req))


def test_generated_requests_while_another_client_is_served(hostile_server, sa_corpus):
    spam = sa_sample(sa_corpus, 2)[0]
    with Bystander(hostile_server, spam) as by:
        rnd = random.Random(7)
        for _ in range(200):
            check_answer(send(hostile_server, _random_request(rnd)))
    assert by.ok >= 1


def _random_request(rnd: random.Random) -> bytes:
    verb = rnd.choice([b"CHECK", b"PROCESS", b"TELL", b"HEADERS", b"FROB", b"", b"\xff\xfe"])
    cl = rnd.choice([b"10", b"-1", b"abc", b"500000", b"", b"3"])
    body = rnd.randbytes(rnd.randint(0, 50))
    data = verb + b" SPAMC/1.5\r\nContent-length: " + cl + b"\r\n\r\n" + body
    return data[: rnd.randint(0, len(data))]


# -- hand-made -----------------------------------------------------------------------

def test_endless_header_line_is_cut_off(hostile_server, sa_corpus):
    with Bystander(hostile_server, sa_sample(sa_corpus, 2)[0]):
        resp = send(hostile_server, b"CHECK SPAMC/1.5\r\nX-Endless: " + b"A" * (4 << 20))
        check_answer(resp)
        assert resp is None or resp.startswith(b"SPAMD/1.5 76 ")


def test_endless_request_line_is_cut_off(hostile_server):
    resp = send(hostile_server, b"C" * (1 << 20))
    assert resp is None or resp.startswith(b"SPAMD/1.5 76 ")


def test_silent_clients_are_dropped_while_others_are_served(hostile_server, sa_corpus):
    spam = sa_sample(sa_corpus, 2)[0]
    silent = [socket.create_connection(("127.0.0.1", hostile_server.port)) for _ in range(10)]
    half = socket.create_connection(("127.0.0.1", hostile_server.port))
    half.sendall(b"CHECK SPAMC/1.5\r\nContent-length: 1000\r\n\r\nonly a little")
    try:
        with Bystander(hostile_server, spam) as by:
            t0 = time.monotonic()
            for s in [*silent, half]:
                s.settimeout(30)
                try:
                    assert s.recv(100) == b""  # closed by the server, no answer
                except ConnectionResetError:
                    pass
            assert time.monotonic() - t0 < 20  # serve.timeout is 2 s
            time.sleep(0.2)
        assert by.ok >= 5
    finally:
        for s in [*silent, half]:
            s.close()


@pytest.mark.parametrize("bomb", [
    zlib.compress(b"\0" * (50 << 20), 9),  # 50 MB of zeros
    zlib.compress(b"Subject: x\r\n\r\n" + b"spam " * (10 << 20), 9),  # 50 MB of words
])
def test_zlib_bombs_are_refused(hostile_server, sa_corpus, bomb):
    with Bystander(hostile_server, sa_sample(sa_corpus, 2)[0]):
        for verb in ("PROCESS", "CHECK", "TELL"):
            resp = send(hostile_server, spamd_request(verb, bomb, Compress="zlib",
                                                      Message_class="spam", Set="local"))
            assert resp is not None and resp.startswith(b"SPAMD/1.5 65 "), resp[:200]


def test_lying_content_length_too_long_and_too_short(hostile_server, sa_corpus):
    raw = sa_sample(sa_corpus, 2)[0]
    short = b"CHECK SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % (len(raw) + 10) + raw
    assert send(hostile_server, short).startswith(b"SPAMD/1.5 76 ")
    # Too short: the message is cut where the client said; the rest is ignored.
    long = b"CHECK SPAMC/1.5\r\nContent-length: 100\r\n\r\n" + raw
    assert send(hostile_server, long).startswith(b"SPAMD/1.5 0 EX_OK")
    # Said nothing more and did not close: dropped after serve.timeout (2 s).
    t0 = time.monotonic()
    assert send(hostile_server, short, half_close=False) in (b"", None)
    assert 1.5 < time.monotonic() - t0 < 20


# -- memory --------------------------------------------------------------------------

def _rss_kb(pid: int) -> int:
    """Resident set of ``pid`` and its child processes (the workers), in KiB."""
    total = 0
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


@pytest.mark.slow
def test_memory_stays_bounded_over_2000_hostile_requests(hostile_server, sa_corpus):
    msgs = sa_sample(sa_corpus, 40)
    for raw in msgs * 3:  # warm up: every worker has scored mail
        assert send(hostile_server, spamd_request("CHECK", raw)).startswith(b"SPAMD/1.5 0 ")
    before = _rss_kb(hostile_server.proc.pid)
    rnd = random.Random(11)
    bombs = [zlib.compress(b"\0" * (20 << 20), 9), zlib.compress(rnd.randbytes(1000))]
    kinds = [
        lambda: _random_request(rnd),
        lambda: b"CHECK SPAMC/1.5\r\nX: " + b"A" * rnd.randint(9000, 200000) + b"\r\n\r\n",
        lambda: spamd_request("PROCESS", rnd.choice(bombs), Compress="zlib"),
        lambda: spamd_request("PROCESS", rnd.choice(msgs))[: rnd.randint(0, 2000)],
        lambda: spamd_request("CHECK", rnd.randbytes(rnd.randint(0, 150000))),
        lambda: spamd_request("HEADERS", b"x" * 190000 + b"\n\n" + b"y" * rnd.randint(0, 50000)),
        lambda: spamd_request("TELL", rnd.choice(msgs), Message_class="spam", Set="local",
                              User="../x"),
    ]
    with Bystander(hostile_server, msgs[0]):
        for i in range(2000):
            check_answer(send(hostile_server, kinds[i % len(kinds)]()))
    after = _rss_kb(hostile_server.proc.pid)
    print(f"\nserver RSS (supervisor + workers): {before / 1024:.1f} MB before, "
          f"{after / 1024:.1f} MB after 2,000 hostile requests "
          f"({(after - before) / 1024:+.1f} MB)")
    assert after - before < 50 * 1024
