"""``nnspam serve`` scaled out: the pre-fork worker pool (a TELL in one worker
is served by all, a dead worker is replaced, SIGTERM drains), per-user models
chosen by ``spamc -u``, systemd socket activation and ``Type=notify``, the
shipped units, and ``spamc -d`` fail-over between two servers when one is
killed halfway through 1,000 messages."""

from __future__ import annotations

import concurrent.futures as cf
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, Server, need
from helpers import sa_sample, spamd_request


def _children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(p) for p in text.split()}


def _wait(cond, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def _copy_default(dst: Path) -> Path:
    from nnspam.model.core import resolve_model_path

    shutil.copytree(resolve_model_path("default"), dst)
    return dst


def _report(srv: Server, raw: bytes, **headers: str) -> bytes:
    resp = srv.request(spamd_request("REPORT", raw, **headers))
    assert resp.startswith(b"SPAMD/1.5 0 EX_OK"), resp
    return resp.partition(b"\r\n\r\n")[2]  # "spamicity 0.123, ..." (three decimals)


# -- the worker pool -------------------------------------------------------------

def test_workers_are_forked_and_a_dead_one_is_replaced(tmp_path, sa_corpus):
    srv = Server(tmp_path, args=("--workers", "3"))
    raw = sa_sample(sa_corpus, 2)[0]
    try:
        assert _wait(lambda: len(_children(srv.proc.pid)) == 3)
        kids = _children(srv.proc.pid)
        victim = min(kids)
        os.kill(victim, signal.SIGKILL)
        assert _wait(lambda: len(_children(srv.proc.pid)) == 3
                     and victim not in _children(srv.proc.pid))
        answers = {srv.request(spamd_request("CHECK", raw)) for _ in range(20)}
        assert len(answers) == 1 and next(iter(answers)).startswith(b"SPAMD/1.5 0 EX_OK")
        assert f"worker {victim} ended (signal 9)" in srv.log()
    finally:
        assert srv.stop() == 0
    assert not any(Path(f"/proc/{p}").exists() for p in kids - {victim})


def test_tell_in_one_worker_is_served_by_every_worker(tmp_path, sa_corpus):
    model = _copy_default(tmp_path / "model")
    srv = Server(tmp_path, str(model), extra_cfg="learn:\n  passes: 20\n  max_passes: 20\n",
                 args=("--workers", "3"))
    raw = sa_sample(sa_corpus, 2)[1]  # a ham
    try:
        assert _wait(lambda: len(_children(srv.proc.pid)) == 3)
        before = {_report(srv, raw) for _ in range(9)}
        assert len(before) == 1
        resp = srv.request(spamd_request("TELL", raw, Message_class="spam", Set="local"))
        assert resp.startswith(b"SPAMD/1.5 0 EX_OK\r\nDidSet: local"), resp
        after = [_report(srv, raw) for _ in range(40)]  # 40 new connections
        assert len(set(after)) == 1 and set(after) != before, (before, set(after))
    finally:
        assert srv.stop() == 0


def test_concurrent_tells_in_different_workers_are_all_kept(tmp_path, sa_corpus):
    """Each TELL learns on top of the model as saved by the others (flock)."""
    from nnspam.model.core import Model

    model = _copy_default(tmp_path / "model")
    before = int(Model.load(model).summary.get("learned_messages", 0))
    srv = Server(tmp_path, str(model), args=("--workers", "3"))
    msgs = sa_sample(sa_corpus, 12)
    try:
        with cf.ThreadPoolExecutor(6) as ex:
            resps = list(ex.map(lambda m: srv.request(
                spamd_request("TELL", m, Message_class="spam", Set="local")), msgs))
        assert all(r.startswith(b"SPAMD/1.5 0 EX_OK") for r in resps), resps
    finally:
        assert srv.stop() == 0
    assert int(Model.load(model).summary["learned_messages"]) == before + len(msgs)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_drains_the_request_in_flight(tmp_path, sa_corpus, workers):
    srv = Server(tmp_path, args=("--workers", workers))
    raw = sa_sample(sa_corpus, 2)[0]
    req = spamd_request("CHECK", raw)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(req[:200])  # the request is in flight: accepted, half read
        time.sleep(0.5)
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert srv.proc.poll() is None  # waiting for us
        s.sendall(req[200:])
        s.shutdown(socket.SHUT_WR)
        resp = b"".join(iter(lambda: s.recv(65536), b""))
    assert resp.startswith(b"SPAMD/1.5 0 EX_OK\r\nSpam: True ; ")
    assert srv.stop() == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=5).close()


# -- per-user models -----------------------------------------------------------------

def test_user_model_path_substitutions(tmp_path):
    from nnspam.services.errors import RequestError
    from nnspam.services.models.registry import user_model_path

    assert user_model_path("/var/lib/nnspam/users/%u/model", "alice") == Path(
        "/var/lib/nnspam/users/alice/model")
    assert user_model_path("/m/%d/%l/%%/model", "bob@example.org") == Path(
        "/m/example.org/bob/%/model")
    assert user_model_path("~%u/.nnspam/model", "root") == Path(
        os.path.expanduser("~root")) / ".nnspam/model"
    assert user_model_path("~%u/.nnspam/model", "no-such-account-xyz") is None
    for bad in ("../etc", "a/b", "a\0b", ".hidden", "-x", "a..b", "", "x" * 65, "a b", "é"):
        with pytest.raises(RequestError) as err:
            user_model_path("/m/%u/model", bad)
        assert err.value.code == 67


def test_spamc_u_selects_the_users_model_and_tell_creates_it(tmp_path, sa_corpus):
    users = tmp_path / "users"
    srv = Server(tmp_path, extra_cfg=f"serve:\n  user_model: {users}/%u/model\n"
                 "learn:\n  passes: 5\n  max_passes: 5\n", args=("--workers", "2"))
    spam, ham = sa_sample(sa_corpus, 2)

    def score(user: str) -> float:
        return float(srv.spamc(["-c", "-u", user], ham).stdout.split(b"/")[0])
    try:
        site = score("alice")
        assert site < 5.0 and score("bob") == site
        for _ in range(10):  # alice says this ham is spam
            got = srv.spamc(["-L", "spam", "-u", "alice"], ham)
            assert got.returncode in (0, 5, 6), got.stderr
            if score("alice") >= 5.0:
                break
        assert score("alice") >= 5.0
        assert srv.spamc(["-c", "-u", "alice"], ham).returncode == 1
        assert score("bob") == site  # bob and everyone else: the site model
        assert srv.spamc(["-c"], ham).stdout.split(b"/")[0] == str(site).encode()
        assert (users / "alice" / "model" / "weights.npz").exists()
        assert not (users / "bob").exists()
        # PROCESS output for alice is what `nnspam filter -m alice's model` writes.
        want = subprocess.run([sys.executable, "-m", "nnspam", "filter", "-c", str(srv.cfg),
                               "-m", str(users / "alice" / "model")], input=ham,
                              capture_output=True, check=True).stdout
        assert srv.spamc(["-u", "alice"], ham).stdout == want
        assert srv.spamc(["-u", "bob"], spam).stdout != spam  # bob still classified
    finally:
        assert srv.stop() == 0


def test_bad_user_names_and_uncreatable_user_models_are_refused(tmp_path, sa_corpus):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    srv = Server(tmp_path, extra_cfg=f"serve:\n  user_model: {tmp_path}/%u/model\n")
    raw = sa_sample(sa_corpus, 2)[0]
    try:
        for bad in ("../etc", "a/b", ".x", "a..b"):
            resp = srv.request(spamd_request("CHECK", raw, User=bad))
            assert resp.startswith(b"SPAMD/1.5 67 "), resp
        assert srv.spamc(["-u", "../etc"], raw).stdout == raw  # spamc's safe fallback
        # "file" is a regular file: file/model cannot be created
        resp = srv.request(spamd_request("TELL", raw, Message_class="spam", Set="local",
                                         User="file"))
        assert resp.startswith(b"SPAMD/1.5 73 "), resp
        # a user without a model is scored by the site model
        assert srv.request(spamd_request("CHECK", raw, User="carol")).startswith(
            b"SPAMD/1.5 0 EX_OK\r\nSpam: True")
    finally:
        assert srv.stop() == 0


# -- systemd -------------------------------------------------------------------------

def test_serve_units_pass_systemd_analyze_verify(tmp_path):
    exe = need("systemd-analyze")
    text = (ROOT / "scripts" / "nnspam-serve.service").read_text()
    for key in ("Type=notify", "ProtectSystem=strict", "ReadWritePaths=/var/lib/nnspam",
                "NoNewPrivileges=yes", "KillMode=mixed", "ExecReload=/bin/kill -HUP $MAINPID",
                "nnspam serve"):
        assert key in text
    sock = (ROOT / "scripts" / "nnspam-serve.socket").read_text()
    assert "ListenStream=/run/nnspam/nnspam.sock" in sock and "Service=nnspam-serve.service" in sock
    nnspam = Path(sys.executable).with_name("nnspam")
    (tmp_path / "nnspam-serve.service").write_text(
        text.replace("/opt/nnspam/bin/nnspam", str(nnspam)))
    (tmp_path / "nnspam-serve.socket").write_text(sock)
    r = subprocess.run([exe, "verify", str(tmp_path / "nnspam-serve.service"),
                        str(tmp_path / "nnspam-serve.socket")], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_socket_activation_and_notify_ready(tmp_path, sa_corpus, workers):
    """As systemd starts it: the listening socket is fd 3 (LISTEN_FDS=1,
    LISTEN_PID=its pid), READY=1 comes on NOTIFY_SOCKET when it can serve."""
    spamc = need("spamc")
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(16)
    port = lst.getsockname()[1]
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(60)
    cfg = tmp_path / "config.yaml"
    cfg.write_text("serve:\n  listen: null\n")  # the socket comes from "systemd"
    fd = lst.fileno()
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")}
    log = open(tmp_path / "serve.log", "wb")
    # What systemd does between fork and exec: the socket to fd 3, LISTEN_PID = own pid.
    launcher = ("import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3); os.close(fd); "
                "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); "
                "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])")
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher, str(fd), "-m", "nnspam", "serve", "-c", str(cfg),
         "--workers", workers], pass_fds=[fd], env=env, stderr=log)
    lst.close()  # only the server holds it now
    raw = sa_sample(sa_corpus, 2)[0]
    try:
        msg = notify.recv(100)
        assert msg == b"READY=1"
        got = subprocess.run([spamc, "-d", "127.0.0.1", "-p", str(port), "-c"], input=raw,
                             capture_output=True, timeout=60)
        assert got.returncode == 1 and got.stdout.strip().endswith(b"/5.0")
        assert "listening on systemd:tcp:127.0.0.1:" in (tmp_path / "serve.log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        log.close()
    assert notify.recv(100) == b"STOPPING=1"
    notify.close()


# -- fail-over -----------------------------------------------------------------------

def _small_messages(sa_corpus: Path, n: int) -> list[bytes]:
    paths = [p for d in ("easy_ham", "spam", "easy_ham_2", "spam_2")
             for p in sorted((sa_corpus / d).iterdir()) if p.is_file()]
    paths.sort(key=lambda p: p.stat().st_size)
    return [p.read_bytes() for p in paths[:n]]


def _strip_ours(out: bytes) -> bytes:
    """The output without the X-NNSpam header lines (folded lines included)."""
    lines, skip = [], False
    for line in out.splitlines(keepends=True):
        if line.startswith((b"X-NNSpam-Status:", b"X-NNSpam-Flag:")):
            skip = True
            continue
        if skip and line[:1] in (b" ", b"\t"):
            continue
        skip = False
        lines.append(line)
    return b"".join(lines)


def test_spamc_fails_over_when_a_server_is_killed(tmp_path, sa_corpus):
    spamc = need("spamc")
    for _ in range(20):  # a port free on both 127.0.0.1 and 127.0.0.2
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            try:
                b.bind(("127.0.0.2", port))
                break
            except OSError:
                continue
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = Server(tmp_path / "one", host="127.0.0.1", port=port, args=("--workers", "1"))
    two = Server(tmp_path / "two", host="127.0.0.2", port=port, args=("--workers", "1"))
    msgs = _small_messages(sa_corpus, 1000)
    # spamc's defaults: 3 connection attempts, each to the next address; no -x
    # (that would turn the safe fallback and the fail-over off).
    cmd = [spamc, "-d", "127.0.0.1,127.0.0.2", "-p", str(port)]
    done = 0
    killed_at = None

    def run(raw: bytes) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, input=raw, capture_output=True, timeout=60)
    outputs: list[bytes] = []
    t0 = time.monotonic()
    try:
        with cf.ThreadPoolExecutor(4) as ex:
            futures = [ex.submit(run, raw) for raw in msgs]
            for fut in futures:
                got = fut.result()
                assert got.returncode == 0, got.stderr
                outputs.append(got.stdout)
                done += 1
                if done == len(msgs) // 2:
                    one.proc.send_signal(signal.SIGKILL)  # in the middle of the stream
                    killed_at = done
    finally:
        one.stop()
        assert two.stop() == 0
    took = time.monotonic() - t0
    assert killed_at == 500
    classified = sum(1 for o in outputs if b"X-NNSpam-Status:" in o)
    unchanged = 0
    for raw, out in zip(msgs, outputs, strict=True):
        if out == raw:
            unchanged += 1
        else:
            assert _strip_ours(out) == raw  # nothing else altered
    assert classified + unchanged == len(msgs)
    # After the kill, 127.0.0.2 took over: the later messages are classified.
    assert all(b"X-NNSpam-Status:" in o for o in outputs[-400:])
    print(f"\nfail-over: {len(msgs)} messages in {took:.1f} s, {classified} classified, "
          f"{unchanged} unchanged (safe fallback)")
