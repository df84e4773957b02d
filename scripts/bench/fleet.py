#!/usr/bin/env python3
"""A fleet's cost (docs/guides/fleet.md "Running a fleet"): 1,000 per-user models in Redis against
1,000 full copies, the servers' memory, the learner's pace, and a server's throughput
with the Redis store against the same server with models on disk, in one run.

Starts its own redis-server (Debian's package; no persistence, a free loopback port)
and ``nnspam serve`` instances, and drives them over the SPAMC protocol only from
this host (loopback). Needs the SpamAssassin corpus (../shared/corpora) and the redis
extra. Run: ``.venv/bin/python scripts/bench/fleet.py [--users 1000] [--requests 2000]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SA_TAR = ROOT.parent / "shared" / "corpora" / "spamassassin.tar.xz"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, data: bytes, host: str = "127.0.0.1") -> bytes:
    with socket.create_connection((host, port), timeout=60) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        parts = []
        while chunk := s.recv(65536):
            parts.append(chunk)
    return b"".join(parts)


def verb(name: str, raw: bytes, **headers: str) -> bytes:
    hdr = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return f"{name} SPAMC/1.5\r\nContent-length: {len(raw)}\r\n{hdr}\r\n".encode() + raw


def rss_kb(pid: int) -> int:
    """Resident set of a process and its children (the server's workers), in kB."""
    total = 0
    pids = [pid] + [int(p) for p in subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


class Serve:
    def __init__(self, cfg: Path, port: int, workers: int, log: Path) -> None:
        self.port = port
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nnspam", "serve", "-c", str(cfg), "-m", "default",
             "--listen", f"127.0.0.1:{port}", "--workers", str(workers), "--allow-tell"],
            stderr=self.log, start_new_session=True, cwd=ROOT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if request(port, b"PING SPAMC/1.5\r\n\r\n").startswith(b"SPAMD/1.5 0 PONG"):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start: {log.read_text()}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.close()


def throughput(port: int, msgs: list[bytes], n: int, threads: int,
               users: list[str] | None = None) -> float:
    """CHECK requests per second, ``threads`` clients at once."""
    def one(i: int) -> None:
        raw = msgs[i % len(msgs)]
        hdr = {"User": users[i % len(users)]} if users else {}
        got = request(port, verb("CHECK", raw, **hdr))
        assert got.startswith(b"SPAMD/1.5 0 EX_OK"), got[:200]

    for i in range(min(50, n)):  # warm up (every worker's first requests)
        one(i)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(n)))
    return n / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args()
    redis_exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    tmp = Path(tempfile.mkdtemp(prefix="nnspam-fleet-bench-"))
    out: dict[str, object] = {}
    procs: list[Serve] = []
    redis = None
    try:
        with tarfile.open(SA_TAR) as tar:
            tar.extractall(tmp, filter="data")
        sa = tmp / "spamassassin"
        hams = [p.read_bytes() for p in sorted((sa / "easy_ham").iterdir())]
        spams = [p.read_bytes() for p in sorted((sa / "spam").iterdir())]
        msgs = [m for pair in zip(hams[:500], spams[:500], strict=True) for m in pair]
        rport = free_port()
        redis = subprocess.Popen([redis_exe, "--port", str(rport), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                                 stdout=subprocess.DEVNULL)
        import redis as redis_client

        r = redis_client.Redis(port=rport)
        for _ in range(100):
            try:
                r.ping()
                break
            except redis_client.ConnectionError:
                time.sleep(0.05)
        url = f"redis://127.0.0.1:{rport}/0"
        fleet_cfg = tmp / "fleet.yaml"
        fleet_cfg.write_text(f'store: {url}\nserve:\n  user_model: "users/%u"\n')
        disk_cfg = tmp / "disk.yaml"
        disk_cfg.write_text("")

        # -- throughput: the same server, models on disk and in Redis (site model) ----
        disk = Serve(disk_cfg, free_port(), args.workers, tmp / "disk.log")
        procs.append(disk)
        out["rss_disk_server_kb"] = rss_kb(disk.proc.pid)
        fleet = Serve(fleet_cfg, free_port(), args.workers, tmp / "fleet.log")
        procs.append(fleet)
        base_mem = int(r.info("memory")["used_memory"])
        out["redis_used_memory_site_only"] = base_mem
        # interleaved, twice each, so that other load on the host hits both alike
        d1 = throughput(disk.port, msgs, args.requests // 2, args.threads)
        f1 = throughput(fleet.port, msgs, args.requests // 2, args.threads)
        d2 = throughput(disk.port, msgs, args.requests // 2, args.threads)
        f2 = throughput(fleet.port, msgs, args.requests // 2, args.threads)
        out["throughput_disk_per_s"] = round((d1 + d2) / 2, 1)
        out["throughput_redis_per_s"] = round((f1 + f2) / 2, 1)
        out["throughput_ratio_redis_over_disk"] = round((f1 + f2) / (d1 + d2), 3)
        disk.stop()
        procs.remove(disk)

        # -- 1,000 per-user models, each taught one message through TELL -----------
        users = [f"user{i:04d}" for i in range(args.users)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda i: request(fleet.port, verb(
                "TELL", hams[600 + i % (len(hams) - 600)], Message_class="spam", Set="local",
                User=users[i])), range(len(users))))
        assert all(a.startswith(b"SPAMD/1.5 0 EX_OK") for a in answers)
        told = time.perf_counter() - t0
        while r.hlen("nnspam:versions") < len(users) + 1 or r.xlen("nnspam:corrections"):
            time.sleep(0.2)
        learned = time.perf_counter() - t0
        out["tell_seconds"] = round(told, 1)
        out["learner_corrections_per_s"] = round(len(users) / learned, 1)
        mem = int(r.info("memory")["used_memory"])
        out["redis_used_memory_with_users"] = mem
        per_user = (mem - base_mem) / len(users)
        out["redis_bytes_per_user_model"] = round(per_user)
        sizes = [r.memory_usage(f"nnspam:model:{k.decode()}:{v.decode()}") or 0
                 for k, v in r.hgetall("nnspam:versions").items() if k != b"site"]
        out["user_model_key_bytes_median"] = sorted(sizes)[len(sizes) // 2]
        full = sum(p.stat().st_size for p in (ROOT / "nnspam/data/models/email").iterdir())
        out["full_model_bytes"] = full
        out["full_copies_bytes"] = full * len(users)
        out["redis_over_full_copies"] = round((mem - base_mem) / (full * len(users)), 5)
        out["rss_fleet_server_kb_site_only"] = rss_kb(fleet.proc.pid)
        # scoring for users: every worker fills its cache (serve.user_cache, 16)
        out["throughput_redis_users_per_s"] = round(
            throughput(fleet.port, msgs, args.requests // 2, args.threads, users[:16]), 1)
        out["throughput_redis_1000_users_per_s"] = round(
            throughput(fleet.port, msgs, args.requests // 2, args.threads, users), 1)
        out["rss_fleet_server_kb_users_cached"] = rss_kb(fleet.proc.pid)
        out["workers"] = args.workers
        out["cores"] = os.cpu_count()
        out["load_average"] = os.getloadavg()[0]
    finally:
        for p in procs:
            try:
                p.stop()
            except Exception:  # noqa: BLE001 - best effort at the end of a benchmark
                pass
        if redis is not None:
            redis.terminate()
            redis.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
