"""``nnspam serve`` driven by the real SpamAssassin client ``spamc`` (Debian
package ``spamc``) and by hand-written requests over a socket."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from nnspam.services.delivery import pipefilter

from conftest import Server, need
from helpers import sa_sample, spamd_request


def _filter_output(raw: bytes, cfg: Path) -> bytes:
    """What ``nnspam filter -c cfg`` writes (its own code path, in-process)."""
    out = io.BytesIO()
    args = pipefilter.build_parser().parse_args(["-c", str(cfg)])
    assert pipefilter.run(args, io.BytesIO(raw), out) == 0
    return out.getvalue()


# -- spamc ---------------------------------------------------------------------------

@pytest.mark.slow
def test_spamc_output_equals_filter_output_on_200_messages(server, sa_corpus):
    need("spamc")
    msgs = sa_sample(sa_corpus, 200)
    verdicts = set()
    for raw in msgs:
        want = _filter_output(raw, server.cfg)
        got = server.spamc([], raw)
        assert got.returncode == 0, got.stderr
        assert got.stdout == want
        assert got.stdout != raw  # classified, not the fallback
        verdicts.add(b"X-NNSpam-Flag: YES" in got.stdout)
    assert verdicts == {True, False}


def test_spamc_output_equals_the_real_filter_process(server, sa_corpus):
    for raw in sa_sample(sa_corpus, 4):
        want = subprocess.run([sys.executable, "-m", "nnspam", "filter", "-c", str(server.cfg)],
                              input=raw, capture_output=True, check=True).stdout
        assert server.spamc([], raw).stdout == want


def test_spamc_headers_mode_and_unix_socket(server, sa_corpus):
    spamc = need("spamc")
    for raw in sa_sample(sa_corpus, 6):
        want = _filter_output(raw, server.cfg)
        assert server.spamc(["--headers"], raw).stdout == want
        got = subprocess.run([spamc, "-U", server.sock], input=raw, capture_output=True,
                             timeout=60)
        assert got.stdout == want


def test_spamc_check_prints_score_and_exit_code_is_the_verdict(server, sa_corpus):
    for raw in sa_sample(sa_corpus, 10):
        want = _filter_output(raw, server.cfg)
        sp = float(want.split(b"spamicity=")[1].split(b",")[0])
        got = server.spamc(["-c"], raw)
        score, thr = got.stdout.decode().strip().split("/")
        assert thr == "5.0" and abs(float(score) - 10 * sp) <= 0.051  # header has 3 decimals
        assert got.returncode == (1 if sp >= 0.5 else 0)


def test_spamc_symbols_and_report(server, sa_corpus):
    spam, ham = sa_sample(sa_corpus, 2)
    # the verdict first, then the words that moved it most (tests/test_explain.py)
    spam_symbols = server.spamc(["-y"], spam).stdout.strip().split(b",")
    assert spam_symbols[0] == b"NNSPAM_SPAM" and len(spam_symbols) == 11
    assert server.spamc(["-y"], ham).stdout.strip().split(b",")[0] == b"NNSPAM_HAM"
    rep = server.spamc(["-R"], spam)
    assert rep.stdout.startswith(b"10.0/5.0\n") and b"spamicity 1.000" in rep.stdout
    assert b"spamicity" not in server.spamc(["-r"], ham).stdout  # REPORT_IFSPAM on ham


def test_spamc_z_when_spamc_has_zlib(server, sa_corpus):
    spamc = need("spamc")
    usage = subprocess.run([spamc, "-h"], capture_output=True, text=True)
    if "-z" not in usage.stdout + usage.stderr:
        pytest.skip("this spamc is built without zlib (Debian's is): -z is covered by the "
                    "hand-written Compress: zlib request below")
    raw = sa_sample(sa_corpus, 1)[0]
    assert server.spamc(["-z"], raw).stdout == _filter_output(raw, server.cfg)


def test_spamc_over_size_cap_comes_back_unchanged(server):
    body = b"x" * 999 + b"\n"
    raw = (b"From: a@example.org\nSubject: big\n\n" + body * 600)  # about 600 KB > 512 KiB
    got = server.spamc(["-s", "2000000"], raw)
    assert got.returncode == 0
    assert got.stdout == raw
    assert server.spamc(["-s", "2000000", "-c"], raw).stdout.strip() == b"0.0/5.0"


def test_spamc_learn_changes_the_answer(tmp_path, sa_corpus):
    from nnspam.model.core import resolve_model_path

    model = tmp_path / "model"
    shutil.copytree(resolve_model_path("default"), model)
    srv = Server(tmp_path, str(model))
    try:
        raw = sa_sample(sa_corpus, 2)[1]  # a ham
        before = float(srv.spamc(["-c"], raw).stdout.split(b"/")[0])
        assert before < 5.0
        for _ in range(10):
            got = srv.spamc(["-L", "spam"], raw)
            assert got.returncode in (0, 5, 6), got.stderr
            if float(srv.spamc(["-c"], raw).stdout.split(b"/")[0]) >= 5.0:
                break
        assert srv.spamc(["-c"], raw).returncode == 1
        saved = os.stat(model / os.listdir(model)[0]).st_mtime
        assert saved > 0
        for _ in range(10):
            srv.spamc(["-L", "ham"], raw)
            if float(srv.spamc(["-c"], raw).stdout.split(b"/")[0]) < 5.0:
                break
        assert srv.spamc(["-c"], raw).returncode == 0
        # The model on disk is the learned one: a fresh server agrees.
        score = srv.spamc(["-c"], raw).stdout
    finally:
        assert srv.stop() == 0
    srv2 = Server(tmp_path, str(model))
    try:
        assert srv2.spamc(["-c"], raw).stdout == score
    finally:
        srv2.stop()


def test_tell_on_the_shipped_model_is_refused(server, sa_corpus):
    raw = sa_sample(sa_corpus, 1)[0]
    resp = server.request(spamd_request("TELL", raw, Message_class="spam", Set="local"))
    assert resp.startswith(b"SPAMD/1.5 77 ")


def test_tell_learns_into_a_model_of_ones_own_named_default_something(tmp_path,
                                                                     monkeypatch):
    """The read-only rule is model.is_shipped, as for the daemon and nnspam learn: the
    server once refused (77) every model whose name started with "default"."""
    from nnspam.config import DEFAULTS
    from nnspam.model.core import resolve_model_path
    from nnspam.services.models.registry import ModelRegistry
    from nnspam.services.models.serve_settings import serve_settings

    shutil.copytree(resolve_model_path("default-sms"), tmp_path / "defaults-mine")
    weights = (tmp_path / "defaults-mine" / "weights.npz").read_bytes()
    monkeypatch.chdir(tmp_path)  # the name as given on the command line, relative
    reg = ModelRegistry(serve_settings(DEFAULTS, model="defaults-mine", listen="127.0.0.1:0"))
    assert not reg.site_readonly
    reg.learn(b"Subject: x\n\nWIN a FREE prize, call now\n", "spam")
    assert (tmp_path / "defaults-mine" / "weights.npz").read_bytes() != weights
    assert ModelRegistry(serve_settings(DEFAULTS, model="default-sms",
                                        listen="127.0.0.1:0")).site_readonly


# -- hand-written requests -------------------------------------------------------------

def test_ping_and_check_by_hand(server, sa_corpus):
    assert server.request(b"PING SPAMC/1.2\r\n\r\n") == b"SPAMD/1.5 0 PONG\r\n"
    raw = sa_sample(sa_corpus, 2)[0]  # a spam
    resp = server.request(spamd_request("CHECK", raw, User="alice"), unix=True)
    assert resp.startswith(b"SPAMD/1.5 0 EX_OK\r\nSpam: True ; ")
    assert resp.endswith(b" / 5.0\r\n\r\n")


def test_compress_zlib_request(server, sa_corpus):
    raw = sa_sample(sa_corpus, 1)[0]
    resp = server.request(spamd_request("PROCESS", zlib.compress(raw), Compress="zlib"))
    head, _, body = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"SPAMD/1.5 0 EX_OK")
    assert f"Content-length: {len(body)}".encode() in head
    assert body == _filter_output(raw, server.cfg)


@pytest.mark.parametrize("req, code", [
    (b"FROB SPAMC/1.5\r\n\r\n", 64),
    (b"garbage\r\n\r\n", 76),
    (b"CHECK HTTP/1.1\r\n\r\n", 76),
    (b"CHECK SPAMC/1.5\r\n\r\nbody", 76),  # no Content-length
    (b"CHECK SPAMC/1.5\r\nContent-length: abc\r\n\r\n", 76),
    (b"CHECK SPAMC/1.5\r\nContent-length: 100\r\n\r\nshort", 76),  # truncated body
    (b"CHECK SPAMC/1.5\r\nno colon here\r\n\r\n", 76),
    (b"CHECK SPAMC/1.5\r\nX-Long: " + b"a" * 20000 + b"\r\n\r\n", 76),
    (b"CHECK SPAMC/1.5\r\nContent-length: 4\r\nCompress: zlib\r\n\r\nnope", 65),
    (b"CHECK SPAMC/1.5\r\nContent-length: 4\r\nCompress: gzip\r\n\r\nnope", 76),
    (b"TELL SPAMC/1.5\r\nContent-length: 2\r\nMessage-class: eggs\r\nSet: local\r\n\r\nhi", 65),
    # forget on the shipped model: read-only, as learning
    (b"TELL SPAMC/1.5\r\nContent-length: 2\r\nMessage-class: spam\r\nRemove: local\r\n\r\nhi",
     77),
    (b"TELL SPAMC/1.5\r\nContent-length: 2\r\nMessage-class: spam\r\nSet: remote\r\n\r\nhi",
     65),
    (b"TELL SPAMC/1.5\r\nContent-length: 2\r\nMessage-class: spam\r\n\r\nhi", 65),
])
def test_malformed_requests_get_spamd_error_codes(server, req, code):
    resp = server.request(req)
    assert resp.startswith(f"SPAMD/1.5 {code} ".encode()), resp
    assert server.request(b"PING SPAMC/1.5\r\n\r\n") == b"SPAMD/1.5 0 PONG\r\n"


def test_zlib_bomb_is_refused(server):
    bomb = zlib.compress(b"\0" * (50 << 20), 9)  # 50 MB from about 50 KB
    resp = server.request(spamd_request("PROCESS", bomb, Compress="zlib"))
    assert resp.startswith(b"SPAMD/1.5 65 ")


def test_skip_gets_no_answer(server):
    assert server.request(b"SKIP SPAMC/1.5\r\n\r\n") == b""


def test_oversize_process_by_hand_is_streamed_back_unchanged(server):
    raw = b"Subject: big\r\n\r\n" + os.urandom(700_000)
    resp = server.request(spamd_request("PROCESS", raw))
    head, _, body = resp.partition(b"\r\n\r\n")
    assert b"Spam: False ; 0.0 / 5.0" in head
    assert body == raw


def test_silent_client_is_disconnected_and_others_are_served(tmp_path):
    srv = Server(tmp_path, extra_cfg="serve:\n  timeout: 1\n")
    try:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.settimeout(10)
            t0 = time.monotonic()
            assert srv.request(b"PING SPAMC/1.5\r\n\r\n") == b"SPAMD/1.5 0 PONG\r\n"
            assert s.recv(100) == b""  # closed by the server
            assert time.monotonic() - t0 < 8
    finally:
        assert srv.stop() == 0


def test_model_saved_on_disk_is_served_sighup_reloads_every_worker(tmp_path, sa_corpus):
    from nnspam.model.core import Model, resolve_model_path
    from nnspam.model.correct import Rule, correct_payloads

    model = tmp_path / "model"
    shutil.copytree(resolve_model_path("default"), model)
    srv = Server(tmp_path, str(model), args=("--workers", "3"))
    raw = sa_sample(sa_corpus, 2)[1]
    try:
        before = srv.spamc(["-c"], raw).stdout
        m = Model.load(model)
        for _ in range(20):
            correct_payloads(m, [raw], "spam", Rule(passes=3, max_passes=3))
        m.save(model)  # as `nnspam learn` would: no signal needed
        after = [srv.spamc(["-c"], raw).stdout for _ in range(12)]
        assert set(after) != {before} and len(set(after)) == 1, (before, after)
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while srv.log().count("INFO model reloaded\n") < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert srv.log().count("INFO model reloaded\n") == 3  # one per worker
        assert srv.spamc(["-c"], raw).stdout == after[0]
    finally:
        assert srv.stop() == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sd_notify_ready_watchdog_and_stopping(tmp_path, workers):
    """systemd's notify protocol, as the daemon speaks it (nnspam.services.systemd; the daemon's
    test_sd_notify_reload_and_sigterm_checkpoint): READY=1 once serving, WATCHDOG=1 at
    half of WATCHDOG_USEC from the main process (the only worker, or the supervisor of
    the pre-fork pool; systemd takes it from no other: NotifyAccess=main), STOPPING=1
    at SIGTERM."""
    path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(path))
    notify.settimeout(30)
    srv = Server(tmp_path, "default-sms", args=("--workers", workers),
                 env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
    try:
        got = [notify.recv(100).decode()]
        assert got == ["READY=1"], srv.log()
        t0 = time.monotonic()
        while got.count("WATCHDOG=1") < 3:
            got.append(notify.recv(100).decode())
        assert set(got[1:]) == {"WATCHDOG=1"}
        assert time.monotonic() - t0 < 10  # every 0.2 s, give or take a busy host
    finally:
        assert srv.stop() == 0
    while (msg := notify.recv(100).decode()) == "WATCHDOG=1":
        pass
    assert msg == "STOPPING=1"
    notify.close()


def test_one_blas_thread_also_after_numpy_is_loaded():
    """nnspam.services.blas.one_blas_thread, for serve and the daemon: serve imports NumPy while it
    reads its settings, so the OPENBLAS_NUM_THREADS it used to set came too late and it
    scored on every core; a BLAS already loaded is limited too now, and the variables
    are set for what starts later."""
    code = ("import json, os; from nnspam.config import DEFAULTS; "
            "from nnspam.services.models.serve_settings import serve_settings; "
            "serve_settings(DEFAULTS, listen='127.0.0.1:0'); "
            "from nnspam.services.blas import one_blas_thread; one_blas_thread(); "
            "from threadpoolctl import threadpool_info; "
            "print(json.dumps([[i['num_threads'] for i in threadpool_info()], "
            "os.environ['OPENBLAS_NUM_THREADS']]))")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    threads, var = json.loads(out)
    assert threads and set(threads) == {1} and var == "1", out


def test_non_loopback_listen_needs_an_allow_list():
    from nnspam.config import DEFAULTS
    from nnspam.services.errors import ServerError
    from nnspam.services.models.serve_settings import serve_settings

    with pytest.raises(ServerError, match="allow list"):
        serve_settings(DEFAULTS, listen="0.0.0.0:7830")
    st = serve_settings(DEFAULTS, listen="0.0.0.0:7830", allow=["192.0.2.0/24"])
    assert st.listen == ("0.0.0.0", 7830)


def test_score_line_mapping():
    from nnspam.services.spamd.protocol import score_line

    assert score_line(0.97, 0.5, 10) == b"Spam: True ; 9.7 / 5.0"
    assert score_line(0.5, 0.5, 10) == b"Spam: True ; 5.0 / 5.0"  # at the threshold: spam
    assert score_line(0.499, 0.5, 10) == b"Spam: False ; 5.0 / 5.0"
    assert score_line(None, 0.5, 10) == b"Spam: False ; 0.0 / 5.0"


def test_spamassassin_fields_replace_forged_ones_and_keep_the_body():
    from nnspam.services.spamd.protocol import spamassassin_fields

    raw = (b"From: a@example.org\r\nX-Spam-Flag: YES\r\nX-Spam-Status: Yes,\r\n score=99\r\n"
           b"Subject: hi\r\n\r\nbody \xff\r\n")
    ham = spamassassin_fields(raw, 0.123, 0.5, 10)
    assert b"X-Spam-Flag" not in ham and b"score=99" not in ham
    assert b"X-Spam-Status: No, score=1.2 required=5.0 tests=NNSPAM_HAM" in ham
    assert ham.endswith(b"\r\n\r\nbody \xff\r\n")
    spam = spamassassin_fields(raw, 0.97, 0.5, 10)
    assert spam.count(b"X-Spam-Flag: YES\r\n") == 1
    assert b"X-Spam-Status: Yes, score=9.7 required=5.0 tests=NNSPAM_SPAM" in spam


# -- start-up refusals: one line, exit 2, nothing taken over or created ---------------

def _serve_refused(tmp: Path, *args: str) -> tuple[int, str]:
    """Run ``nnspam serve ARGS`` expecting a refusal: its exit status and stderr.
    Fails the test (after stopping it) if the server starts listening instead."""
    cfg = tmp / "refused.yaml"
    cfg.write_text("")
    logfile = tmp / "refused.log"
    with open(logfile, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "nnspam", "serve", "-c", str(cfg),
                                 "--workers", "1", *args], stderr=fh)
        try:
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                if "listening on" in logfile.read_text(errors="replace"):
                    pytest.fail(f"nnspam serve {' '.join(args)} started:\n{logfile.read_text()}")
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    return proc.returncode, logfile.read_text(errors="replace")


def _one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnspam: "), err
    return lines[0]


def test_second_server_on_a_live_unix_socket_is_refused_and_the_first_keeps_it(tmp_path):
    first = Server(tmp_path, args=("--workers", "1"))
    try:
        rc, err = _serve_refused(tmp_path, "--socket", first.sock)
        line = _one_line(err)
        assert rc == 2 and f"unix:{first.sock}" in line and "another server" in line, err
        assert first.request(b"PING SPAMC/1.5\r\n\r\n", unix=True) == b"SPAMD/1.5 0 PONG\r\n"
    finally:
        assert first.stop() == 0


def test_stale_unix_socket_is_replaced_other_files_are_refused_and_kept(tmp_path):
    stale = tmp_path / "nnspam-127.0.0.1.sock"  # where Server(tmp_path) listens
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(stale))  # closed without unlink: a server that died
    srv = Server(tmp_path, args=("--workers", "1"))
    try:
        assert srv.request(b"PING SPAMC/1.5\r\n\r\n", unix=True) == b"SPAMD/1.5 0 PONG\r\n"
    finally:
        assert srv.stop() == 0
    assert not stale.exists()  # its own socket, removed at exit
    plain = tmp_path / "not-a-socket"
    plain.write_text("keep me")
    rc, err = _serve_refused(tmp_path, "--socket", str(plain))
    assert rc == 2 and f"unix:{plain}" in _one_line(err) and "not a socket" in err, err
    assert plain.read_text() == "keep me"


def test_server_removes_only_its_own_socket_at_exit(tmp_path):
    first = Server(tmp_path, args=("--workers", "1"))
    try:
        os.unlink(first.sock)  # removed by hand while it runs; another server takes the path
        second = Server(tmp_path, args=("--workers", "1"))
    finally:
        assert first.stop() == 0
    try:
        assert second.request(b"PING SPAMC/1.5\r\n\r\n", unix=True) == b"SPAMD/1.5 0 PONG\r\n"
    finally:
        assert second.stop() == 0
    assert not os.path.exists(second.sock)


@pytest.mark.parametrize(("listen", "named"), [
    ("127.0.0.1:99999", "port 99999"),
    ("127.0.0.1:65536", "port 65536"),
    ("127.0.0.1:\u00b2", "port '\u00b2'"),
    ("127.0.0.1:" + "9" * 5000, "port 999999999999..."),
    ("127.0.0.1:http", "port 'http'"),
    ("127.0.0.1:", "no port"),
    ("127.0.0.1", "no port"),
    ("[::1]", "no port"),
    (":0", "no host"),
    ("[]:0", "no host"),
    ("localhost:7830", "'localhost' is not an IP address"),
    ("::1", "':' is not an IP address"),
])
def test_bad_listen_address_is_one_line_exit_2(tmp_path, listen, named):
    rc, err = _serve_refused(tmp_path, "--listen", listen)
    line = _one_line(err)
    assert rc == 2 and line.startswith("nnspam: --listen ") and named in line, err


def test_bad_serve_settings_in_the_config_are_server_errors():
    from nnspam.config import DEFAULTS, merge
    from nnspam.services.errors import ServerError
    from nnspam.services.models.serve_settings import serve_settings

    for serve, named in [({"listen": "127.0.0.1:70000"}, "serve.listen '127.0.0.1:70000'"),
                         ({"listen": 783}, "serve.listen must be HOST:PORT"),
                         ({"socket": 5, "listen": None}, "serve.socket must be a path"),
                         ({"timeout": "long"}, "serve.timeout"),
                         ({"max_size": "512k"}, "serve.max_size"),
                         ({"user_cache": -1}, "serve.user_cache"),
                         ({"score_scale": None}, "serve.score_scale")]:
        with pytest.raises(ServerError, match=named.replace(".", r"\.").replace("(", r"\(")):
            serve_settings(merge(DEFAULTS, {"serve": serve}))
    assert serve_settings(DEFAULTS, listen="127.0.0.1:0").listen == ("127.0.0.1", 0)
    assert serve_settings(DEFAULTS, listen="[::1]:65535").listen == ("::1", 65535)


def test_socket_in_a_missing_directory_is_refused_and_nothing_is_created(tmp_path):
    missing = tmp_path / "missing" / "dir"
    rc, err = _serve_refused(tmp_path, "--socket", str(missing / "s.sock"))
    line = _one_line(err)
    assert rc == 2 and f"directory {missing} does not exist" in line, err
    assert not (tmp_path / "missing").exists()
