"""``nnspam filter`` through a running ``nnspam serve`` (filter.server /
--server): the same bytes and exit codes as in-process, no NumPy import on
that path, and the in-process fallback whenever the server is down, refuses,
times out or answers anything unusable."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from nnspam.services import scoring
from nnspam.services.delivery import pipefilter, spamc

from conftest import Server, free_port
from helpers import NNSPAM, serve_each


class FakeServer:
    """A Unix-socket server that reads one request per connection and sends
    what ``answer(request)`` returns (None: says nothing until the client
    gives up). Counts its connections."""

    def __init__(self, path: Path, answer: Callable[[bytes], bytes | None]) -> None:
        self.path = str(path)
        self.answer = answer
        self.connections = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.thread = threading.Thread(target=serve_each, args=(self.sock, self._handle),
                                       daemon=True)
        self.thread.start()

    def _handle(self, conn: socket.socket) -> None:
        self.connections += 1
        data = b""
        try:
            while chunk := conn.recv(65536):
                data += chunk
        except OSError:
            return
        reply = self.answer(data)
        if reply is None:
            try:
                conn.recv(1)  # until the client closes
            except OSError:
                pass
            return
        try:
            conn.sendall(reply)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


def body_of(request: bytes) -> bytes:
    return request.split(b"\r\n\r\n", 1)[1]


def ok_answer(body: bytes, spam: str = "True ; 10.0 / 5.0") -> bytes:
    return (b"SPAMD/1.5 0 EX_OK\r\nSpam: " + spam.encode() + b"\r\nContent-length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


def messages(sa_corpus: Path, n: int) -> list[bytes]:
    out: list[bytes] = []
    for part, k in (("spam", 0.4), ("spam_2", 0.1), ("easy_ham", 0.3), ("hard_ham", 0.2)):
        files = sorted((sa_corpus / part).iterdir())
        step = max(1, len(files) // max(1, int(n * k)))
        out += [p.read_bytes() for p in files[::step][: int(n * k)]]
    return out


def filter_run(argv: list[str], raw: bytes) -> tuple[int, bytes]:
    """``nnspam filter ARGV`` in this process (the fast-path entry point)."""
    out = io.BytesIO()
    rc = spamc.run(spamc.build_parser().parse_args(argv), io.BytesIO(raw), out)
    return rc, out.getvalue()


def in_process(argv: list[str], raw: bytes) -> tuple[int, bytes]:
    """The in-process filter alone (nnspam.services.delivery.pipefilter), the reference."""
    out = io.BytesIO()
    rc = pipefilter.run(pipefilter.build_parser().parse_args(argv), io.BytesIO(raw), out)
    return rc, out.getvalue()


def forbid_in_process(monkeypatch) -> None:
    """From now on, any fall back to the in-process filter fails the test."""
    def boom(*a, **k):
        raise AssertionError("classified in-process, not through the server")
    monkeypatch.setattr(pipefilter, "run", boom)


def write_cfg(tmp: Path, text: str) -> str:
    p = tmp / "filter.yaml"
    p.write_text(text)
    return str(p)


# -- through the server ------------------------------------------------------------------

def test_server_output_equals_in_process_on_50_messages(server, sa_corpus, tmp_path,
                                                        monkeypatch):
    msgs = messages(sa_corpus, 50)
    assert len(msgs) == 50
    plain = write_cfg(tmp_path, "")
    want = [in_process(["-c", plain, "--verdict-exit"], raw) for raw in msgs]
    assert {rc for rc, _ in want} == {0, 1}  # both verdicts among them
    cfg = tmp_path / "via.yaml"
    cfg.write_text(f"filter:\n  server: {server.sock}\n")
    monkeypatch.setattr(pipefilter, "run", None)  # any in-process fallback would fail
    for raw, (rc, out) in zip(msgs, want, strict=True):
        assert filter_run(["-c", str(cfg), "--verdict-exit"], raw) == (rc, out)
        assert filter_run(["-c", str(cfg)], raw) == (0, out)


def test_tcp_address_and_failover_to_the_next_server(server, sa_corpus, tmp_path,
                                                     monkeypatch):
    raw = messages(sa_corpus, 10)[0]
    want = in_process(["-c", write_cfg(tmp_path, ""), "--verdict-exit"], raw)
    dead = f"127.0.0.1:{free_port()}"
    cfg = tmp_path / "via.yaml"
    cfg.write_text(f"filter:\n  server: {dead}, {tmp_path}/nope.sock, {server.tcp}\n")
    forbid_in_process(monkeypatch)
    assert filter_run(["-c", str(cfg), "--verdict-exit"], raw) == want
    # --server on the command line, without any config file.
    assert filter_run(["-c", write_cfg(tmp_path, ""), "--server", server.sock,
                       "--verdict-exit"], raw) == want


IMPORTS = (
    "import sys\n"
    "startup = {k.split('.')[0] for k in sys.modules}  # site, .pth hooks\n"
    "from nnspam.front.cli import main\n"
    "rc = main(['filter'] + sys.argv[1:])\n"
    "mods = {k.split('.')[0] for k in sys.modules} - startup\n"
    "allowed = set(sys.stdlib_module_names) | {'nnspam', 'yaml', '_yaml', 'cython_runtime'}\n"
    "third = sorted(m for m in mods - allowed if not m.startswith('_cython_'))\n"
    "print(rc, third, 'numpy' in sys.modules, file=sys.stderr)\n"
)


@pytest.mark.parametrize("how", ["config", "option"])
def test_server_path_imports_no_numpy(server, sa_corpus, tmp_path, how):
    raw = messages(sa_corpus, 10)[0]
    want = in_process(["-c", write_cfg(tmp_path, "")], raw)[1]
    if how == "config":
        argv = ["-c", write_cfg(tmp_path, f"filter:\n  server: {server.sock}\n")]
    else:
        argv = ["--server", server.tcp]
    env = dict(os.environ, HOME=str(tmp_path))
    env.pop("NNSPAM_CONFIG", None)
    r = subprocess.run([sys.executable, "-c", IMPORTS, *argv], input=raw, capture_output=True,
                       env=env, cwd=tmp_path, timeout=120)
    assert r.stdout == want
    assert r.stderr.decode().strip().splitlines()[-1] == "0 [] False"
    # Control: the in-process path does import NumPy, so the check can fail.
    r = subprocess.run([sys.executable, "-c", IMPORTS, "--server", "none"], input=raw,
                       capture_output=True, env=env, cwd=tmp_path, timeout=120)
    assert r.stdout == want
    assert r.stderr.decode().strip().splitlines()[-1] == "0 ['numpy'] True"


def test_real_filter_process_via_server_equals_in_process(server, sa_corpus, tmp_path):
    cfg = write_cfg(tmp_path, f"filter:\n  server: {server.sock}\n")
    for raw in messages(sa_corpus, 10)[::3]:
        want = in_process(["-c", write_cfg(tmp_path, ""), "--verdict-exit"], raw)
        r = subprocess.run([str(NNSPAM), "filter", "-c", cfg, "--verdict-exit"], input=raw,
                           capture_output=True, timeout=120)
        assert (r.returncode, r.stdout) == want
        assert r.stderr == b""  # the server answered: no fallback was logged


def test_unsure_band_exit_codes_match(server, sa_corpus, tmp_path):
    band = "  unsure: [0.2, 0.9]\n"
    plain = write_cfg(tmp_path, "filter:\n" + band)
    via = tmp_path / "via.yaml"
    via.write_text(f"filter:\n  server: {server.sock}\n" + band)
    codes = set()
    for raw in messages(sa_corpus, 50):
        want = in_process(["-c", plain, "--verdict-exit"], raw)
        assert filter_run(["-c", str(via), "--verdict-exit"], raw) == want
        codes.add(want[0])
    assert codes >= {0, 1}


def test_unsure_band_edge_is_decided_in_process():
    s = scoring.FilterSettings("default", 0.5, 0.9, 0.1, 1000, (0.3, 0.7))
    raw = b"Subject: x\n\nhello\n"
    for sp, want in (("0.300", None), ("0.700", None), ("0.301", "unsure"), ("0.299", "ham"),
                     ("0.800", "spam")):
        yes = float(sp) >= 0.5
        word = "Unsure" if 0.3 <= float(sp) < 0.7 else "Yes" if yes else "No"  # the server's
        value = (f"{word}, spamicity={sp}, threshold=0.500, "
                 f"version={spamc.__version__}")
        fields = [(scoring.STATUS, value)] + ([(scoring.FLAG, "YES")]
                                                 if word == "Yes" else [])
        body = scoring.mark(raw, fields)
        rep = spamc._parse(ok_answer(body, f"{yes} ; 1.0 / 5.0"))
        got = spamc._check(raw, rep, s)
        assert (got[1] if got else None) == want, sp


def test_model_option_classifies_in_process_unless_server_given(tmp_path, sa_corpus):
    raw = messages(sa_corpus, 10)[0]
    fake = FakeServer(tmp_path / "fake.sock", lambda req: ok_answer(body_of(req)))
    try:
        cfg = write_cfg(tmp_path, f"filter:\n  server: {fake.path}\n")
        want = in_process(["-c", cfg, "-m", "default"], raw)
        assert filter_run(["-c", cfg, "-m", "default"], raw) == want
        assert fake.connections == 0
        assert filter_run(["-c", cfg, "-m", "default", "--server", fake.path], raw) == want
        assert fake.connections == 1  # asked (its answer is unusable: in-process again)
    finally:
        fake.close()


# -- fallback: the output and exit codes never depend on the server ------------------------

def _tamper(req: bytes) -> bytes:
    body = body_of(req).replace(b"Subject:", b"Subjekt:", 1)
    return ok_answer(body)


def _wrong_threshold(real: Server) -> Callable[[bytes], bytes]:
    def answer(req: bytes) -> bytes:
        rep = spamc.process(spamc.parse_addresses(real.sock)[0], body_of(req))
        return ok_answer(rep.body.replace(b"threshold=0.500", b"threshold=0.600"),
                         rep.headers["spam"])
    return answer


def _spam_flag_flipped(real: Server) -> Callable[[bytes], bytes]:
    def answer(req: bytes) -> bytes:
        rep = spamc.process(spamc.parse_addresses(real.sock)[0], body_of(req))
        flipped = "False" if rep.spam else "True"
        return ok_answer(rep.body, f"{flipped} ; {rep.score} / {rep.threshold}")
    return answer


FAKES: dict[str, Callable[..., Callable[[bytes], bytes | None]]] = {
    "refuses": lambda real: lambda req: b"SPAMD/1.5 76 Bad header line: (no colon)\r\n",
    "unavailable": lambda real: lambda req: b"SPAMD/1.5 69 EX_UNAVAILABLE\r\n",
    "silent": lambda real: lambda req: None,
    "closes": lambda real: lambda req: b"",
    "garbage": lambda real: lambda req: os.urandom(300),
    "http": lambda real: lambda req: b"HTTP/1.1 400 Bad Request\r\n\r\n",
    "unchanged": lambda real: lambda req: ok_answer(body_of(req), "False ; 0.0 / 5.0"),
    "short-body": lambda real: lambda req: ok_answer(body_of(req))[:-10],
    "long-body": lambda real: lambda req: ok_answer(body_of(req)) + b"x" * 10,
    "tampered": lambda real: _tamper,
    "wrong-threshold": _wrong_threshold,
    "spam-flag-flipped": _spam_flag_flipped,
}


@pytest.mark.parametrize("kind", sorted(FAKES))
def test_bad_server_falls_back_to_in_process(kind, server, sa_corpus, tmp_path):
    fake = FakeServer(tmp_path / "fake.sock", FAKES[kind](server))
    try:
        cfg = tmp_path / "via.yaml"
        cfg.write_text(f"filter:\n  server: {fake.path}\n  server_timeout: 1\n")
        plain = write_cfg(tmp_path, "")
        for raw in messages(sa_corpus, 10)[::4]:  # spam and ham
            for flags in (["--verdict-exit"], [], ["--verdict-exit", "--tempfail"]):
                want = in_process(["-c", plain, *flags], raw)
                assert filter_run(["-c", str(cfg), *flags], raw) == want
        assert fake.connections > 0
    finally:
        fake.close()


def test_server_stopped_falls_back(tmp_path, sa_corpus):
    raw = messages(sa_corpus, 10)[0]
    srv = Server(tmp_path / "srv")
    cfg = write_cfg(tmp_path, f"filter:\n  server: {srv.tcp}\n")
    want = in_process(["-c", write_cfg(tmp_path / "srv", ""), "--verdict-exit"], raw)
    assert filter_run(["-c", cfg, "--verdict-exit"], raw) == want
    assert srv.stop() == 0
    r = subprocess.run([str(NNSPAM), "filter", "-c", cfg, "--verdict-exit"], input=raw,
                       capture_output=True, timeout=120)
    assert (r.returncode, r.stdout) == want
    assert b"ConnectionRefusedError" in r.stderr


def test_over_the_size_cap_never_goes_to_the_server(tmp_path, sa_corpus):
    fake = FakeServer(tmp_path / "fake.sock", lambda req: ok_answer(body_of(req)))
    try:
        raw = messages(sa_corpus, 10)[0]
        assert len(raw) > 1000
        cfg = write_cfg(tmp_path, f"filter:\n  server: {fake.path}\n  max_size: 1000\n")
        want = in_process(["-c", cfg, "--verdict-exit"], raw)
        assert b"X-NNSpam-Status: Skipped, reason=size" in want[1] and want[0] == 2
        assert filter_run(["-c", cfg, "--verdict-exit"], raw) == want
        assert fake.connections == 0
    finally:
        fake.close()


def test_bad_config_passes_mail_through(tmp_path, sa_corpus):
    raw = messages(sa_corpus, 10)[0]
    want = in_process(["-c", write_cfg(tmp_path, ""), "--verdict-exit"], raw)
    cfg = write_cfg(tmp_path, "filter:\n  server: not-an-address\n")
    r = subprocess.run([str(NNSPAM), "filter", "-c", cfg, "--verdict-exit"], input=raw,
                       capture_output=True, timeout=120)
    assert (r.returncode, r.stdout) == want
    assert b"neither a socket path nor HOST:PORT" in r.stderr
    cfg = write_cfg(tmp_path, "filter:\n  server: [1, 2\n")  # not YAML: the filter says so
    r = subprocess.run([str(NNSPAM), "filter", "-c", cfg, "--verdict-exit"], input=raw,
                       capture_output=True, timeout=120)
    assert (r.returncode, r.stdout) == (3, raw) and b"not valid YAML" in r.stderr
    with pytest.raises(ValueError):
        spamc.parse_addresses("not-an-address")


def test_broken_output_pipe_exits_tempfail(server, sa_corpus, tmp_path):
    raw = messages(sa_corpus, 10)[0] * 30  # more than a pipe buffer, under max_size
    cfg = write_cfg(tmp_path, f"filter:\n  server: {server.sock}\n")
    p = subprocess.Popen([str(NNSPAM), "filter", "-c", cfg], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    try:
        p.stdin.write(raw)
        p.stdin.close()
    except BrokenPipeError:
        pass
    p.wait(120)
    err = p.stderr.read()
    p.stderr.close()
    assert p.returncode == pipefilter.EX_TEMPFAIL, err
    assert b"cannot write the output" in err and b"Traceback" not in err


def test_parse_addresses():
    import socket as s
    assert spamc.parse_addresses(None) == [] and spamc.parse_addresses("none") == []
    assert spamc.parse_addresses("/run/x.sock, 127.0.0.1:783,[::1]:784") == [
        (s.AF_UNIX, "/run/x.sock"), (s.AF_INET, ("127.0.0.1", 783)),
        (s.AF_INET6, ("::1", 784))]
    assert spamc.parse_addresses(["localhost:1"]) == [(s.AF_INET, ("localhost", 1))]


def test_user_header_selects_the_invoking_users_model(tmp_path, sa_corpus, monkeypatch):
    """On a server with per-user models (serve.user_model), the filter's
    User: (the invoking user, as spamc sends it) picks that user's model, and
    the output equals the in-process filter run with the same model."""
    from nnspam.model.core import resolve_model_path

    me = spamc._user()
    user_model = tmp_path / "users" / me / "model"
    shutil.copytree(resolve_model_path("default"), user_model)
    srv = Server(tmp_path / "srv", extra_cfg=f"serve:\n  user_model: {tmp_path}/users/%u/model\n")
    try:
        addr = spamc.parse_addresses(srv.sock)[0]
        raw = messages(sa_corpus, 10)[-1]  # a ham
        site = in_process(["-c", write_cfg(tmp_path, ""), "-m", "default"], raw)[1]
        for _ in range(10):  # teach this user's model that the ham is spam
            rep = spamc.tell(addr, raw, "spam", user=me)
            assert rep.code == 0, rep.message
            if spamc.process(addr, raw, me).body != site:
                break
        cfg = write_cfg(tmp_path, f"model: {user_model}\nfilter:\n  server: {srv.sock}\n")
        want = in_process(["-c", cfg, "--verdict-exit"], raw)
        assert want[1] != site  # the user's model now answers differently
        forbid_in_process(monkeypatch)
        assert filter_run(["-c", cfg, "--verdict-exit"], raw) == want
        # Another user (no model of their own) gets the site model.
        assert spamc.process(addr, raw, "nobody-else").body == site
    finally:
        assert srv.stop() == 0
