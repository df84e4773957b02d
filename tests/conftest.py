"""Shared test helpers: where the shared corpora are, small message builders, a
``nnspam serve`` process to test against (:class:`Server`), and the fixtures that several
test modules use. More helpers that are not fixtures are in tests/helpers.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NNSPAM_SHARED", ROOT.parent / "shared"))
CORPORA = SHARED / "corpora"
SA_TAR = CORPORA / "spamassassin.tar.xz"
SA_SPLIT = CORPORA / "splits" / "spamassassin.tsv"
SMS_FILE = CORPORA / "sms" / "SMSSpamCollection"
SMS_SPLIT = CORPORA / "splits" / "sms.tsv"


def have_corpora() -> bool:
    return SA_TAR.is_file() and SA_SPLIT.is_file() and SMS_FILE.is_file()


needs_corpora = pytest.mark.skipif(
    not have_corpora() and not os.environ.get("CI"),
    reason="../shared/corpora not found (CI always has it)",
)


# Debian packages of the programs the tests drive; .ci/run apt-installs them all.
PACKAGES = {"procmail": "procmail", "maildrop": "maildrop", "maildirmake": "maildrop",
            "sieve-test": "dovecot-sieve", "sievec": "dovecot-sieve", "setpriv": "util-linux",
            "dovecot": "dovecot-imapd", "openssl": "openssl",
            "flock": "util-linux", "spamc": "spamc", "exim": "exim4-daemon-heavy",
            "systemd-analyze": "systemd", "prometheus": "prometheus",
            "redis-server": "redis-server"}


def need(program: str) -> str:
    """The path of an installed program (PATH, then /usr/sbin and /sbin). A missing one
    fails the test under CI, where .ci/run installs it, and skips it elsewhere."""
    import shutil

    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if path is None:
        msg = f"{program} not installed (Debian package {PACKAGES.get(program, '?')})"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A ``nnspam serve`` subprocess on a TCP port (``host:port``, a free one of
    127.0.0.1 by default; :attr:`tcp` is that address) and a Unix socket (:attr:`sock`;
    ``unix=False``: none), with its stderr in :attr:`logfile`. ``tmp`` is created if
    missing.

    Its config is ``cfg`` when given (the fleet's shared file), else ``extra_cfg``
    written to ``tmp/config.yaml``; ``args`` go to ``nnspam serve`` (``--workers``...),
    ``env`` adds to the environment; ``allow_tell`` (default on: most tests teach it)
    passes ``--allow-tell``. ``own_group``: in a session and process group of
    its own, so that :meth:`kill` takes its workers too (as systemd's
    KillMode=control-group would). The constructor returns once it answers PING."""

    def __init__(self, tmp: Path, model: str = "default", extra_cfg: str = "",
                 host: str = "127.0.0.1", port: int | None = None,
                 args: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 cfg: Path | None = None, unix: bool = True, own_group: bool = False,
                 start_timeout: float = 90, allow_tell: bool = True) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port()
        self.tcp = f"{host}:{self.port}"
        self.sock = str(tmp / f"nnspam-{host}.sock")
        if cfg is None:
            cfg = tmp / "config.yaml"
            cfg.write_text(extra_cfg)
        self.cfg = cfg
        self.model = model
        self.own_group = own_group
        self.logfile = tmp / f"serve-{host}-{self.port}.log"
        self._log = open(self.logfile, "ab")  # a file: a full pipe would block the server
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nnspam", "serve", "-c", str(self.cfg), "-m", model,
             "--listen", self.tcp, *(["--socket", self.sock] if unix else []),
             *(["--allow-tell"] if allow_tell else []), *args],
            stderr=self._log, env={**os.environ, **(env or {})}, start_new_session=own_group)
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.log())
            try:
                if self.request(b"PING SPAMC/1.5\r\n\r\n").startswith(b"SPAMD/1.5 0 PONG"):
                    return
            except OSError:
                time.sleep(0.1)
        self.kill()
        self._log.close()
        raise RuntimeError("server did not start:\n" + self.log())

    def request(self, data: bytes, unix: bool = False) -> bytes:
        if unix:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.sock)
        else:
            s = socket.create_connection((self.host, self.port), timeout=30)
        with s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            parts = []
            while chunk := s.recv(65536):
                parts.append(chunk)
        return b"".join(parts)

    def spamc(self, args: list[str], data: bytes) -> subprocess.CompletedProcess:
        return subprocess.run([need("spamc"), "-d", self.host, "-p", str(self.port), *args],
                              input=data, capture_output=True, timeout=60)

    def check(self, raw: bytes, user: str | None = None) -> float:
        """The score of CHECK (10 * spamicity) for ``user`` (None: no User header)."""
        hdr = f"User: {user}\r\n" if user else ""
        got = self.request(f"CHECK SPAMC/1.5\r\nContent-length: {len(raw)}\r\n{hdr}\r\n"
                           .encode() + raw)
        line = [x for x in got.split(b"\r\n") if x.startswith(b"Spam:")][0]
        return float(line.split(b";")[1].split(b"/")[0])

    def tell(self, raw: bytes, label: str, user: str | None = None) -> bytes:
        """TELL: learn ``raw`` as ``label`` (Set: local) for ``user`` (None: the site)."""
        hdr = f"User: {user}\r\n" if user else ""
        return self.request(
            f"TELL SPAMC/1.5\r\nContent-length: {len(raw)}\r\nMessage-class: {label}\r\n"
            f"Set: local\r\n{hdr}\r\n".encode() + raw)

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: its process group with ``own_group`` (the workers too), else it."""
        try:
            if self.own_group:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.kill()
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=20)

    def stop(self) -> int:
        """SIGTERM unless it has exited; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self._log.close()


def make_message(subject: str, body: str, sender: str = "alice@example.org",
                 extra: str = "") -> bytes:
    return (
        f"From: {sender}\nTo: bob@example.net\nSubject: {subject}\n"
        f"Message-ID: <1@example.org>\n{extra}\n{body}\n"
    ).encode()


@pytest.fixture(scope="session")
def sa_corpus(tmp_path_factory):
    """The SpamAssassin corpus unpacked once into a temporary directory."""
    import tarfile

    if not SA_TAR.is_file():
        pytest.fail(f"{SA_TAR} missing")
    d = tmp_path_factory.mktemp("sa")
    with tarfile.open(SA_TAR) as tar:
        tar.extractall(d, filter="data")
    return d / "spamassassin"


@pytest.fixture(scope="module")
def sa_burst(sa_corpus) -> list[bytes]:
    """1,000 spam and 1,000 ham of the SpamAssassin corpus, interleaved."""
    from helpers import BURST

    def files(*dirs: str) -> list[Path]:
        out = []
        for d in dirs:
            out += sorted(p for p in (sa_corpus / d).iterdir() if p.name != "cmds")
        return out
    spam = [p.read_bytes() for p in files("spam", "spam_2")[: BURST // 2]]
    ham = [p.read_bytes() for p in files("easy_ham", "hard_ham")[: BURST // 2]]
    out = [m for pair in zip(spam, ham, strict=True) for m in pair]
    assert len(out) == BURST
    return out


@pytest.fixture(scope="module")
def spam_ham(sa_corpus) -> tuple[bytes, bytes]:
    """A spam and a ham the shipped model is sure about, without X-NNSpam or
    X-Spam headers and with no line over 900 bytes (SMTP-safe)."""
    from nnspam.model.core import Model

    m = Model.load("default")

    def first(part: str, want_spam: bool) -> bytes:
        for p in sorted((sa_corpus / part).iterdir())[:80]:
            raw = p.read_bytes()
            if b"X-NNSpam" in raw or b"X-Spam-" in raw:
                continue
            if max(len(line) for line in raw.split(b"\n")) > 900:
                continue
            s = float(m.score([raw])[0])
            if (s > 0.99) if want_spam else (s < 0.01):
                return raw
        raise AssertionError(f"no clear {part} message")
    return first("spam", True), first("easy_ham", False)


@pytest.fixture(scope="module")
def shipped():
    """The shipped email model, loaded once for a module (its tests must not change it)."""
    from nnspam.model.core import Model

    return Model.load("default")


@pytest.fixture
def sms_model(tmp_path) -> Path:
    """A writable copy of the shipped SMS model (small: quick to load and save)."""
    import shutil

    from nnspam.model.core import resolve_model_path

    dest = tmp_path / "sms-model"
    shutil.copytree(resolve_model_path("default-sms"), dest)
    return dest


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A ``nnspam serve`` of the shipped model with the default config, for a module."""
    srv = Server(tmp_path_factory.mktemp("serve"))
    yield srv
    assert srv.stop() == 0


@pytest.fixture
def box(tmp_path) -> Path:
    """An empty maildir, ``tmp_path/Maildir``."""
    from nnspam.mail import maildir as md

    return md.ensure_maildir(tmp_path / "Maildir")


@pytest.fixture
def store(tmp_path):
    """The SMS store of :func:`helpers.sms_config` under ``tmp_path``."""
    from nnspam.front.sms.store import open_store

    from helpers import sms_config

    st = open_store(sms_config(tmp_path))
    yield st
    st.close()
