#!/usr/bin/env python3
"""Every architecture and backend on the shared test splits: the architecture table of
docs/lab/architectures.md.

For each corpus given (SpamAssassin with --corpus/--sa-split, SMS with --sms/--sms-split),
trains each architecture x backend on the train part, and measures on the test part at the
default ham bias: ham lost %, spam missed %, 1-ROCA %, training time (wall clock, tokens
computed once beforehand), model size on disk, and the NumPy classification throughput
(``Model.score`` over the test payloads: parsing, tokens, features and forward pass, one
process).  Then ``--arch nnspam`` over ``--seeds`` with both backends (the spread).

    python scripts/bench/archs.py --corpus ../shared/corpora/spamassassin.tar.xz \\
        --sa-split ../shared/corpora/splits/spamassassin.tsv \\
        --sms ../shared/corpora/sms/SMSSpamCollection --sms-split ../shared/corpora/splits/sms.tsv

``--runs arch:backend[:dbb],...`` limits the table rows; ``--seeds ''`` skips the seed runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from nnspam import config as C  # noqa: E402
from nnspam.mail.corpus import load_split_samples  # noqa: E402
from nnspam.services.runs.evaluate import evaluate  # noqa: E402
from nnspam.services.runs.training import (  # noqa: E402
    Recipe,
    labels_of,
    tokenize_samples,
    train_model,
)

DEFAULT_RUNS = ("nnspam:numpy,nnspam:keras,deep:numpy,deep:keras,deep:keras:dbb,"
                "sms-embedding:numpy,sms-embedding:keras")


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir())


def run_one(name, kind, train, tok_train, test, y_test, cfg, arch, backend, balance, seed=None):
    recipe = Recipe.from_config(cfg, kind, overrides=None if seed is None else {
        "network": {"seed": seed}}, arch=arch, backend=backend, balance=balance)
    t0 = time.perf_counter()
    model = train_model(train, recipe, token_lists=tok_train)
    t_train = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        model.save(Path(d) / "m")
        size = dir_size(Path(d) / "m")
    payloads = [s.payload for s in test]
    t1 = time.perf_counter()
    sp = model.score(payloads)
    rate = len(payloads) / (time.perf_counter() - t1)
    ev = evaluate(y_test, sp, 0.5, 0.9, 0.1)
    row = {
        "corpus": name, "arch": arch, "backend": backend, "balance": balance,
        "seed": recipe.settings.network.seed,
        "ham_lost": ev.false_positives, "n_ham": ev.n_ham,
        "spam_missed": ev.false_negatives, "n_spam": ev.n_spam,
        "ham_lost_pct": 100.0 * ev.false_positives / ev.n_ham,
        "spam_missed_pct": 100.0 * ev.false_negatives / ev.n_spam,
        "one_minus_roca_pct": ev.one_minus_roca_percent,
        "train_s": t_train, "size_bytes": size, "msgs_per_s": rate,
        "epochs": model.summary.get("epochs"), "best_epoch": model.summary.get("best_epoch"),
    }
    print(f"{name:12s} {arch:13s} {backend:5s} {balance:4s} seed {row['seed']}  "
          f"ham lost {row['ham_lost']:2d} ({row['ham_lost_pct']:.2f}%)  "
          f"spam missed {row['spam_missed']:3d} ({row['spam_missed_pct']:.2f}%)  "
          f"1-ROCA {row['one_minus_roca_pct']:.3f}%  train {t_train:6.1f}s  "
          f"{size / 1e6:6.2f} MB  {rate:6.0f} msg/s  epochs {row['epochs']}", flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", help="SpamAssassin corpus (.tar.xz or directory)")
    ap.add_argument("--sa-split")
    ap.add_argument("--sms")
    ap.add_argument("--sms-split")
    ap.add_argument("--runs", default=DEFAULT_RUNS, help="arch:backend[:dbb],... (table rows)")
    ap.add_argument("--seeds", default="1,2,3", help="seeds of the nnspam numpy/keras spread")
    ap.add_argument("--json", help="append every result as a JSON line to this file")
    args = ap.parse_args()
    cfg = C.load_config(None)
    corpora = []
    if args.corpus and args.sa_split:
        corpora.append(("SpamAssassin", "email",
                        load_split_samples(args.sa_split, args.corpus, part="train"),
                        load_split_samples(args.sa_split, args.corpus, part="test")))
    if args.sms and args.sms_split:
        corpora.append(("SMS", "sms",
                        load_split_samples(args.sms_split, part="train", sms_file=args.sms),
                        load_split_samples(args.sms_split, part="test", sms_file=args.sms)))
    if not corpora:
        ap.error("give --corpus and --sa-split, and/or --sms and --sms-split")
    runs = [r.split(":") for r in args.runs.split(",") if r]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    rows = []
    for name, kind, train, test in corpora:
        tok_train = tokenize_samples([s.payload for s in train], kind)
        y_test = labels_of(test)
        for r in runs:
            arch, backend = r[0], r[1]
            balance = r[2] if len(r) > 2 else "none"
            rows.append(run_one(name, kind, train, tok_train, test, y_test, cfg, arch,
                                backend, balance))
        spread = []
        for backend in ("numpy", "keras"):
            for seed in seeds:
                done = [x for x in rows if x["corpus"] == name and x["arch"] == "nnspam"
                        and x["backend"] == backend and x["balance"] == "none"
                        and x["seed"] == seed]
                if done:  # the table row already is this run
                    spread.append(done[0])
                    continue
                spread.append(run_one(name, kind, train, tok_train, test, y_test, cfg,
                                      "nnspam", backend, "none", seed))
                rows.append(spread[-1])
        for backend in ("numpy", "keras"):
            sel = [x for x in spread if x["backend"] == backend]
            if sel:
                fn = [x["spam_missed"] for x in sel]
                roca = [x["one_minus_roca_pct"] for x in sel]
                print(f"{name:12s} nnspam {backend:5s} seeds {seeds}: ham lost "
                      f"{[x['ham_lost'] for x in sel]}, spam missed {fn} "
                      f"(mean {np.mean(fn):.1f}, sd {np.std(fn, ddof=1) if len(fn) > 1 else 0:.1f})"
                      f", 1-ROCA {[f'{v:.3f}' for v in roca]}%", flush=True)
    if args.json:
        with open(args.json, "a") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
