"""Benchmark: ``spamc`` against ``nnspam serve`` vs one ``nnspam filter``
process per message, over N SpamAssassin-corpus messages (sequential, one
client). Prints the median per-message latency and messages per second.

    .venv/bin/python scripts/bench/server.py [--corpus /tmp/corpus/spamassassin] [-n 200]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _messages(corpus: Path, n: int) -> list[bytes]:
    spam = sorted((corpus / "spam").iterdir())[: n // 2]
    ham = sorted((corpus / "easy_ham").iterdir())[: n - len(spam)]
    return [p.read_bytes() for p in spam + ham]


def _run(cmd: list[str], msgs: list[bytes]) -> tuple[float, float]:
    lat = []
    t0 = time.perf_counter()
    for raw in msgs:
        t = time.perf_counter()
        subprocess.run(cmd, input=raw, capture_output=True, check=False)
        lat.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    return statistics.median(lat) * 1000, len(msgs) / total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", default="/tmp/corpus/spamassassin", type=Path)
    ap.add_argument("-n", type=int, default=200)
    args = ap.parse_args()
    spamc = shutil.which("spamc")
    if spamc is None:
        print("spamc is not installed (apt-get install -y spamc)", file=sys.stderr)
        return 2
    msgs = _messages(args.corpus, args.n)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text("")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        srv = subprocess.Popen([sys.executable, "-m", "nnspam", "serve", "-c", str(cfg),
                                "--listen", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
        try:
            for _ in range(600):
                if subprocess.run([spamc, "-d", "127.0.0.1", "-p", str(port), "-K"],
                                  capture_output=True).returncode == 0:
                    break
                time.sleep(0.1)
            s_med, s_rate = _run([spamc, "-d", "127.0.0.1", "-p", str(port)], msgs)
        finally:
            srv.send_signal(signal.SIGTERM)
            srv.wait(timeout=30)
        f_med, f_rate = _run([sys.executable, "-m", "nnspam", "filter", "-c", str(cfg)], msgs)
    print(f"messages: {len(msgs)}")
    print(f"spamc -> nnspam serve:       median {s_med:7.1f} ms/message, {s_rate:7.1f} messages/s")
    print(f"nnspam filter per message:   median {f_med:7.1f} ms/message, {f_rate:7.1f} messages/s")
    print(f"speed-up (messages/s):       {s_rate / f_rate:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
