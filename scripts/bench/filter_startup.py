#!/usr/bin/env python3
"""Start-up benchmark of the pipe filter: one ``nnspam filter`` process per
message, as procmail and maildrop run it.

Prints figures; asserts nothing.

    python scripts/bench/filter_startup.py [--messages 200] [--corpus DIR]

Runs the installed ``nnspam`` entry point beside this interpreter (the
console script procmail would call) on N real messages (half ham, half spam,
from the SpamAssassin corpus: DIR, else /tmp/corpus/spamassassin, else
unpacked from ../shared/corpora/spamassassin.tar.xz) and prints the median
and 90th percentile wall time per message, with ``python -c pass`` and
``python -c 'import numpy'`` as baselines, and the in-process cost of each
stage (imports, model load, scoring) of one message.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent / "nnspam"


def find_corpus(given: str | None, tmp: str) -> Path:
    if given:
        return Path(given)
    unpacked = Path("/tmp/corpus/spamassassin")
    if unpacked.is_dir():
        return unpacked
    tar = ROOT.parent / "shared" / "corpora" / "spamassassin.tar.xz"
    if not tar.is_file():
        sys.exit("no corpus: give --corpus DIR")
    with tarfile.open(tar) as t:
        t.extractall(tmp, filter="data")
    return Path(tmp) / "spamassassin"


def pick(corpus: Path, n: int) -> list[Path]:
    out: list[Path] = []
    for part, k in (("easy_ham", n - n // 2), ("spam", n // 2)):
        files = sorted(p for p in (corpus / part).iterdir() if p.is_file())
        step = max(1, len(files) // k)
        out += files[::step][:k]
    return out


def timed(cmd: list[str], stdin_path: Path | None = None) -> float:
    fh = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    try:
        t0 = time.perf_counter()
        r = subprocess.run(cmd, stdin=fh, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        dt = time.perf_counter() - t0
    finally:
        if stdin_path:
            fh.close()
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.decode()[-500:]}")
    return dt


def report(name: str, times: list[float]) -> None:
    ms = sorted(t * 1000 for t in times)
    p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
    print(f"{name:42s} median {statistics.median(ms):6.1f} ms   p90 {p90:6.1f} ms   "
          f"(n={len(ms)})")


STAGES = r"""
import sys, time
t0 = time.perf_counter()
import numpy
t1 = time.perf_counter()
from nnspam import pipefilter, config
from nnspam.model import Model, spamicity
import nnspam.tokens
t2 = time.perf_counter()
m = Model.load("default")
t3 = time.perf_counter()
raw = open(sys.argv[1], "rb").read()
sp = spamicity(m.outputs([m.tokens(raw)]), 0.9, 0.1)
t4 = time.perf_counter()
print(" ".join(f"{(b - a) * 1000:.1f}" for a, b in ((t0, t1), (t1, t2), (t2, t3), (t3, t4))))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--corpus")
    ap.add_argument("--baseline-runs", type=int, default=30)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        msgs = pick(find_corpus(a.corpus, tmp), a.messages)
        py = sys.executable
        print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}; {BIN}")
        timed([str(BIN), "filter"], msgs[0])  # warm the page cache
        report("python -c pass", [timed([py, "-c", "pass"]) for _ in range(a.baseline_runs)])
        report("python -c 'import numpy'",
               [timed([py, "-c", "import numpy"]) for _ in range(a.baseline_runs)])
        report("nnspam filter, one process per message",
               [timed([str(BIN), "filter"], m) for m in msgs])
        stages = []
        for m in msgs[:20]:
            r = subprocess.run([py, "-c", STAGES, str(m)], capture_output=True, text=True,
                               check=True)
            stages.append([float(x) for x in r.stdout.split()])
        med = [statistics.median(col) for col in zip(*stages, strict=True)]
        print("in-process stages, median of 20 (ms): import numpy {:.1f}, import nnspam "
              "model+tokens {:.1f}, Model.load('default') {:.1f}, score one message {:.1f}"
              .format(*med))


if __name__ == "__main__":
    main()
