"""A ``store:`` URL that cannot work is said in one line, by every command (issue 22,
fault 7): a URL redis-py cannot parse is a config error (exit 2), a server that is not
Redis is named as such, and an address that never answers is reported within seconds
(nnspam/services/models/store.py: check_url, Store's timeouts; nnspam/config.py)."""

from __future__ import annotations

import http.server
import inspect
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nnspam import config
from nnspam.config import ConfigError, load_config
from nnspam.services.models import store as S

from conftest import make_message

# Each refused as redis-py would fail on it (a ValueError or TypeError deep in the client),
# or use it otherwise than it reads (a db path that is no number is db 0 there).
BAD = [
    "redis://127.0.0.1:notaport/0",
    "redis://127.0.0.1:99999/0",
    "redis://[::1/0",
    "redis://127.0.0.1:0/0",
    "redis://127.0.0.1:/0",
    "redis://::1/0",
    "redis://[::1]x/0",
    "redis://[not:an:address]:6379/0",
    "redis://my host/0",
    "redis://127.0.0.1/notadb",
    "redis://127.0.0.1/0?db=x",
    "redis://127.0.0.1/0?socket_timeout=soon",
    "redis://127.0.0.1/0?nosuch=1",
    "redis://127.0.0.1/0?ssl_cert_reqs=none",
    "redis://:pa#ss@127.0.0.1/0",
    "unix://run/redis.sock",
    "unix://",
    "http://127.0.0.1:6379/0",
]
GOOD = [
    "redis://127.0.0.1:6379/0",
    "redis://localhost",
    "REDIS://cache.example.org:6380/15/",
    "rediss://alice:secret@cache.example.org:6380/2?ssl_cert_reqs=none",
    "redis://[::1]:6379/0",
    "redis://:p%23ss@127.0.0.1/0?socket_timeout=2.5&protocol=3",
    "unix:///run/redis/redis.sock?db=1",
]
THE_ISSUES = BAD[:3]  # the three values the hostile test used


def nnspam(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnspam", *args], capture_output=True,
                          text=True, timeout=timeout)


def _one_line(r: subprocess.CompletedProcess) -> str:
    """The command's stderr, which must be one line and no traceback."""
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.mark.parametrize("url", BAD)
def test_check_url_refuses_what_redis_cannot_use(url):
    problem = S.check_url(url)
    assert problem is not None and problem.startswith("must be null or a URL redis://")


@pytest.mark.parametrize("url", THE_ISSUES)
def test_the_refused_urls_are_ones_the_redis_client_fails_on(url):
    """The check is no stricter than needed there: redis-py's own parser raises on each."""
    redis = pytest.importorskip("redis")
    with pytest.raises(ValueError):
        redis.ConnectionPool.from_url(url)


@pytest.mark.parametrize("url", GOOD)
def test_check_url_accepts_what_redis_reads(url):
    """Accepted URLs are ones the client parses and can build a connection from."""
    redis = pytest.importorskip("redis")
    assert S.check_url(url) is None
    pool = redis.ConnectionPool.from_url(url)
    pool.connection_class(**pool.connection_kwargs)  # no TypeError: every parameter taken


def test_url_parameters_are_ones_the_redis_client_takes():
    redis = pytest.importorskip("redis")
    from redis import connection

    taken = set(connection.URL_QUERY_ARGUMENT_PARSERS)
    for cls in (redis.Connection, redis.SSLConnection, connection.AbstractConnection,
                redis.ConnectionPool):
        taken |= set(inspect.signature(cls.__init__).parameters)
    assert set(config._STORE_PARAMS) <= taken


def test_the_password_stays_out_of_the_message():
    problem = S.check_url("redis://alice:s3cret@127.0.0.1:notaport/0")
    assert "s3cret" not in problem and "alice:***@127.0.0.1" in problem
    assert S.redact("redis://:pa/ss@h/0") == "redis://:***@h/0"


def test_the_store_refuses_a_url_the_config_would(tmp_path):
    pytest.importorskip("redis")
    with pytest.raises(S.StoreError, match="not a number"):
        S.Store("redis://127.0.0.1:notaport/0")


def test_the_config_refuses_a_bad_store_url(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text('store: "redis://127.0.0.1:99999/0"\n')
    with pytest.raises(ConfigError, match=r"c.yaml: store must be .* the port 99999 is not in "
                                          r"1\.\.65535"):
        load_config(str(f))
    f.write_text("store: 5\n")
    with pytest.raises(ConfigError, match="store must be null or a URL .*, not 5"):
        load_config(str(f))


@pytest.fixture()
def workdir(tmp_path) -> Path:
    """``tmp_path`` with an empty ``Maildir`` and a message ``m.eml``."""
    for d in ("new", "cur", "tmp"):
        (tmp_path / "Maildir" / d).mkdir(parents=True)
    (tmp_path / "m.eml").write_bytes(make_message("hello", "a message"))
    return tmp_path


def _config(where: Path, url: str) -> Path:
    cfg = where / "config.yaml"
    cfg.write_text(f"store: {url!r}\ndaemon:\n  state: {str(where / 'state.sqlite3')!r}\n")
    return cfg


def _commands(where: Path, cfg: Path) -> dict[str, list[str]]:
    return {"store list": ["store", "list", "-c", str(cfg)],
            "learn": ["learn", "--spam", "-c", str(cfg), str(where / "m.eml")],
            "daemon": ["daemon", "-c", str(cfg), "--maildir", str(where / "Maildir")],
            "serve": ["serve", "-c", str(cfg), "-m", "default", "--listen", "127.0.0.1:0"]}


@pytest.mark.parametrize("url", THE_ISSUES)
def test_every_command_says_a_bad_store_url_in_one_line(workdir, url):
    cfg = _config(workdir, url)
    for name, args in _commands(workdir, cfg).items():
        r = nnspam(*args)
        line = _one_line(r)
        assert r.returncode == 2, (name, r.stderr)
        assert line.startswith(f"nnspam: {cfg}: store must be null or a URL"), (name, line)


class _Web(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_a_server_that_is_not_redis_is_named_as_such(workdir):
    """A web server at the store's address: one line that says so (was: a 'Protocol
    Error' exit 1, a traceback from the daemon), exit 2, the password redacted."""
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Web)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        url = f"redis://alice:s3cret@127.0.0.1:{web.server_address[1]}/0"
        cfg = _config(workdir, url)
        for name, args in _commands(workdir, cfg).items():
            r = nnspam(*args)
            line = _one_line(r)
            assert r.returncode == 2, (name, r.stderr)
            assert "does not speak Redis" in line and "s3cret" not in line, (name, line)
            assert "cannot load the model" not in line, (name, line)  # the store is wrong
            assert f"alice:***@127.0.0.1:{web.server_address[1]}/0" in line, (name, line)
    finally:
        web.shutdown()
        web.server_close()


def test_a_silent_address_is_reported_within_seconds(workdir):
    """A listener that never accepts nor answers (the kernel completes the handshake):
    the store's short timeouts report it in one line naming the store, exit 75, where
    the client waited its 30-s read timeout without a word."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"redis://alice:s3cret@127.0.0.1:{silent.getsockname()[1]}/0"
        cfg = _config(workdir, url)
        t0 = time.monotonic()
        r = nnspam("store", "list", "-c", str(cfg), timeout=25)
        took = time.monotonic() - t0
        line = _one_line(r)
        assert r.returncode == 75, r.stderr
        assert took < S.COMMAND_TIMEOUT + 10, took
        assert line.startswith(f"nnspam: model store redis://alice:***@127.0.0.1:"
                               f"{silent.getsockname()[1]}/0 unreachable: no answer"), line
        with pytest.raises(S.StoreUnavailable, match="no answer within"):
            S.Store(url).epoch()
