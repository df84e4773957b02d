"""A Dovecot imapd of its own, for tests/test_imap.py and scripts/bench/imap.py: its own
configuration, users and throw-away mailboxes in one directory, on free ports of 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import imapclient

DOVECOT_CONF = """
protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
ssl = {ssl}
{ssl_files}
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/home/%u
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Junk {{
    special_use = \\Junk
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = subscribe
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = {ssl_port}
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Dovecot:
    """A Dovecot imapd of its own in ``d`` (a directory its unprivileged processes can
    reach): users ``alice`` and ``users`` more (u0, u1, ...), password "secret". As root
    it runs its mail processes as nobody (Dovecot refuses root for mail), else as the
    user. ``openssl``: the path of openssl, to serve implicit TLS with a self-signed
    certificate (``ssl_port``, ``cert.pem`` in ``d``)."""

    def __init__(self, d: Path, dovecot: str, openssl: str | None = None,
                 users: int = 0) -> None:
        self.exe = dovecot
        tls = openssl is not None
        self.d = d
        for sub in ("run", "state", "home"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(d / "home", 0o777)
        (d / "passwd").write_text("".join(f"{u}:{{PLAIN}}secret\n" for u in
                                          ["alice", *(f"u{i}" for i in range(users))]))
        self.port = free_port()
        self.ssl_port = free_port() if tls else 0
        ssl_files = ""
        if tls:
            subprocess.run([str(openssl), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                            "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"),
                            "-days", "2"], check=True, capture_output=True)
            ssl_files = f"ssl_cert = <{d}/cert.pem\nssl_key = <{d}/key.pem"
        if os.getuid() == 0:
            internal, login, uid, gid = "dovecot", "dovenull", "nobody", "nogroup"
        else:
            import grp
            import pwd

            me = pwd.getpwuid(os.getuid()).pw_name
            internal = login = uid = me
            gid = grp.getgrgid(os.getgid()).gr_name
        (d / "dovecot.conf").write_text(DOVECOT_CONF.format(
            d=d, port=self.port, ssl_port=self.ssl_port, ssl="yes" if tls else "no",
            ssl_files=ssl_files, internal=internal, login=login, uid=uid, gid=gid))
        self.start()

    def start(self) -> None:
        subprocess.run([self.exe, "-c", str(self.d / "dovecot.conf")], check=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                self.client().logout()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("dovecot did not start:\n" + self.log())

    def stop(self) -> None:
        """Stop the server and every process it started: its master leaves the mail
        processes of open connections running (seen here with Dovecot 2.3), and a restart
        that kept the connections would test nothing."""
        pid = self.d / "run" / "master.pid"
        if not pid.is_file():
            return
        master = int(pid.read_text().split()[0])
        children = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1]
                                               .split()[1]) == master:
                    children.append(int(proc.name))
            except (OSError, ValueError, IndexError):
                pass
        try:
            os.kill(master, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10
        while pid.is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        for child in children:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def log(self) -> str:
        p = self.d / "dovecot.log"
        return p.read_text(errors="replace") if p.is_file() else ""

    def client(self, user: str = "alice") -> imapclient.IMAPClient:
        """A user's mail client."""
        c = imapclient.IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=10)
        c.login(user, "secret")
        return c


