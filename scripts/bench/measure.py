#!/usr/bin/env python3
"""Measure model choices on the shared splits: the numbers that chose the defaults.

Trains on the train part of a split and evaluates on its test part, for each
configuration asked for, and prints one line per configuration (ham lost,
spam missed, 1-ROCA, training time). Tokens are computed once per run.

    python scripts/bench/measure.py --corpus ../shared/corpora/spamassassin.tar.xz \\
        --split ../shared/corpora/splits/spamassassin.tsv \\
        --grid method=ig,chi2,freq size=250,500,1000,2000 scaling=log

    python scripts/bench/measure.py --sms ../shared/corpora/sms/SMSSpamCollection \\
        --split ../shared/corpora/splits/sms.tsv --grid size=500,1000,2000

    python scripts/bench/measure.py ... --faithful      # the original NNSpam settings

Grid keys: method, size, min_df (word list), scaling (features), and any
``network:`` setting (hidden, hidden_activation, dropout, l2, learning_rate,
batch_size, seed, ...).

--baseline-lr needs scikit-learn, which nnspam itself does not depend on:
``pip install -c constraints.txt -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
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

WL_KEYS = {"method", "size", "min_df"}
FEAT_KEYS = {"scaling"}


def parse_value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return None if v in ("none", "null") else v


def baseline_lr(tok_train, y_train, tok_test, y_test) -> None:
    """Logistic regression (C=10) on every token: what a linear model gets
    from the same tokens, to judge the word selection and the network."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    cv = CountVectorizer(analyzer=lambda toks: toks, min_df=2, binary=True)
    Xtr = cv.fit_transform(tok_train).astype(np.float64)
    Xte = cv.transform(tok_test).astype(np.float64)
    p = LogisticRegression(C=10, max_iter=5000).fit(Xtr, y_train).predict_proba(Xte)[:, 1]
    sp = 0.1 * p / (0.1 * p + 0.9 * (1 - p))
    ev = evaluate(y_test, sp, 0.5, 0.9, 0.1)
    print(f"{'baseline: logistic regression, ' + str(Xtr.shape[1]) + ' tokens':50s} "
          f"FP {ev.false_positives:3d}/{ev.n_ham}  FN {ev.false_negatives:3d}/{ev.n_spam}  "
          f"1-ROCA {ev.one_minus_roca_percent:.4f}%", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", required=True)
    ap.add_argument("--corpus")
    ap.add_argument("--sms")
    ap.add_argument("--grid", nargs="*", default=[], help="key=v1,v2 ...")
    ap.add_argument("--faithful", action="store_true")
    ap.add_argument("--json", help="append results as JSON lines to this file")
    ap.add_argument("--baseline-lr", action="store_true",
                    help="also fit a scikit-learn logistic regression on all tokens seen in "
                    "2+ training messages (binary features): the linear yardstick")
    args = ap.parse_args()

    kind = "sms" if args.sms else "email"
    cfg = C.DEFAULTS
    t0 = time.perf_counter()
    train = load_split_samples(args.split, args.corpus, "train", sms_file=args.sms)
    test = load_split_samples(args.split, args.corpus, "test", sms_file=args.sms)
    tok_train = tokenize_samples([s.payload for s in train], kind)
    tok_test = tokenize_samples([s.payload for s in test], kind)
    y_test = labels_of(test)
    print(f"# {kind}: {len(train)} train, {len(test)} test; read+tokenized in "
          f"{time.perf_counter() - t0:.1f}s", flush=True)

    if args.baseline_lr:
        baseline_lr(tok_train, labels_of(train), tok_test, y_test)

    keys = [g.split("=", 1)[0] for g in args.grid]
    values = [[parse_value(v) for v in g.split("=", 1)[1].split(",")] for g in args.grid]
    for combo in itertools.product(*values) if values else [()]:
        overrides: dict[str, dict[str, object]] = {}
        for k, v in zip(keys, combo, strict=True):
            section = "wordlist" if k in WL_KEYS else "features" if k in FEAT_KEYS else "network"
            overrides.setdefault(section, {})[k] = v
        recipe = Recipe.from_config(cfg, kind, faithful=args.faithful, overrides=overrides)
        t1 = time.perf_counter()
        model = train_model(train, recipe, token_lists=tok_train)
        t_train = time.perf_counter() - t1
        sp = model.spamicity_of_tokens(tok_test)
        ev = evaluate(y_test, sp, 0.5, 0.9, 0.1)
        label = " ".join(f"{k}={v}" for k, v in zip(keys, combo, strict=True)) or "defaults"
        # ham lost / spam missed at the default bias, and the threshold-free 1-ROCA
        print(f"{label:50s} FP {ev.false_positives:3d}/{ev.n_ham} ({ev.ham_lost * 100:.2f}%)  "
              f"FN {ev.false_negatives:3d}/{ev.n_spam} ({(1 - ev.spam_caught) * 100:.2f}%)  "
              f"acc {ev.accuracy * 100:.2f}%  1-ROCA {ev.one_minus_roca_percent:.4f}%  "
              f"epochs {model.summary['epochs']:3d}  train {t_train:.1f}s", flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps({"kind": kind, "faithful": args.faithful,
                                     "settings": dict(zip(keys, combo, strict=True)),
                                     "train_seconds": t_train, **ev.to_dict()}) + "\n")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
