#!/usr/bin/env python3
"""Benchmark the Twilio webhook: signed POST /sms requests against `nnspam sms serve`.

Starts `nnspam sms serve` (waitress) on a free loopback port with a temporary
SMS maildir and state, sends N requests signed with twilio's RequestValidator
algorithm one after another on one keep-alive connection (half spam-like, half
ham-like texts), and prints requests per second, median and p95 latency, and
how many messages were stored and filed into .Junk. Every request is stored
and fsynced before the answer, so this is the real per-SMS cost. Prints
figures; asserts only that every request was accepted.

    python scripts/bench/sms_webhook.py [-n 1000]
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=1000, help="requests to send (1000)")
    args = ap.parse_args()
    from twilio.request_validator import RequestValidator

    with tempfile.TemporaryDirectory() as d:
        conf = Path(d) / "config.yaml"
        conf.write_text(f"sms:\n  maildir: {d}/SMS\n  state: {d}/state.sqlite3\n"
                        f"  env_file: {d}/twilio.env\n")
        (Path(d) / "twilio.env").write_text("TWILIO_AUTH_TOKEN=benchmark-token\n")
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "nnspam", "sms", "serve", "-c", str(conf), "--port", str(port)],
            stderr=subprocess.DEVNULL)
        try:
            for _ in range(300):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            url = f"http://127.0.0.1:{port}/sms"
            validator = RequestValidator("benchmark-token")
            conn = http.client.HTTPConnection("127.0.0.1", port)
            latencies = []
            t0 = time.perf_counter()
            for i in range(args.n):
                text = (f"Free entry {i}: text WIN to 87121 to claim your prize now" if i % 2
                        else f"see you at {i % 12} then, ok?")
                params = {"MessageSid": f"SM{i:032d}", "From": "+447700900123",
                          "To": "+441632960000", "Body": text}
                headers = {"X-Twilio-Signature": validator.compute_signature(url, params),
                           "Content-Type": "application/x-www-form-urlencoded"}
                t = time.perf_counter()
                conn.request("POST", "/sms", urllib.parse.urlencode(params), headers)
                resp = conn.getresponse()
                resp.read()
                latencies.append(time.perf_counter() - t)
                if resp.status != 200:
                    sys.exit(f"request {i} answered {resp.status}")
            total = time.perf_counter() - t0
        finally:
            server.terminate()
            server.wait()
        junk = len(os.listdir(f"{d}/SMS/.Junk/new")) if os.path.isdir(f"{d}/SMS/.Junk/new") else 0
        stored = len(os.listdir(f"{d}/SMS/new")) + junk
        latencies.sort()
        print(f"# machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
        print(f"{args.n} signed requests: {args.n / total:.0f} requests/s, median "
              f"{statistics.median(latencies) * 1000:.2f} ms, "
              f"p95 {latencies[int(0.95 * (len(latencies) - 1))] * 1000:.2f} ms; "
              f"stored {stored}, filed into .Junk {junk}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
