"""Benchmark the maildir daemon: delay from delivery to a message's final place,
and throughput for a burst.

Starts ``python -m nnspam daemon`` on a temporary maildir with a writable copy
of the shipped model, then

1. a *trickle*: ``--trickle`` messages delivered one at a time, ``--gap``
   seconds apart (ordinary mail flow): median and 95th percentile delay;
2. a *burst*: ``--n`` messages (half spam, half ham, from the SpamAssassin
   corpus) delivered as fast as possible, alternately by link() like procmail
   and rename() like Dovecot: median delay and messages per second from the
   first delivery to the last message's final place.

The delay of a message is the time its final state was committed (ham: the
verdict, the file staying in new/; spam: after the rename into .Junk/new/)
minus the time its delivery returned. Times come from the daemon's state
file, so the watcher adds no polling error.

    python scripts/bench/daemon_latency.py [--corpus DIR] [--n 2000] [--trickle 50]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from nnspam.mail import maildir as md  # noqa: E402
from nnspam.model.core import resolve_model_path  # noqa: E402


def load_messages(corpus: str | None, n: int) -> list[bytes]:
    """n messages, spam and ham interleaved, from an unpacked corpus directory
    or the shared ``spamassassin.tar.xz``."""
    half = n // 2
    spam: list[bytes] = []
    ham: list[bytes] = []
    if corpus and Path(corpus).is_dir():
        root = Path(corpus)
        for d, out in (("spam", spam), ("spam_2", spam), ("easy_ham", ham), ("easy_ham_2", ham),
                       ("hard_ham", ham)):
            for p in sorted((root / d).iterdir()) if (root / d).is_dir() else []:
                if p.name != "cmds" and len(out) < half:
                    out.append(p.read_bytes())
    else:
        tar_path = Path(corpus or ROOT.parent / "shared" / "corpora" / "spamassassin.tar.xz")
        with tarfile.open(tar_path) as tar:
            for m in tar:
                if not m.isfile() or m.name.endswith("/cmds"):
                    continue
                out = spam if "/spam" in m.name else ham
                if len(out) < half:
                    out.append(tar.extractfile(m).read())
    if len(spam) < half or len(ham) < half:
        sys.exit(f"not enough messages in {corpus}: {len(spam)} spam, {len(ham)} ham")
    return [m for pair in zip(spam, ham, strict=True) for m in pair]


def final_times(state: Path, box: Path) -> dict[str, tuple[float, str]]:
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT uniq, updated_at, place FROM messages WHERE maildir=?",
                          (str(box.resolve()),)).fetchall()
    finally:
        db.close()
    return {u: (t, p) for u, t, p in rows if p != "moving"}


def wait_for(state: Path, box: Path, names: set[str], proc: subprocess.Popen,
             timeout: float = 600) -> dict[str, tuple[float, str]]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            sys.exit(f"the daemon exited with {proc.returncode}")
        if state.exists():
            done = final_times(state, box)
            if names <= set(done):
                return done
        time.sleep(0.05)
    sys.exit("timed out")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="/tmp/corpus/spamassassin",
                    help="unpacked SpamAssassin corpus dir, or the .tar.xz")
    ap.add_argument("--n", type=int, default=2000, help="burst size (2000)")
    ap.add_argument("--trickle", type=int, default=50, help="messages delivered one by one")
    ap.add_argument("--gap", type=float, default=0.05, help="seconds between trickle messages")
    args = ap.parse_args()

    msgs = load_messages(args.corpus, max(args.n, args.trickle))
    with tempfile.TemporaryDirectory(prefix="nnspam-bench-") as tmpd:
        tmp = Path(tmpd)
        box = md.ensure_maildir(tmp / "Maildir")
        model = tmp / "model"
        shutil.copytree(resolve_model_path("default"), model)
        state = tmp / "state.sqlite3"
        cfg = tmp / "config.yaml"
        cfg.write_text(f"daemon:\n  maildirs: [{box}]\n  state: {state}\n  rescan_interval: 0\n")
        log = open(tmp / "daemon.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "nnspam", "daemon", "-c", str(cfg),
                                 "-m", str(model)], stderr=log, cwd=ROOT)
        try:
            while b"INFO watching" not in (tmp / "daemon.log").read_bytes():
                if proc.poll() is not None:
                    sys.exit("the daemon did not start:\n" + (tmp / "daemon.log").read_text())
                time.sleep(0.05)

            delivered: dict[str, float] = {}
            for i, data in enumerate(msgs[: args.trickle]):
                p = md.deliver(box, data, "link" if i % 2 else "rename")
                delivered[p.name] = time.time()
                wait_for(state, box, {p.name}, proc)
                time.sleep(args.gap)
            done = final_times(state, box)
            trickle = [done[n][0] - t for n, t in delivered.items()]

            # Stage the burst in tmp/ (written and fsynced, as an MDA does first),
            # then link() or rename() it all into new/ as fast as possible.
            staged = []
            for data in msgs[: args.n]:
                name = md.unique_name()
                with open(box / "tmp" / name, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                staged.append(name)
            burst: dict[str, float] = {}
            t0 = time.time()
            for i, name in enumerate(staged):
                src, dst = box / "tmp" / name, box / "new" / name
                if i % 2:
                    os.link(src, dst)
                    os.unlink(src)
                else:
                    os.rename(src, dst)
                burst[name] = time.time()
            t_delivered = time.time() - t0
            done = wait_for(state, box, set(burst), proc)
            delays = [done[n][0] - t for n, t in burst.items()]
            t_last = max(done[n][0] for n in burst)
            spam = sum(1 for n in burst if done[n][1] == "junk")
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(60)
            log.close()
        if rc != 0:
            print((tmp / "daemon.log").read_text()[-3000:], file=sys.stderr)
            return 1

    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"trickle: {len(trickle)} messages, one every >= {args.gap * 1000:.0f} ms (fsync'd "
          f"deliveries)")
    print(f"  delay delivery -> final place: median {statistics.median(trickle) * 1000:.1f} ms, "
          f"p95 {pct(trickle, 0.95) * 1000:.1f} ms")
    print(f"burst: {len(burst)} messages ({spam} moved to .Junk), delivered in "
          f"{t_delivered:.2f} s (link and rename from tmp/)")
    print(f"  delay delivery -> final place: median {statistics.median(delays):.2f} s, "
          f"p95 {pct(delays, 0.95):.2f} s, max {max(delays):.2f} s")
    print(f"  throughput: {len(burst) / (t_last - t0):.0f} messages/s "
          f"({t_last - t0:.2f} s from the first delivery to the last message filed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
