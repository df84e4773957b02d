#!/usr/bin/env python3
"""``nnspam imap`` against a real Dovecot on this machine, beside the maildir daemon on the
same messages: messages filed per second and the delay from delivery to filing (median,
p99), on one account and on 20 accounts at once.

Prints figures; asserts nothing.

    python scripts/bench/imap.py [--messages 400] [--accounts 1,20] [--corpus DIR]

Each run starts a Dovecot imapd of its own (tests/imap_server.py; needs dovecot-imapd) and
``nnspam imap`` on every account with a fresh copy of the shipped model, then delivers
``--messages`` SpamAssassin messages (half ham, half spam, spread over the accounts) at once
with IMAP APPEND from a second connection per account, as a mail server's delivery would
land them. Delivery time: when APPEND returned; filing time: the time of nnspam's decision
line for that message (its log has millisecond times). The daemon run delivers the same
messages into ``Maildir/new`` (tmp/ then rename, as an MDA) of as many maildirs, watched by
one ``nnspam daemon``, and reads its decision lines the same way. Filed per second: messages
over the time from the first delivery to the last decision.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from imap_server import Dovecot  # noqa: E402

DECISION = re.compile(rb"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO .*?decision .*?"
                      rb"message-id=(<[^>\s]*>)", re.M)


def find_corpus(given: str | None, tmp: str) -> Path:
    if given:
        return Path(given)
    if Path("/tmp/corpus/spamassassin").is_dir():
        return Path("/tmp/corpus/spamassassin")
    tar = ROOT.parent / "shared" / "corpora" / "spamassassin.tar.xz"
    with tarfile.open(tar) as t:
        t.extractall(tmp, filter="data")
    return Path(tmp) / "spamassassin"


def pick(corpus: Path, n: int) -> list[bytes]:
    """n messages, ham and spam alternating, each given a Message-ID of its own (the
    corpus repeats some), so that every decision line names one delivery."""
    out: list[bytes] = []
    parts = [sorted(p for p in (corpus / d).iterdir() if p.is_file())
             for d in ("easy_ham", "spam")]
    for i in range(n):
        raw = parts[i % 2][i // 2].read_bytes()
        raw = re.sub(rb"(?im)^message-id:.*\n(?:[ \t].*\n)*", b"", raw, count=1)
        out.append(f"Message-ID: <bench{i}@nnspam.test>\n".encode() + raw)
    return out


def log_times(log: bytes) -> dict[str, float]:
    out = {}
    for stamp, mid in DECISION.findall(log):
        t = datetime.strptime(stamp.decode(), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        out.setdefault(mid.decode(), t)
    return out


def figures(name: str, delivered: dict[str, float], decided: dict[str, float]) -> None:
    lat = sorted(decided[m] - delivered[m] for m in delivered if m in decided)
    if not lat:
        print(f"{name:34s} nothing filed")
        return
    span = max(decided[m] for m in delivered if m in decided) - min(delivered.values())
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    print(f"{name:34s} {len(lat):4d}/{len(delivered)} filed  {len(lat) / span:7.1f} msg/s  "
          f"delay median {statistics.median(lat) * 1000:7.0f} ms  p99 {p99 * 1000:7.0f} ms")


def wait(what: str, test, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if test():
            return
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


def run_imap(msgs: list[bytes], accounts: int, work: Path, dovecot_exe: str) -> None:
    d = work / f"imap{accounts}"
    d.mkdir()
    os.chmod(d, 0o755)
    server = Dovecot(d / "dovecot", dovecot_exe, users=accounts)
    model = d / "model"
    subprocess.run([str(Path(sys.executable).with_name("nnspam")), "model", "copy", "default",
                    str(model)], check=True, capture_output=True)
    (d / "pass").write_text("secret\n")
    cfg = d / "imap.yaml"
    lines = [f"model: {model}", "imap:", f"  state: {d / 'state.sqlite3'}",
             "  poll_interval: 1", "  accounts:"]
    for i in range(accounts):
        lines += [f"    - {{name: u{i}, host: 127.0.0.1, port: {server.port}, tls: none, "
                  f"user: u{i}, password_file: {d / 'pass'}}}"]
    cfg.write_text("\n".join(lines) + "\n")
    log = d / "imap.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "nnspam", "imap", "-c", str(cfg)],
                                stderr=fh)
    try:
        wait("every account watching", lambda: log.read_bytes().count(b"watching INBOX")
             >= accounts, 120)
        clients = [server.client(f"u{i}") for i in range(accounts)]
        delivered: dict[str, float] = {}
        lock = threading.Lock()

        def deliver(k: int) -> None:
            for j in range(k, len(msgs), accounts):
                clients[k].append("INBOX", msgs[j])
                with lock:
                    delivered[f"<bench{j}@nnspam.test>"] = time.time()

        threads = [threading.Thread(target=deliver, args=(k,)) for k in range(accounts)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait("every message decided", lambda: len(log_times(log.read_bytes())) >= len(msgs), 600)
        figures(f"nnspam imap, {accounts} account(s)", delivered, log_times(log.read_bytes()))
        for c in clients:
            c.logout()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        server.stop()


def run_daemon(msgs: list[bytes], maildirs: int, work: Path) -> None:
    d = work / f"daemon{maildirs}"
    d.mkdir()
    model = d / "model"
    subprocess.run([str(Path(sys.executable).with_name("nnspam")), "model", "copy", "default",
                    str(model)], check=True, capture_output=True)
    boxes = []
    for i in range(maildirs):
        box = d / f"m{i}"
        for sub in ("tmp", "new", "cur"):
            (box / sub).mkdir(parents=True)
        boxes.append(box)
    cfg = d / "daemon.yaml"
    cfg.write_text(f"daemon:\n  state: {d / 'state.sqlite3'}\n")
    log = d / "daemon.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "nnspam", "daemon", "-c", str(cfg),
                                 "-m", str(model), *sum((["--maildir", str(b)] for b in boxes),
                                                        [])], stderr=fh)
    try:
        wait("the daemon watching", lambda: log.read_bytes().count(b"watching") >= 1, 120)
        time.sleep(1.0)
        delivered: dict[str, float] = {}
        for j, raw in enumerate(msgs):
            box = boxes[j % maildirs]
            name = f"{time.time_ns()}.bench{j}.host"
            (box / "tmp" / name).write_bytes(raw)
            os.rename(box / "tmp" / name, box / "new" / name)
            delivered[f"<bench{j}@nnspam.test>"] = time.time()
        wait("every message decided", lambda: len(log_times(log.read_bytes())) >= len(msgs), 600)
        figures(f"nnspam daemon, {maildirs} maildir(s)", delivered, log_times(log.read_bytes()))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--accounts", default="1,20", help="account counts to run (1,20)")
    ap.add_argument("--corpus")
    a = ap.parse_args()
    exe = shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/sbin")
    if exe is None:
        sys.exit("dovecot not installed (Debian: dovecot-imapd)")
    with tempfile.TemporaryDirectory(prefix="nnspam-bench-") as tmp:
        os.chmod(tmp, 0o755)
        msgs = pick(find_corpus(a.corpus, tmp), a.messages)
        print(f"machine: {os.cpu_count()} CPUs; {len(msgs)} messages delivered at once")
        for n in (int(x) for x in a.accounts.split(",")):
            run_imap(msgs, n, Path(tmp), exe)
            run_daemon(msgs, n, Path(tmp))


if __name__ == "__main__":
    main()
