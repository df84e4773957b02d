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
``python -c 'import numpy'`` as baselines, bogofilter's pass-through mode
(``bogofilter -p -e``, with a word list taught the same messages) beside it
when bogofilter is installed, and the in-process cost of each
stage (imports, model load, scoring) of one message.

With ``--server`` it also starts ``nnspam serve`` on a Unix socket and times
``nnspam filter --server SOCKET`` (the filter's no-NumPy fast path through
the server) and Debian's ``spamc -U SOCKET`` per message, and counts how
many of the server-path outputs are byte-identical to the in-process ones.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import signal
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


def run_out(cmd: list[str], path: Path) -> bytes:
    with open(path, "rb") as fh:
        return subprocess.run(cmd, stdin=fh, capture_output=True, check=True).stdout


def server_mode(msgs: list[Path], tmp: str) -> None:
    """Time the filter through a running nnspam serve against in-process."""
    sock = os.path.join(tmp, "nnspam.sock")
    cfg = os.path.join(tmp, "serve.yaml")
    Path(cfg).write_text("")
    srv = subprocess.Popen([str(BIN), "serve", "-c", cfg, "--socket", sock],
                           stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        else:
            sys.exit("nnspam serve did not start")
        via = [str(BIN), "filter", "-c", cfg, "--server", sock]
        timed(via, msgs[0])  # warm up the server's first request
        report("nnspam filter via nnspam serve", [timed(via, m) for m in msgs])
        spamc = shutil.which("spamc")
        if spamc:
            report("spamc -U (C client) via nnspam serve",
                   [timed([spamc, "-U", sock], m) for m in msgs])
        same = sum(run_out(via, m) == run_out([str(BIN), "filter", "-c", cfg], m)
                   for m in msgs)
        print(f"server-path output identical to in-process: {same}/{len(msgs)}")
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait(60)


def report(name: str, times: list[float]) -> float:
    """Print the median and 90th percentile; return the median (ms)."""
    ms = sorted(t * 1000 for t in times)
    p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
    med = statistics.median(ms)
    print(f"{name:42s} median {med:6.1f} ms   p90 {p90:6.1f} ms   (n={len(ms)})")
    return med


STAGES = r"""
import sys, time
t0 = time.perf_counter()
import numpy
t1 = time.perf_counter()
from nnspam import config
from nnspam.services.delivery import pipefilter
from nnspam.model.core import Model, spamicity
import nnspam.mail.tokens
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
    ap.add_argument("--server", action="store_true",
                    help="also time the filter through a running nnspam serve")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        msgs = pick(find_corpus(a.corpus, tmp), a.messages)
        py = sys.executable
        print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}; {BIN}")
        # An installed package has its bytecode; without it (e.g. under
        # PYTHONDONTWRITEBYTECODE=1) every start would compile nnspam's sources.
        compileall.compile_dir(str(ROOT / "nnspam"), quiet=1)
        timed([str(BIN), "filter"], msgs[0])  # warm the page cache
        report("python -c pass", [timed([py, "-c", "pass"]) for _ in range(a.baseline_runs)])
        report("python -c 'import numpy'",
               [timed([py, "-c", "import numpy"]) for _ in range(a.baseline_runs)])
        ours = report("nnspam filter, one process per message",
                      [timed([str(BIN), "filter"], m) for m in msgs])
        bogo = shutil.which("bogofilter")
        if bogo:
            # bogofilter's pass-through mode (-p, -e: exit 0 for spam and ham alike) with
            # a word list taught the same messages, as procmail would run it
            wl = os.path.join(tmp, "bogofilter")
            os.mkdir(wl)
            for m in msgs:
                with open(m, "rb") as fh:
                    subprocess.run([bogo, "-d", wl, "-s" if "spam" in m.parent.name else "-n"],
                                   stdin=fh, check=True)
            theirs = report("bogofilter -p -e, one process per message",
                            [timed([bogo, "-d", wl, "-p", "-e"], m) for m in msgs])
            print(f"nnspam filter / bogofilter: {ours / theirs:.0f} times")
        if a.server:
            server_mode(msgs, tmp)
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
