"""What several test modules share beside tests/conftest.py (which holds the fixtures, the
corpus paths, ``need``, ``free_port`` and the ``nnspam serve`` harness): spamd requests
and stand-in servers, a hand-made ``nnspam stream`` corpus, the ``nnspam daemon`` harness,
a throwaway Redis, the SMS and email dashboards built over test data, the mail programs'
recipe checks and Sieve environment, SMS texts, and a tiny trained model.

Nothing here is a fixture. Test modules import it as ``from helpers import ...`` (tests/
is on ``sys.path``, as for ``from conftest import ...``); no test module imports another.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from nnspam.config import DEFAULTS
from nnspam.mail import maildir as md

from conftest import ROOT, free_port, make_message, need

if TYPE_CHECKING:
    from collections.abc import Callable

    from nnspam.mail.corpus import Sample
    from nnspam.model.core import Model

NNSPAM = Path(sys.executable).parent / "nnspam"
FILTERS = ROOT / "filters"


# -- nnspam serve: requests by hand ---------------------------------------------------------

def sa_sample(sa_corpus: Path, n: int) -> list[bytes]:
    """``n`` SpamAssassin messages: the first ``n // 2`` spam, then easy ham."""
    spam = sorted((sa_corpus / "spam").iterdir())[: n // 2]
    ham = sorted((sa_corpus / "easy_ham").iterdir())[: n - len(spam)]
    return [p.read_bytes() for p in spam + ham]


def spamd_request(verb: str, body: bytes, **headers: str) -> bytes:
    """A spamd request; a header ``Message_class="spam"`` is sent as ``Message-class``."""
    hdr = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return (f"{verb} SPAMC/1.5\r\nContent-length: {len(body)}\r\n{hdr}\r\n").encode() + body


def exchange(port: int, data: bytes, *, source: str | None = None, half_close: bool = True,
             timeout: float = 30) -> bytes:
    """Send ``data`` to 127.0.0.1:``port`` (from ``source``, a local address), shut the
    writing side unless ``half_close`` is false, and read the answer to its end."""
    with socket.socket() as s:
        s.settimeout(timeout)
        if source:
            s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        parts = []
        while chunk := s.recv(65536):
            parts.append(chunk)
    return b"".join(parts)


def serve_each(sock: socket.socket, handle: Callable[[socket.socket], None]) -> None:
    """A stand-in server's loop: accept a connection on the listening ``sock``, give it to
    ``handle`` (with a 30 s timeout) and close it, until ``sock`` is closed."""
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(30)
            handle(conn)


def wait_listening(proc: subprocess.Popen, port: int) -> None:
    """Until 127.0.0.1:``port`` accepts a connection (a readiness loop, not a timing check);
    fails with ``proc``'s stderr (a pipe, text) if it exits first."""
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.1)


def run_nnspam(*args: str, cfg: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m nnspam COMMAND [-c cfg] ARGS...``, its output as text."""
    extra = ["-c", str(cfg)] if cfg else []
    cmd, *rest = args
    return subprocess.run([sys.executable, "-m", "nnspam", cmd, *extra, *rest],
                          capture_output=True, text=True, timeout=300)


# -- nnspam stream: a hand-made corpus --------------------------------------------------------

def stream_corpus(tmp_path: Path, n: int) -> Path:
    """``tmp_path/corpus``: ``n`` spam and ``n`` ham made by hand, alike within each class,
    and an ``index`` of them (``spam spam/0``, ``ham ham/0``, ... alternating)."""
    box = tmp_path / "corpus"
    (box / "spam").mkdir(parents=True)
    (box / "ham").mkdir()
    lines = []
    for i in range(n):
        (box / "spam" / f"{i}").write_bytes(make_message(
            f"cheap pills offer {i}", "buy cheap viagra pills now, best price, click here",
            sender=f"deals{i}@pharma.biz"))
        (box / "ham" / f"{i}").write_bytes(make_message(
            f"meeting notes {i}", "hi bob, the notes from the project meeting, thanks alice"))
        lines += [f"spam spam/{i}", f"ham ham/{i}"]
    (box / "index").write_text("\n".join(lines) + "\n")
    return box


# -- nnspam daemon ----------------------------------------------------------------------------

BURST = 2000  # messages of the ``sa_burst`` fixture (tests/conftest.py)


def wait_until(cond, timeout: float, what: str, proc: Daemon | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        if proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"daemon exited ({proc.proc.returncode}) waiting for {what}:\n"
                                 + proc.tail())
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (":\n" + proc.tail() if proc else ""))


class Daemon:
    """One ``nnspam daemon`` process with its config, log and state file."""

    runs = 0

    def __init__(self, tmp: Path, box: Path, model: Path, extra: str = "",
                 env: dict[str, str] | None = None) -> None:
        self.tmp, self.box, self.model = tmp, box, model
        self.state = tmp / "state.sqlite3"
        self.config = tmp / "config.yaml"
        self.config.write_text(
            f"daemon:\n  maildirs: [{box}]\n  state: {self.state}\n  rescan_interval: 0\n"
            + extra)
        self.env = {**os.environ, **(env or {})}
        self.logs: list[Path] = []

    def start(self) -> Daemon:
        Daemon.runs += 1
        log = self.tmp / f"daemon-{Daemon.runs}.log"
        self.logs.append(log)
        self.fh = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nnspam", "daemon", "-c", str(self.config),
             "-m", str(self.model)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.fh, cwd=ROOT,
            env=self.env)
        wait_until(lambda: "INFO watching " in self.text(), 30, "the daemon to start", self)
        return self

    def text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.text().splitlines()[-n:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.fh.close()
        return rc

    def rows(self) -> list[tuple]:
        if not self.state.exists():
            return []
        db = sqlite3.connect(f"file:{self.state}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute("SELECT uniq, verdict, place, learned, origin FROM messages "
                              "WHERE maildir=?", (str(self.box.resolve()),)).fetchall()
        finally:
            db.close()

    def settled(self, n: int) -> bool:
        rows = self.rows()
        return len(rows) >= n and all(r[2] != "moving" for r in rows)


def file_then_delete(d: Daemon, box: Path, spam: bytes) -> None:
    """Deliver ``spam`` to the running daemon ``d``, wait until it is filed into Junk, and
    delete it there as the user would."""
    junk = box / ".Junk"
    first = md.deliver(box, spam)
    wait_until(lambda: (junk / "new" / first.name).exists() and d.settled(1), 30,
               "the spam filed into Junk", d)
    os.unlink(junk / "new" / first.name)  # the user deletes it from Junk


def pick(messages: list[bytes], model: Model, spam: bool, n: int = 1) -> list[bytes]:
    """Messages the model scores clearly but not at saturation, so learning shows."""
    out = []
    sp = model.score(messages[:400])
    for m, s in zip(messages[:400], sp, strict=True):
        if (0.6 < s < 0.9999) if spam else (1e-5 < s < 0.4):
            out.append(m)
            if len(out) == n:
                return out
    raise AssertionError("no suitable message in the corpus sample")


class FixedModel:
    """A stand-in model for Sorter tests run in process: every message scores ``sp``, and
    it has no weights to learn into (read-only: corrections are recorded, not learned)."""

    def __init__(self, sp: float) -> None:
        self.sp = sp

    def tokens(self, payload):
        return ["w"]

    def ensure_wide(self):
        return self

    def observe(self, token_lists):
        pass

    def spamicity_of_tokens(self, token_lists, h, s):
        return [self.sp] * len(token_lists)


# -- Redis ------------------------------------------------------------------------------------

class Redis:
    """A throwaway redis-server on a loopback port, without persistence."""

    def __init__(self, tmp: Path) -> None:
        self.exe = need("redis-server")
        self.dir = tmp
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.proc = None

    def client(self):
        import redis

        return redis.Redis.from_url(self.url)


# -- SMS and the SMS dashboard ----------------------------------------------------------------

TOKEN = "0123456789abcdef0123456789abcdef"  # the Twilio auth token
URL = "https://sms.example.org/sms"  # the webhook's public URL
PASSWORD = "correct horse battery staple"
try:
    from werkzeug.security import generate_password_hash
except ImportError:  # no Flask: the dashboard tests skip (pytest.importorskip("flask"))
    PW_HASH = ""
else:
    PW_HASH = generate_password_hash(PASSWORD, method="scrypt")

SPAM = "WINNER!! You have won a 1000 cash prize. Call 09061701461 now to claim. T&C txt STOP"
SPAM2 = "URGENT! Your mobile number has been awarded a £2000 bonus prize. Call 09066362231 now"
HAM = "Ok see you at home later, I will bring dinner"
HAM2 = "Sorry, I will call you later, in a meeting"
HOSTILE = "<script>alert(1)</script> \"&' see you at lunch tomorrow"
HOSTILE_FROM = '"><img src=x onerror=alert(2)>'
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def sms_config(tmp_path: Path, **sms: object) -> dict:
    """The default config with its ``sms`` paths under ``tmp_path``, updated by ``sms``."""
    cfg = copy.deepcopy(DEFAULTS)
    cfg["sms"].update({"maildir": str(tmp_path / "SMS"),
                       "state": str(tmp_path / "state" / "sms.sqlite3"),
                       "env_file": str(tmp_path / "twilio.env"),
                       "cursor": str(tmp_path / "state" / "cursor")})
    cfg["sms"].update(sms)
    return cfg


def dash_config(tmp_path: Path, model: str = "default-sms", password_hash: str | None = PW_HASH,
                page_size: int = 25) -> dict:
    """:func:`sms_config` with a model, the public URL and the dashboard's settings."""
    return sms_config(tmp_path, model=model, public_url=URL,
                      dashboard={"password_hash": password_hash, "page_size": page_size})


def make_dashboard(tmp_path: Path, **kw):
    """(the SMS front's Flask app in testing mode, its store) over :func:`dash_config`."""
    from nnspam.front.sms.store import open_store
    from nnspam.front.sms.webhook import create_app

    cfg = dash_config(tmp_path, **kw)
    store = open_store(cfg)
    app = create_app(cfg, store=store, auth_token=TOKEN)
    app.testing = True
    return app, store


def fill(store) -> None:
    """Two ham, two spam and the hostile SMS, an hour apart (HAM2 newest ham)."""
    from nnspam.front.sms.message import Sms

    for i, (body, frm) in enumerate([(HAM, "+447700900001"), (SPAM, "+447700900002"),
                                     (HOSTILE, HOSTILE_FROM), (SPAM2, "+447700900004"),
                                     (HAM2, "+447700900005")]):
        store.store(Sms(f"SM{i:032d}", frm, "+441632960000", body, T0 + timedelta(hours=i)))


def files(folder: Path) -> list[Path]:
    return md.list_messages(folder)


def csrf_of(page: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert m, "no CSRF token in the page"
    return m.group(1)


def login(client, password: str = PASSWORD):
    token = csrf_of(client.get("/login").get_data(as_text=True))
    return client.post("/login", data={"csrf_token": token, "password": password})


def logged_in(app):
    c = app.test_client()
    assert login(c).status_code == 302
    return c


def post(c, url: str, token: str | None, **data):
    if token is not None:
        data["csrf_token"] = token
    return c.post(url, data=data)


# -- the email dashboard ----------------------------------------------------------------------

#: 2026-11-20 12:00 UTC: "now" of the plot, and the decisions are hours before it.
NOW = 1795176000.0


@dataclass
class Mail:
    """A maildir filed by a daemon-like Sorter, and the config that names it all."""

    cfg: dict
    maildir: Path
    state: Path
    model: str
    ham: list[str] = field(default_factory=list)  # unique names, oldest first
    spam: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # every message, oldest first
    data: dict[str, bytes] = field(default_factory=dict)

    def where(self, uniq: str) -> tuple[str, Path] | None:
        """("inbox" | "junk", path) of a message now, or None."""
        for name, folder in (("inbox", self.maildir), ("junk", self.maildir / ".Junk")):
            p = md.find_message(folder, uniq)
            if p is not None:
                return name, p
        return None

    def record(self, uniq: str):
        from nnspam.services.delivery.state import State

        st = State(self.state)
        try:
            return st.get(str(self.maildir.resolve()), uniq)
        finally:
            st.close()

    def corrections(self) -> list[tuple[str, str, str]]:
        from nnspam.services.delivery.state import State

        st = State(self.state)
        try:
            return st.corrections()
        finally:
            st.close()


def _sa_messages(sa_corpus: Path, n_ham: int, n_spam: int) -> tuple[list[bytes], list[bytes]]:
    ham = [p.read_bytes() for p in sorted((sa_corpus / "easy_ham").iterdir())[:n_ham]]
    spam = [p.read_bytes() for p in sorted((sa_corpus / "spam").iterdir())[:n_spam]]
    return ham, spam


def build_mail(tmp_path: Path, sa_corpus: Path, *, shipped: bool = False, page_size: int = 25,
               n_ham: int = 4, n_spam: int = 3, extra: tuple[bytes, ...] = (),
               spread: float = 3600.0) -> Mail:
    """SpamAssassin ham and spam (interleaved, then ``extra``) delivered into a maildir and
    filed by the daemon's Sorter; decision times ``spread`` seconds apart, the newest an
    hour before :data:`NOW`. ``shipped``: the read-only shipped model, else a copy."""
    from nnspam.model.core import Model
    from nnspam.services.delivery.sorter import Sorter
    from nnspam.services.delivery.state import State

    if shipped:
        model = "default"
    else:
        model = str(tmp_path / "email-model")
        Model.load("default").save(model)
    maildir = md.ensure_maildir(tmp_path / "Maildir")
    state = tmp_path / "state" / "daemon.sqlite3"
    state.parent.mkdir()
    cfg = copy.deepcopy(DEFAULTS)
    cfg["model"] = model
    cfg["daemon"].update(maildirs=[str(maildir)], state=str(state))
    cfg["sms"].update(maildir=str(tmp_path / "SMS"), state=str(tmp_path / "state" / "sms.db"),
                      env_file=str(tmp_path / "none.env"),
                      dashboard={"password_hash": PW_HASH, "page_size": page_size})
    ham, spam = _sa_messages(sa_corpus, n_ham, n_spam)
    mixed: list[tuple[str, bytes]] = []
    for i in range(max(n_ham, n_spam)):
        mixed += [("ham", ham[i])] if i < n_ham else []
        mixed += [("spam", spam[i])] if i < n_spam else []
    mixed += [("extra", x) for x in extra]
    mail = Mail(cfg, maildir, state, model)
    sorter = Sorter.from_config(cfg, Model.load(model), State(state), model_name=model)
    sorter.baseline(maildir)
    key = sorter.key(maildir)
    for i, (label, data) in enumerate(mixed):
        path = md.deliver(maildir, data)
        uniq = md.base_name(path.name)
        verdict = sorter.handle_new(maildir, path)
        assert label == "extra" or verdict == label, (label, verdict)
        at = NOW - 3600 - spread * (len(mixed) - 1 - i)
        sorter.state.db.execute("UPDATE messages SET decided_at=?, updated_at=? WHERE "
                                "maildir=? AND uniq=?", (at, at, key, uniq))
        mail.order.append(uniq)
        mail.data[uniq] = data
        if label in ("ham", "spam"):
            getattr(mail, label).append(uniq)
    sorter.state.close()
    return mail


def make_app(mail: Mail):
    """(the dashboard's Flask app in testing mode over ``mail``, its email side)."""
    from nnspam.front.dashboard.app import create_app
    from nnspam.front.dashboard.email_side import EmailSide, open_email_side

    side = open_email_side(mail.cfg)
    assert isinstance(side, EmailSide), side
    side.clock = lambda: NOW
    app = create_app(mail.cfg, email=side)
    app.testing = True
    return app, side


def rows_of(page: str) -> list[str]:
    """The unique names of the listed messages, in order."""
    return re.findall(r'<tr class="email" data-uniq="([^"]+)"', page)


# -- the recipes in filters/ ------------------------------------------------------------------

def strip_from_line(raw: bytes) -> bytes:
    return raw.split(b"\n", 1)[1] if raw.startswith(b"From ") else raw


def without_our_headers(raw: bytes) -> bytes:
    from nnspam.mail.headers import strip_header_fields

    return strip_header_fields(raw, ["X-NNSpam-Status", "X-NNSpam-Flag"])


def files_in(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file()) if d.is_dir() else []


def check_delivery(spam: bytes, ham: bytes, spam_file: Path, ham_file: Path) -> None:
    """The spam and the ham delivered into ``spam_file`` and ``ham_file``, with our
    headers and otherwise unchanged."""
    s, h = spam_file.read_bytes(), ham_file.read_bytes()
    assert b"\nX-NNSpam-Flag: YES" in s and b"X-NNSpam-Status: Yes, spamicity=" in s
    assert b"X-NNSpam-Status: No, spamicity=" in h and b"X-NNSpam-Flag" not in h
    assert strip_from_line(without_our_headers(s)) == strip_from_line(spam)
    assert strip_from_line(without_our_headers(h)) == strip_from_line(ham)


AS_NOBODY = ["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all",
             "--bounding-set=-all"]


def _nobody_can(cmd: list[str], env: dict[str, str]) -> bool:
    # Through sh, as Dovecot runs the filter program (a direct exec under
    # setpriv was seen to succeed where the same command from a shell fails).
    r = subprocess.run([need("setpriv"), *AS_NOBODY, "/bin/sh", "-c", 'exec "$@"', "sh", *cmd],
                       capture_output=True, env=env, timeout=60)
    return r.returncode == 0


class SieveEnv:
    """A world-accessible temp dir with a Dovecot config for sieve-test, and a
    way to run nnspam as the user sieve-test runs as. Dovecot refuses mail
    access as root, so as root sieve-test runs as 'nobody'; the venv's Python
    may then be out of reach (e.g. under /root), so a same-version system
    Python with the venv's site-packages on PYTHONPATH stands in for it."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nnspam-sieve-"))
        self.dir.chmod(0o777)
        self.bin = self.dir / "bin"
        self.bin.mkdir()
        self.as_root = os.geteuid() == 0
        self.prefix: list[str] = []
        if self.as_root:
            self.prefix = [need("setpriv"), *AS_NOBODY]
        self.nnspam = self._nnspam_command()
        (self.dir / "dovecot.conf").write_text(
            f"mail_location = maildir:{self.dir}/Maildir\n"
            "plugin {\n"
            "  sieve_plugins = sieve_extprograms sieve_imapsieve\n"
            "  sieve_global_extensions = +vnd.dovecot.filter +vnd.dovecot.pipe "
            "+vnd.dovecot.environment\n"
            f"  sieve_filter_bin_dir = {self.bin}\n"
            f"  sieve_pipe_bin_dir = {self.bin}\n"
            "}\n")

    def _nnspam_command(self) -> str:
        if not self.as_root:
            return str(NNSPAM)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.dir)}
        if _nobody_can([str(NNSPAM), "filter", "--help"], env):
            return str(NNSPAM)
        ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
        system_python = shutil.which(ver, path="/usr/bin:/bin")
        paths = [str(ROOT), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
        env["PYTHONPATH"] = ":".join(paths)
        if system_python and _nobody_can([system_python, "-m", "nnspam", "filter", "--help"],
                                         env):
            wrapper = self.dir / "nnspam"
            wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={env['PYTHONPATH']} "
                               f"exec {system_python} -m nnspam \"$@\"\n")
            wrapper.chmod(0o755)
            return str(wrapper)
        if os.access("/usr/bin/python3", os.X_OK):
            return self._relay()
        msg = ("running as root: sieve-test must run as 'nobody', who cannot run this "
               "venv's nnspam (and no system Python was found)")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)

    def _relay(self) -> str:
        """Last resort when 'nobody' cannot reach this checkout at all (a clone in a
        private directory): an executable that hands its arguments and stdin over a
        Unix socket to this test process, which runs the real ``nnspam`` and sends back
        its output and exit code. The recipe and sieve-test still run for real; only
        the nnspam process runs as root instead of as 'nobody'."""
        import json
        import socket
        import struct
        import threading

        sock_path = self.dir / "relay.sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(sock_path))
        sock_path.chmod(0o777)
        server.listen(8)
        self._relay_server = server

        def serve() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn:
                    buf = b""
                    while chunk := conn.recv(65536):
                        buf += chunk
                    nargs, ndata = struct.unpack(">II", buf[:8])
                    args = json.loads(buf[8:8 + nargs])
                    data = buf[8 + nargs:8 + nargs + ndata]
                    r = subprocess.run([str(NNSPAM), *args], input=data, capture_output=True)
                    conn.sendall(bytes([r.returncode & 0xFF]) + r.stdout)

        threading.Thread(target=serve, daemon=True).start()
        client = self.dir / "nnspam-relay"
        client.write_text(
            "#!/usr/bin/python3\n"
            "import json, socket, struct, sys\n"
            f"s = socket.socket(socket.AF_UNIX); s.connect({str(sock_path)!r})\n"
            "data = sys.stdin.buffer.read(); head = json.dumps(sys.argv[1:]).encode()\n"
            "s.sendall(struct.pack('>II', len(head), len(data)) + head + data)\n"
            "s.shutdown(socket.SHUT_WR)\n"
            "buf = b''\n"
            "while chunk := s.recv(65536):\n"
            "    buf += chunk\n"
            "sys.stdout.buffer.write(buf[1:]); sys.stdout.flush(); sys.exit(buf[0])\n")
        client.chmod(0o755)
        return str(client)

    def close(self) -> None:
        server = getattr(self, "_relay_server", None)
        if server is not None:
            server.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def install(self, name: str, conf: str = "") -> None:
        shutil.copy(FILTERS / name, self.bin / name)
        (self.bin / name).chmod(0o755)
        if conf:
            (self.bin / (Path(name).stem + ".conf")).write_text(conf)

    def readable(self) -> None:
        for p in [self.dir, *self.dir.rglob("*")]:
            if p.is_dir():
                p.chmod(0o777)
            else:
                p.chmod(p.stat().st_mode | 0o444)

    def sieve_test(self, script: Path, msg_file: Path, *opts: str) -> subprocess.CompletedProcess:
        self.readable()
        return subprocess.run(
            [*self.prefix, need("sieve-test"), "-c", str(self.dir / "dovecot.conf"), *opts,
             str(script), str(msg_file)],
            capture_output=True, env={"PATH": "/usr/bin:/bin", "HOME": str(self.dir)},
            timeout=120)



# -- SMS texts and a model's corrections -------------------------------------------------------

SPAM_SMS = ["WINNER!! You have won a 1000 cash prize. Call 09061701461 now to claim",
            "FREE entry in 2 a weekly comp to win FA Cup final tkts. Text FA to 87121",
            "URGENT! Your mobile number has been awarded a 2000 bonus. Call 09066364589"]
HAM_SMS = ["Are we still on for lunch tomorrow? I can be there by one",
           "Ok, I will call you when I get home tonight",
           "Can you pick up some milk on your way back please"]


def learned(model: Model) -> dict[str, int]:
    """Corrections counted in a model's summary, per class (nnspam.model.correct.correct)."""
    by = model.summary.get("learned") or {}
    return {"spam": int(by.get("spam", 0)), "ham": int(by.get("ham", 0))}


# -- a tiny model -----------------------------------------------------------------------------

_SPAM_WORDS = ["viagra cheap pills offer", "win money now free offer", "cheap loans free money"]
_HAM_WORDS = ["meeting agenda tomorrow notes", "patch review for the kernel build",
              "lunch tomorrow with the team"]


def tiny_samples(k: int = 12) -> list[Sample]:
    """``k`` short spam and ``k`` short ham emails, interleaved."""
    from nnspam.mail.corpus import Sample

    out = []
    for i in range(k):
        out.append(Sample(f"s{i}", make_message(f"offer {i}", _SPAM_WORDS[i % 3],
                                                "deals@spam.biz"), "spam"))
        out.append(Sample(f"h{i}", make_message(f"re: notes {i}", _HAM_WORDS[i % 3]), "ham"))
    return out


def train_tiny(**network: object) -> Model:
    """An email model trained on :func:`tiny_samples` in a moment: 40 words, up to 30
    epochs, a quarter held out; ``network`` overrides the network settings."""
    from nnspam import config as C
    from nnspam.services.runs.training import Recipe, train_model

    return train_model(tiny_samples(), Recipe.from_config(C.DEFAULTS, "email", overrides={
        "wordlist": {"size": 40, "min_df": 2},
        "network": {"max_epochs": 30, "validation_fraction": 0.25, **network}}))


def sorter_settings(**changes: Any) -> Any:
    """The built-in SorterSettings with ``changes`` (an OperatingPoint field such as
    ``threshold`` or ``unsure`` goes into ``point``)."""
    import dataclasses

    from nnspam.settings import OperatingPoint, SorterSettings, defaults

    base = defaults(SorterSettings)
    point_names = {f.name for f in dataclasses.fields(OperatingPoint)}
    point = dataclasses.replace(base.point, **{k: v for k, v in changes.items()
                                               if k in point_names})
    return dataclasses.replace(base, point=point, **{k: v for k, v in changes.items()
                                                     if k not in point_names})
