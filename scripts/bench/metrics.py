"""Benchmark: what ``nnspam serve --metrics`` costs, throughput with metrics on vs off.

The same ``nnspam serve`` (default model, ``--workers W``) is started alternately
without and with ``--metrics`` (prometheus_client's multiprocess mode: every worker
writes its counters to memory-mapped files), ``--rounds`` times each, in the order
off, on, on, off, off, on, ... so that a drift of the machine's load hits both
alike. Each run sends the same N messages as ``CHECK`` requests from C concurrent
raw-socket clients (one connection per message, as ``spamc``; no ``spamc`` process
per message, whose start would hide the server's own cost), and with metrics on a
scraper fetches ``/metrics`` every second, as Prometheus would. Printed per run:
messages/s and server CPU per message (supervisor and workers, from /proc); then the
medians and the ratios on/off.

Messages: the SpamAssassin corpus (``--corpus DIR``, default
/tmp/corpus/spamassassin, else the first N of ../shared/corpora/spamassassin.tar.xz),
half spam, half ham.

    .venv/bin/python scripts/bench/metrics.py [-n 2000] [-c 8] [--workers 2] [--rounds 3]
        [--repeat 1]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SA_TAR = ROOT.parent / "shared" / "corpora" / "spamassassin.tar.xz"


def _messages(corpus: Path, n: int) -> list[bytes]:
    """n messages, half spam, half ham, alternating."""
    spam: list[bytes] = []
    ham: list[bytes] = []
    if corpus.is_dir():
        for d, out in (("spam", spam), ("spam_2", spam), ("easy_ham", ham)):
            for p in sorted((corpus / d).iterdir()):
                if p.is_file() and p.name != "cmds" and len(out) < n // 2:
                    out.append(p.read_bytes())
    else:
        with tarfile.open(SA_TAR) as tar:
            for m in tar:
                if len(spam) >= n // 2 and len(ham) >= n - n // 2:
                    break
                if not m.isfile() or m.name.endswith("/cmds"):
                    continue
                part = m.name.split("/")[-2]
                out = (spam if part in ("spam", "spam_2") else ham if part == "easy_ham"
                       else None)
                if out is not None and len(out) < (n // 2 if out is spam else n - n // 2):
                    out.append(tar.extractfile(m).read())  # type: ignore[union-attr]
    return [m for pair in zip(spam, ham, strict=False) for m in pair]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(b"CHECK SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % len(raw) + raw)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of the server: the process and its live and reaped children."""
    tick = os.sysconf("SC_CLK_TCK")

    def own(p: int) -> int:
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0
        return int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    try:
        kids = [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        kids = []
    return (own(pid) + sum(own(k) for k in kids)) / tick


def _run(msgs: list[bytes], clients: int, workers: int, metrics: bool,
         tmp: Path) -> dict[str, float]:
    port, mport = _free_port(), _free_port()
    cfg = tmp / "empty.yaml"
    cfg.write_text("")
    cmd = [sys.executable, "-m", "nnspam", "serve", "-c", str(cfg), "--listen",
           f"127.0.0.1:{port}", "--workers", str(workers)]
    if metrics:
        cmd += ["--metrics", f"127.0.0.1:{mport}"]
    srv = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, cwd=ROOT)
    stop = threading.Event()
    scrapes = [0]
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(b"PING SPAMC/1.5\r\n\r\n")
                    if s.recv(100).startswith(b"SPAMD/1.5 0 PONG"):
                        break
            except OSError:
                if srv.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("nnspam serve did not start") from None
                time.sleep(0.2)
        with cf.ThreadPoolExecutor(clients) as ex:  # warm up every worker
            list(ex.map(lambda m: _check(port, m), msgs[:50]))

        def scrape() -> None:
            while not stop.wait(1.0):
                with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics",
                                            timeout=10) as r:
                    r.read()
                scrapes[0] += 1
        if metrics:
            threading.Thread(target=scrape, daemon=True).start()
        cpu0 = _cpu_seconds(srv.pid)
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(clients) as ex:
            answers = list(ex.map(lambda m: _check(port, m), msgs))
        wall = time.perf_counter() - t0
        cpu = _cpu_seconds(srv.pid) - cpu0
        stop.set()
        bad = sum(not a.startswith(b"SPAMD/1.5 0 EX_OK") for a in answers)
        if bad:
            raise SystemExit(f"{bad} requests failed")
        return {"rate": len(msgs) / wall, "cpu_ms": 1000 * cpu / len(msgs),
                "scrapes": scrapes[0]}
    finally:
        stop.set()
        srv.send_signal(signal.SIGTERM)
        srv.wait(timeout=60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="/tmp/corpus/spamassassin", type=Path)
    ap.add_argument("-n", type=int, default=2000, help="messages per run (2000)")
    ap.add_argument("-c", "--clients", type=int, default=8, help="concurrent clients (8)")
    ap.add_argument("--workers", type=int, default=2, help="nnspam serve --workers (2)")
    ap.add_argument("--rounds", type=int, default=3, help="runs with and without (3)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="send the messages this many times per run (longer runs, less noise)")
    args = ap.parse_args()
    msgs = _messages(args.corpus, args.n) * args.repeat
    print(f"{len(msgs)} messages, {args.clients} clients, {args.workers} workers, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)
    res: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for on in ((False, True) if i % 2 == 0 else (True, False)):
                r = _run(msgs, args.clients, args.workers, on, Path(tmp))
                res[on].append(r)
                print(f"metrics {'on ' if on else 'off'}  {r['rate']:7.1f} msgs/s  server CPU "
                      f"{r['cpu_ms']:5.2f} ms/msg" + (f"  ({r['scrapes']} scrapes)" if on else ""),
                      flush=True)
    med = {on: (statistics.median(r["rate"] for r in rs),
                statistics.median(r["cpu_ms"] for r in rs)) for on, rs in res.items()}
    print(f"median off: {med[False][0]:.1f} msgs/s, {med[False][1]:.2f} ms CPU/msg; "
          f"on: {med[True][0]:.1f} msgs/s, {med[True][1]:.2f} ms CPU/msg")
    print(f"throughput on/off: {med[True][0] / med[False][0]:.3f}; "
          f"CPU per message on/off: {med[True][1] / med[False][1]:.3f}; "
          f"load average now {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
