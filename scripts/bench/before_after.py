#!/usr/bin/env python3
"""Behaviour, accuracy and speed of the working tree against an earlier revision, in one
run: for a change that should change none of them (a refactor), the proof that it did not.

    python scripts/bench/before_after.py --base REV [--corpora ../shared/corpora]
        [--unpacked DIR] [--trec DIR] [--json FILE]

The revision is checked out into a temporary git worktree (removed at the end); each side
runs from its own tree (``PYTHONPATH`` and the working directory), with the same Python:

1. **The SpamAssassin test**: ``nnspam test`` on the test part of the split with the
   shipped model; every figure of its JSON must be equal.
2. **The stream checks**: ``scripts/bench/stream.py --filters nnspam`` on enron1 and, when
   ``--trec`` names the unpacked TREC folder, the real server's stream; corrections only
   from the shipped model and full feedback from an empty start. Hams lost, spam missed
   and 1-ROCA must be equal.
3. **The speed bench**: ``scripts/bench/speed.py --no-train`` twice for each side,
   alternating (base, work, base, work) so that a drift of the machine hits both; the
   best of each figure is kept and the ratio work/base printed. Speed is read, not
   asserted: the exit status counts only 1 and 2.

Exit status 1 when a figure of 1 or 2 differs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
STREAM_KEYS = ("ham_lost", "spam_missed", "one_minus_roca_pct")
# speed.py's lines: "<label>: N messages, median X s -> R messages/s" and
# "per message, one process: tokenize A ms; score B ms ..."
_RATE = re.compile(r"^(?P<label>[^:#]+): \d[\d,]* messages, median [\d.]+s -> (?P<v>\d+) "
                   r"messages/s", re.M)
_MS = re.compile(r"tokenize ([\d.]+) ms; score ([\d.]+) ms \(wide path empty\), ([\d.]+) ms "
                 r"\(in use.*one correction ([\d.]+) ms")
_MS_LABELS = ("tokenize", "score, wide path empty", "score, wide path in use",
              "one correction")


def run(side: Path, args: list[str], timeout: float = 3600) -> str:
    """Run ``python ARGS`` in ``side``'s tree; its stdout (fails with its stderr)."""
    env = {**os.environ, "PYTHONPATH": str(side), "NNSPAM_CORPORA": ""}
    env.pop("NNSPAM_CONFIG", None)
    r = subprocess.run([sys.executable, *args], cwd=side, env=env, capture_output=True,
                       text=True, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"{side}: {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r.stdout


def sa_test(side: Path, corpora: Path, unpacked: Path | None, out: Path) -> dict[str, Any]:
    corpus = unpacked / "spamassassin" if unpacked else corpora / "spamassassin.tar.xz"
    js = out / f"sa-{side.name}.json"
    run(side, ["-m", "nnspam", "test", "--split", str(corpora / "splits" / "spamassassin.tsv"),
               "--corpus", str(corpus), "-m", "default", "--json", str(js), "--no-progress"])
    data = json.loads(js.read_text())
    return {k: v for k, v in data.items() if isinstance(v, int | float) and not
            isinstance(v, bool) and "time" not in k and "second" not in k}


def streams(side: Path, jobs: list[tuple[str, Path, Path]], out: Path) -> dict[str, Any]:
    """{stream-feedback-start: {key: value}} of nnspam on each (name, index, corpus)."""
    got: dict[str, Any] = {}
    for feedback, start in (("errors", "trained"), ("all", "empty")):
        for name, index, corpus in jobs:
            d = out / f"{side.name}-{name}-{feedback}"
            run(side, ["scripts/bench/stream.py", "--index", str(index), "--corpus", str(corpus),
                       "--feedback", feedback, "--start", start, "--filters", "nnspam",
                       "--jobs", "2", "--no-plot", "--out", str(d)])
            for f in sorted(d.glob("stream-*.json")):
                if f.name.startswith("stream-summary"):
                    continue
                nn = json.loads(f.read_text())["filters"]["nnspam"]
                got[f.stem[len("stream-"):]] = {k: nn[k] for k in STREAM_KEYS}
    return got


def speed(side: Path, corpora: Path) -> dict[str, float]:
    text = run(side, ["scripts/bench/speed.py", "--no-train", "--repeat", "3",
                      "--corpora", str(corpora)])
    figures = {m["label"].strip() + " (msg/s)": float(m["v"]) for m in _RATE.finditer(text)}
    m = _MS.search(text)
    if m:
        figures.update({f"{label} (ms)": float(v) for label, v in zip(_MS_LABELS, m.groups(),
                                                                       strict=True)})
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the revision to compare with")
    ap.add_argument("--corpora", default=str(ROOT.parent / "shared" / "corpora"))
    ap.add_argument("--unpacked", help="a folder holding the unpacked spamassassin/ and "
                    "enron-spam/ corpora (default: the archives)")
    ap.add_argument("--trec", help="the unpacked TREC folder (its data/ inside); without "
                    "it the TREC stream is left out")
    ap.add_argument("--json", help="also write every figure here")
    a = ap.parse_args()
    corpora = Path(a.corpora).resolve()
    unpacked = Path(a.unpacked).resolve() if a.unpacked else None
    jobs = [("enron1", corpora / "streams" / "enron1.index",
             unpacked / "enron-spam" if unpacked else corpora / "enron-spam.tar.xz")]
    if a.trec:
        jobs.append(("trec", corpora / "streams" / "trec07p-first20k.index", Path(a.trec)))
    tmp = Path(tempfile.mkdtemp(prefix="nnspam-before-after."))
    base = tmp / "base"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base),
                    a.base], check=True)
    work = ROOT
    out = tmp / "out"
    out.mkdir()
    try:
        rev = subprocess.run(["git", "-C", str(base), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        print(f"# base {a.base} ({rev}) against the working tree of {ROOT}", flush=True)
        result: dict[str, Any] = {"base": rev, "sa": {}, "streams": {}, "speed": {}}
        for name, side in (("base", base), ("work", work)):
            result["sa"][name] = sa_test(side, corpora, unpacked, out)
            result["streams"][name] = streams(side, jobs, out)
            print(f"# {name}: SpamAssassin test and streams done", flush=True)
        runs: dict[str, list[dict[str, float]]] = {"base": [], "work": []}
        for _ in range(2):
            for name, side in (("base", base), ("work", work)):
                runs[name].append(speed(side, corpora))
        differ = 0
        print("\n| SpamAssassin test | base | work | |\n|---|---|---|---|")
        for k in sorted(result["sa"]["base"]):
            b, w = result["sa"]["base"][k], result["sa"]["work"].get(k)
            differ += b != w
            print(f"| {k} | {b:.6g} | {w:.6g} | {'equal' if b == w else 'DIFFERS'} |")
        print("\n| stream (nnspam) | base: hams lost / spam missed, 1-ROCA | work | |\n"
              "|---|---|---|---|")
        for k in sorted(result["streams"]["base"]):
            b, w = result["streams"]["base"][k], result["streams"]["work"].get(k)
            same = b == w
            differ += not same
            fmt = "{ham_lost} / {spam_missed}, {one_minus_roca_pct:.4f}%"
            print(f"| {k} | {fmt.format(**b)} | {fmt.format(**w) if w else '-'} | "
                  f"{'equal' if same else 'DIFFERS'} |")
        print("\n| speed (best of 2 runs each, alternating) | base | work | work/base |\n"
              "|---|---|---|---|")
        for k in runs["base"][0]:
            pick = max if k.endswith("(msg/s)") else min
            b = pick(r[k] for r in runs["base"] if k in r)
            w = pick((r[k] for r in runs["work"] if k in r), default=float("nan"))
            result["speed"][k] = {"base": b, "work": w}
            print(f"| {k} | {b:g} | {w:g} | {w / b:.2f} |")
        if a.json:
            Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"\n{'every figure equal' if not differ else f'{differ} figure(s) differ'}")
        return 1 if differ else 0
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                       check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
