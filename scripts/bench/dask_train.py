"""Training time and peak memory: one process against a Dask cluster of 1 and 2 local
workers (``nnspam train --dask local:N``), on the same corpus, in one run.

    python scripts/bench/dask_train.py [--split splits/spamassassin.tsv] [--corpus DIR|TAR]

Each configuration runs ``nnspam train`` as a child process (start-up included), timed
by wall clock; peak memory is the largest resident set of the command and of its worker
processes (``getrusage`` of the children). Also prints the stage times the model records
(tokenize, fit) and the per-message costs the estimate for larger archives in
docs/guides/dask.md uses.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPORA = ROOT.parent / "shared" / "corpora"


def run(args: list[str]) -> tuple[float, float, float]:
    """(wall seconds, peak RSS of the largest process, peak RSS of the ``nnspam train``
    process itself: the client, sampled every 50 ms) in MB."""
    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen([sys.executable, "-m", "nnspam", "train", *args], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=err)
        proc, client = psutil.Process(p.pid), 0
        while p.poll() is None:
            try:
                client = max(client, proc.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        if p.returncode:
            err.seek(0)
            sys.exit(err.read().decode(errors="replace"))
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(after, before) / 1024.0, client / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default=str(CORPORA / "splits" / "spamassassin.tsv"))
    ap.add_argument("--corpus", default=str(CORPORA / "spamassassin.tar.xz"))
    ap.add_argument("--config", help="config file for every run")
    a = ap.parse_args()
    base = ["--split", a.split, "--corpus", a.corpus, "--no-progress"]
    if a.config:
        base += ["-c", a.config]
    print(f"# {a.split}", flush=True)
    rows = []
    for name, extra in (("one process", []), ("dask local:1", ["--dask", "local:1"]),
                        ("dask local:2", ["--dask", "local:2"])):
        with tempfile.TemporaryDirectory() as d:
            wall, peak, client = run([*base, "-m", f"{d}/m", *extra])
            meta = json.loads(Path(f"{d}/m/model.json").read_text())
            sec = meta["summary"].get("seconds", {})
            n = sum(meta["summary"]["messages"].values())
        rows.append((name, wall, peak, sec.get("tokenize"), sec.get("fit"), n))
        print(f"{name:14s} wall {wall:7.1f} s  peak RSS (largest process) {peak:7.0f} MB  "
              f"(the nnspam train process {client:5.0f} MB)  "
              f"tokenize {sec.get('tokenize')} s  fit {sec.get('fit')} s  ({n} messages)",
              flush=True)
    one = rows[0][1]
    for name, wall, *_ in rows[1:]:
        print(f"{name}: {one / wall:.2f} x the speed of one process")


if __name__ == "__main__":
    main()
