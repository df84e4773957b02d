"""nnspam imap against a real IMAP server: Dovecot's imapd, started here with its own
configuration and a throw-away mailbox (Debian: dovecot-imapd, installed by .ci/run).

The user's mail client is a second IMAP connection (IMAPClient), which delivers mail with
APPEND and moves it with MOVE, as Thunderbird's Junk and Not-junk buttons do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_message, need
from imap_server import Dovecot as _Dovecot

imapclient = pytest.importorskip("imapclient")

SPAMMY = ("WIN CASH NOW", "Click here to get a free prize, limited time offer, act now, "
          "viagra casino winner, cheap pills, 100% free")

class Dovecot(_Dovecot):
    """The server for a test: dovecot and openssl found by need() (a test fails under CI
    without them, and skips elsewhere)."""

    def __init__(self, d: Path, tls: bool = False) -> None:
        super().__init__(d, need("dovecot"), need("openssl") if tls else None)


@pytest.fixture
def open_dir():
    """A directory Dovecot's unprivileged processes can reach (pytest's are mode 0700)."""
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="nnspam-dovecot-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def dovecot(open_dir):
    server = Dovecot(open_dir / "dovecot")
    yield server
    server.stop()


def uids_of(client, folder: str) -> list[int]:
    client.select_folder(folder, readonly=True)
    return client.search(["ALL"])


def bodies_of(client, folder: str) -> list[bytes]:
    """The folder's messages as this test made them (IMAP carries CRLF line ends)."""
    uids = uids_of(client, folder)
    got = client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
    # a message moved away between SEARCH and FETCH has no body: not there any more
    return [got[u][b"BODY[]"].replace(b"\r\n", b"\n") for u in uids
            if got.get(u, {}).get(b"BODY[]") is not None]


def flags_of(client, folder: str) -> list[tuple[bytes, ...]]:
    uids = uids_of(client, folder)
    got = client.fetch(uids, ["FLAGS"]) if uids else {}
    return [got[u][b"FLAGS"] for u in uids if u in got]


def wait_for(what: str, test, timeout: float = 15.0, proc=None) -> float:
    """Poll ``test`` until true; the seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if test():
            return time.monotonic() - t0
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"nnspam imap exited ({proc.returncode}) waiting for {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Imap:
    """``nnspam imap`` as a process, its log in a file."""

    def __init__(self, tmp: Path, server: Dovecot, model: Path, extra: str = "",
                 args: tuple[str, ...] = ()) -> None:
        self.cfg = tmp / "imap.yaml"
        (tmp / "alice.pass").write_text("secret\n")
        self.cfg.write_text(
            f"model: {model}\n"
            "imap:\n"
            f"  state: {tmp / 'imap.sqlite3'}\n"
            "  poll_interval: 0.5\n"
            "  timeout: 10\n"
            "  max_backoff: 1\n"
            "  accounts:\n"
            "    - name: alice\n"
            "      host: 127.0.0.1\n"
            f"      port: {server.port}\n"
            "      tls: none\n"
            "      user: alice\n"
            f"      password_file: {tmp / 'alice.pass'}\n" + extra)
        self.logfile = tmp / "imap.log"
        self.args = args
        self.start()

    def start(self) -> None:
        self._log = open(self.logfile, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nnspam", "imap", "-c", str(self.cfg), *self.args],
            stderr=self._log, stdout=subprocess.DEVNULL)

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def wait_log(self, text: str, count: int = 1, timeout: float = 20.0) -> None:
        wait_for(f"{count} x {text!r} in the log", lambda: self.log().count(text) >= count,
                 timeout, self.proc)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self._log.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)
        self._log.close()


@pytest.fixture
def own_model(tmp_path):
    from nnspam.model.core import Model

    path = tmp_path / "model"
    Model.load("default").save(path)
    return path


def test_new_mail_is_filed_within_2_s_with_idle_and_stays_unread(dovecot, own_model, tmp_path):
    imap = Imap(tmp_path, dovecot, own_model)
    try:
        imap.wait_log("watching INBOX")
        user = dovecot.client()
        spam = make_message(*SPAMMY, sender="promo@win.example")
        ham = make_message("lunch", "see you at noon, the usual place", sender="bob@corp.example")
        time.sleep(0.5)  # in IDLE now
        user.append("INBOX", spam)
        took = wait_for("the spam in Junk", lambda: bodies_of(user, "Junk") == [spam])
        user.append("INBOX", ham)
        imap.wait_log("action=kept")
        assert bodies_of(user, "INBOX") == [ham]
        assert took < 2.0, f"filed {took:.2f} s after delivery"
        for flags in flags_of(user, "Junk") + flags_of(user, "INBOX"):
            assert b"\\Seen" not in flags  # fetched with BODY.PEEK[]: still unread
        assert b"$Junk" in flags_of(user, "Junk")[0]
        user.logout()
    finally:
        assert imap.stop() == 0
    assert "secret" not in imap.log()


def test_a_move_into_junk_is_learned_and_the_next_copy_goes_to_junk(dovecot, own_model,
                                                                    tmp_path):
    imap = Imap(tmp_path, dovecot, own_model)
    try:
        imap.wait_log("watching INBOX")
        user = dovecot.client()
        msg = make_message("Quarterly report", "Please find the figures for the quarter below.",
                           sender="reports@vendor.example")
        user.append("INBOX", msg)
        imap.wait_log("action=kept")
        user.select_folder("INBOX")
        user.move(user.search(["ALL"]), "Junk")  # the user's Junk button
        imap.wait_log("moved into Junk by the user, learned as spam")
        user.append("INBOX", msg)  # the next copy
        wait_for("the next copy in Junk", lambda: bodies_of(user, "Junk") == [msg, msg])
        assert uids_of(user, "INBOX") == []
        user.logout()
    finally:
        assert imap.stop() == 0
    assert imap.log().count("learned as spam") == 1  # its own filing is no correction


def test_a_move_out_of_junk_is_learned_as_ham_and_sticks(dovecot, own_model, tmp_path):
    imap = Imap(tmp_path, dovecot, own_model)
    try:
        imap.wait_log("watching INBOX")
        user = dovecot.client()
        # deleting from Junk teaches nothing: a spam filed, then moved to Trash by the user
        other = make_message("Refinance today", "Lowest mortgage rates guaranteed approval, "
                             "apply online in minutes, bad credit OK, unsubscribe",
                             sender="x@loans.example").replace(b"<1@example.org>",
                                                               b"<2@loans.example>")
        user.append("INBOX", other)
        wait_for("the other in Junk", lambda: bodies_of(user, "Junk") == [other])
        user.select_folder("Junk")
        user.move(user.search(["ALL"]), "Trash")
        msg = make_message(*SPAMMY, sender="newsletter@shop.example")
        user.append("INBOX", msg)
        wait_for("the message in Junk", lambda: bodies_of(user, "Junk") == [msg])
        user.select_folder("Junk")
        user.move(user.search(["ALL"]), "INBOX")  # "Not junk"
        imap.wait_log("moved out of Junk by the user, learned as ham")
        assert bodies_of(user, "INBOX") == [msg] and uids_of(user, "Junk") == []
        assert b"$NotJunk" in flags_of(user, "INBOX")[0]
        user.append("INBOX", msg)  # the next copy stays
        imap.wait_log("action=kept")
        assert bodies_of(user, "INBOX") == [msg, msg] and uids_of(user, "Junk") == []
        assert bodies_of(user, "Trash") == [other]
        user.logout()
    finally:
        assert imap.stop() == 0
    assert imap.log().count("learned as") == 1


def test_bad_settings_are_one_line_and_exit_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cases = {
        "imap:\n  accounts: []\n": "no IMAP account",
        "imap:\n  accounts:\n    - {name: a, host: imap.example.org, user: u, tls: none, "
        "password_file: /x}\n": "clear text",
        "imap:\n  accounts:\n    - {name: a, host: h, user: u}\n": "exactly one of",
        "imap:\n  accounts:\n    - {name: a, host: h, user: u, password_file: /x, "
        "folder: INBOX}\n": "unknown setting 'folder'",
        "imap:\n  accounts:\n    - {name: a, host: h, user: u, password_file: /x}\n"
        "    - {name: a, host: h2, user: u, password_file: /x}\n": "given twice",
    }
    for text, problem in cases.items():
        cfg.write_text(text)
        r = subprocess.run([sys.executable, "-m", "nnspam", "imap", "-c", str(cfg), "--once"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (text, r.stderr)
        assert problem in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_tls_is_verified_and_a_password_never_reaches_the_log(tmp_path, own_model, open_dir):
    """Implicit TLS to a server with a self-signed certificate: refused unless its CA is
    given; a refused login is one line without the password; then it works."""
    server = Dovecot(open_dir / "tls", tls=True)
    try:
        (tmp_path / "pass").write_text("not-the-password\n")
        base = (f"model: {own_model}\nimap:\n  state: {tmp_path / 's.sqlite3'}\n"
                "  accounts:\n    - name: tls\n      host: localhost\n"
                f"      port: {server.ssl_port}\n      user: alice\n"
                f"      password_file: {tmp_path / 'pass'}\n")
        cfg = tmp_path / "c.yaml"

        def once() -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "nnspam", "imap", "-c", str(cfg),
                                   "--once"], capture_output=True, text=True, timeout=60)

        cfg.write_text(base)
        r = once()
        assert r.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in r.stderr, r.stderr
        cfg.write_text(base + f"      ca_file: {server.d / 'cert.pem'}\n")
        r = once()
        assert r.returncode == 1 and "refused the login of alice" in r.stderr, r.stderr
        assert "not-the-password" not in r.stderr
        (tmp_path / "pass").write_text("secret\n")
        r = once()
        assert r.returncode == 0, r.stderr
        assert "connected to localhost" in r.stderr and "secret" not in r.stderr
        # STARTTLS on the plain port, verified the same way
        cfg.write_text(base.replace(f"port: {server.ssl_port}", f"port: {server.port}")
                       + "      tls: starttls\n")
        r = once()
        assert r.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in r.stderr, r.stderr
        cfg.write_text(base.replace(f"port: {server.ssl_port}", f"port: {server.port}")
                       + f"      tls: starttls\n      ca_file: {server.d / 'cert.pem'}\n")
        r = once()
        assert r.returncode == 0 and f"connected to localhost:{server.port}" in r.stderr, r.stderr
    finally:
        server.stop()


def test_the_unit_passes_systemd_analyze_verify(tmp_path):
    exe = need("systemd-analyze")
    text = (Path(__file__).resolve().parents[1] / "scripts" / "nnspam-imap@.service").read_text()
    for key in ("Type=notify", "ProtectSystem=strict", "NoNewPrivileges=yes", "User=%i",
                "After=network-online.target"):
        assert key in text
    nnspam = Path(sys.executable).with_name("nnspam")
    unit = tmp_path / "nnspam-imap@mail.service"
    unit.write_text(text.replace("/opt/nnspam/bin/nnspam", str(nnspam)))
    r = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


@pytest.mark.slow
def test_a_burst_survives_two_kills_and_a_server_restart(dovecot, own_model, tmp_path):
    """500 messages delivered at once; nnspam imap SIGKILLed twice and Dovecot restarted
    once while it files them: every message ends in the inbox or in Junk exactly once,
    none is read, and nnspam never takes its own filing for the user's correction."""
    import re

    imap = Imap(tmp_path, dovecot, own_model)
    imap.wait_log("watching INBOX")
    user = dovecot.client()
    msgs = []
    for i in range(500):
        if i % 2:
            subject, body = SPAMMY[0] + f" #{i}", SPAMMY[1] + f" ref{i}"
        else:
            subject, body = f"minutes {i}", f"notes of meeting {i}: budget review, see agenda"
        msgs.append(make_message(subject, body, sender=f"s{i}@example.net").replace(
            b"<1@example.org>", f"<m{i}@burst.example>".encode()))

    def decided() -> int:
        return len(re.findall(r"decision message-id=<m\d+@burst", imap.log())) + \
            imap.log().count("resumed the move")

    for m in msgs[:200]:  # the burst, in three waves around the faults
        user.append("INBOX", m)
    wait_for("60 decisions", lambda: decided() >= 60, 120, imap.proc)
    imap.kill()
    for m in msgs[200:350]:  # delivered while nnspam is down
        user.append("INBOX", m)
    imap.start()
    wait_for("250 decisions", lambda: decided() >= 250, 120, imap.proc)
    user.logout()
    dovecot.stop()
    time.sleep(1.0)
    dovecot.start()
    user = dovecot.client()
    for m in msgs[350:]:
        user.append("INBOX", m)
    wait_for("400 decisions", lambda: decided() >= 400, 120, imap.proc)
    imap.kill()
    started = imap.log().count("watching INBOX")
    imap.start()
    # up before the end's SIGTERM, which would otherwise find it still importing (exit -15)
    imap.wait_log("watching INBOX", started + 1)
    user = dovecot.client()

    def where() -> dict[str, list[bytes]]:
        return {f: bodies_of(user, f) for f in ("INBOX", "Junk")}

    def settled() -> bool:
        w = where()
        if len(w["INBOX"]) + len(w["Junk"]) != 500:
            return False
        kept = set(re.findall(r"decision message-id=<(m\d+)@burst\S* spamicity=\S+ "
                              r"action=kept", imap.log()))
        inbox = {re.search(rb"<(m\d+)@burst", b).group(1).decode() for b in w["INBOX"]}
        return inbox <= kept

    wait_for("every message decided", settled, 180, imap.proc)
    w = where()
    assert sorted(w["INBOX"] + w["Junk"]) == sorted(msgs)  # each once: none lost or doubled
    for flags in flags_of(user, "INBOX") + flags_of(user, "Junk"):
        assert b"\\Seen" not in flags and b"\\Deleted" not in flags
    assert w["Junk"] and w["INBOX"]
    user.logout()
    assert imap.stop() == 0
    log = imap.log()
    assert "learned as" not in log  # its own moves, across kills, are no corrections
    assert log.count("connection to 127.0.0.1") >= 1  # the server restart was noticed


def test_junk_keywords_set_by_a_client_are_corrections(dovecot, own_model, tmp_path):
    """$Junk set on an inbox message (a client that marks without moving) is learned as
    spam, $NotJunk on a Junk message as ham; each once."""
    imap = Imap(tmp_path, dovecot, own_model)
    try:
        imap.wait_log("watching INBOX")
        user = dovecot.client()
        ham = make_message("Quarterly report", "Please find the figures for the quarter below.",
                           sender="reports@vendor.example")
        spam = make_message(*SPAMMY, sender="promo@win.example").replace(
            b"<1@example.org>", b"<2@win.example>")
        user.append("INBOX", ham)
        user.append("INBOX", spam)
        imap.wait_log("action=kept")
        wait_for("the spam in Junk", lambda: bodies_of(user, "Junk") == [spam])
        user.select_folder("INBOX")
        user.add_flags(user.search(["ALL"]), [b"$Junk"])
        imap.wait_log("$Junk set on message-id=<1@example.org> in INBOX, learned as spam")
        user.select_folder("Junk")
        user.add_flags(user.search(["ALL"]), [b"$NotJunk"])
        imap.wait_log("$NotJunk set on message-id=<2@win.example> in Junk, learned as ham")
        time.sleep(1.5)  # several more passes: nothing is learned twice
        user.logout()
    finally:
        assert imap.stop() == 0
    assert imap.log().count("learned as") == 2


def test_a_recreated_junk_folder_is_a_new_start_not_a_lesson(dovecot, own_model, tmp_path):
    """Junk deleted and made again (a new UIDVALIDITY) with mail in it: nothing in it is
    learned; a move into the new Junk afterwards is."""
    imap = Imap(tmp_path, dovecot, own_model)
    try:
        imap.wait_log("watching INBOX")
        user = dovecot.client()
        a = make_message("note a", "the plan for friday, nothing else", sender="a@corp.example")
        b = make_message("note b", "the minutes of monday, see attached",
                         sender="b@corp.example").replace(b"<1@example.org>", b"<2@x.example>")
        assert imap.stop() == 0  # the server's mail is moved or restored meanwhile
        user.delete_folder("Junk")
        user.create_folder("Junk")
        user.append("Junk", a)  # e.g. restored from a backup
        imap.start()
        imap.wait_log("has a new UIDVALIDITY")
        user.append("INBOX", b)
        imap.wait_log("action=kept")
        user.select_folder("INBOX")
        user.move(user.search(["ALL"]), "Junk")
        imap.wait_log("moved into Junk by the user, learned as spam")
        user.logout()
    finally:
        assert imap.stop() == 0
    assert imap.log().count("learned as") == 1
