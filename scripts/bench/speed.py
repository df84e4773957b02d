#!/usr/bin/env python3
"""Speed benchmark: training time and classification throughput.

Prints figures; asserts nothing (timings on a shared machine are for reading,
not for failing builds).

    python scripts/bench/speed.py [--corpora ../shared/corpora] [--repeat 3]

1. Training: ``nnspam train`` on the train part of the SpamAssassin split
   (default settings), wall time of the whole command.
2. Throughput: ``nnspam classify --format tsv`` over the test part of the split
   (1,855 messages) with the shipped model, wall time of the whole command,
   start-up included, as messages per second; and the same from an unpacked
   directory of those messages given as PATHs.
3. Per message in one process (the daemon's and the server's case), over the test part
   with the shipped model: tokenizing, scoring tokens with the wide path empty (as
   shipped) and after 200 corrections (the wide path in use), and one correction
   (``nnspam.model.correct.correct`` with the config's ``learn:`` rule), in milliseconds.
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


def nnspam(*args: str) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "nnspam", *args], capture_output=True, cwd=ROOT)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"nnspam {' '.join(args)} failed: {r.stderr.decode()}")
    return dt, r.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpora", default=str(ROOT.parent / "shared" / "corpora"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-train", action="store_true", help="skip the training measurement")
    args = ap.parse_args()
    corpora = Path(args.corpora)
    tar = corpora / "spamassassin.tar.xz"
    split = corpora / "splits" / "spamassassin.tsv"
    print(f"# machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(tar) as tf:
            tf.extractall(tmp, filter="data")
        root = Path(tmp) / "spamassassin"
        train_times = []
        for _ in range(0 if args.no_train else args.repeat):
            dt, _ = nnspam("train", "--split", str(split), "--corpus", str(root),
                           "-m", str(Path(tmp) / "model"), "--no-progress")
            train_times.append(dt)
        if train_times:
            print(f"train (SpamAssassin train part, 4,191 messages): median "
                  f"{statistics.median(train_times):.1f}s of {args.repeat} "
                  f"({', '.join(f'{t:.1f}' for t in train_times)})")
        test_paths = [ln.split("\t")[0] for ln in split.read_text().splitlines()[1:]
                      if ln.endswith("\ttest")]
        for label, cmd in (
            ("classify --split (test part)",
             ["classify", "--format", "tsv", "--split", str(split), "--corpus", str(root)]),
            ("classify PATH... (test part)",
             ["classify", "--format", "tsv", *[str(root / p) for p in test_paths]]),
        ):
            times = []
            for _ in range(args.repeat):
                dt, out = nnspam(*cmd)
                times.append(dt)
            n = out.count(b"\n")
            med = statistics.median(times)
            print(f"{label}: {n} messages, median {med:.2f}s -> {n / med:.0f} messages/s "
                  f"(start-up included)")
        per_message([(root / p).read_bytes() for p in test_paths], args.repeat)
    return 0


def per_message(payloads: list[bytes], repeat: int) -> None:
    """Section 3 of the module docstring."""
    sys.path.insert(0, str(ROOT))
    from nnspam.model.correct import correct, rule_from_config
    from nnspam.services.runs.stream import start_model

    model = start_model("default")
    rule = rule_from_config({})

    def best(f) -> float:  # ms per message, best of ``repeat`` passes over all messages
        out = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            for x in items:
                f(x)
            out.append((time.perf_counter() - t0) * 1000 / len(items))
        return min(out)

    items = payloads
    t_tok = best(model.tokens)
    items = [model.tokens(p) for p in payloads]
    t_empty = best(lambda t: model.spamicity_of_tokens([t]))
    for t in items[:200]:  # the first 200, taught the opposite class: the wide path in use
        v = model.spamicity_of_tokens([t])[0] >= model.threshold
        correct(model, [t], "ham" if v else "spam", rule)
    t_wide = best(lambda t: model.spamicity_of_tokens([t]))
    t0 = time.perf_counter()
    for t in items[200:400]:
        v = model.spamicity_of_tokens([t])[0] >= model.threshold
        correct(model, [t], "ham" if v else "spam", rule)
    t_corr = (time.perf_counter() - t0) * 1000 / len(items[200:400])
    print(f"per message, one process: tokenize {t_tok:.2f} ms; score {t_empty:.2f} ms "
          f"(wide path empty), {t_wide:.2f} ms (in use, x{t_wide / t_empty:.2f}); "
          f"one correction {t_corr:.2f} ms (score included)")


if __name__ == "__main__":
    sys.exit(main())
