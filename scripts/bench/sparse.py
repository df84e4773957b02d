#!/usr/bin/env python3
"""Dense against sparse features: training time and peak memory, in one run (issue 16).

    python scripts/bench/sparse.py [--corpora ../shared/corpora] [--only spamassassin|enron]
                                   [--members K] [--max-epochs N] [--no-test] [--json FILE]

For the train part of the SpamAssassin split and of the Enron-Spam split (splits/enron.tsv
over enron-spam.tar.xz), the email model is trained with the default settings (the shipped
recipe: 8000 input words, three merged members) twice, each time in a fresh child process:

* ``dense``: ``train_model`` of a ``Recipe.from_config(..., sparse=False)``, the dense (m, n)
  float32 feature matrix of earlier versions (the way to force the dense path; the values are
  the same);
* ``sparse``: ``train_model(...)``, the default: a SciPy CSR matrix, trained batch by batch.

Each child loads and tokenizes the messages first (the same work for both, not measured),
then resets its peak resident set (Linux: ``/proc/self/clear_refs``) and measures

* ``train s``: the wall time of ``train_model`` (word list, features, fitting);
* ``peak MB``: the peak resident set during ``train_model`` (VmHWM after the reset), and
  ``over base``, that peak less the resident set before it (corpus and tokens held);
* ``process peak``: the whole process's ``ru_maxrss`` (tokenizing included);

and afterwards (not measured) the figures of the trained model on the split's test part,
so the two paths can be compared: they train the same word list and, in float32, networks
equal up to summation order (the sparse product adds the same terms in another order).
Unpacked corpora in /tmp/corpora/{spamassassin,enron-spam} are read if present (faster than
the archives). Prints a Markdown table with the ratios dense / sparse; timings on a shared
machine are for reading, not for asserting.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CORPORA = {
    "spamassassin": ("spamassassin.tsv", "spamassassin.tar.xz", "/tmp/corpora/spamassassin"),
    "enron": ("enron.tsv", "enron-spam.tar.xz", "/tmp/corpora/enron-spam"),
}


def _status_kb(field: str) -> int | None:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status in kB (None off Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset VmHWM to the current resident set (Linux >= 4.0); False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(corpus: str, mode: str, corpora: Path, members: int | None,
          max_epochs: int | None, test: bool) -> dict:
    """One measurement, in this (fresh) process; returns the figures as a dict."""
    from nnspam import config as C
    from nnspam.mail.corpus import load_split_samples
    from nnspam.services.runs.evaluate import evaluate
    from nnspam.services.runs.training import Recipe, labels_of, tokenize_samples, train_model

    split_name, tar_name, unpacked = CORPORA[corpus]
    split = corpora / "splits" / split_name
    root = unpacked if Path(unpacked).is_dir() else str(corpora / tar_name)
    train = load_split_samples(str(split), root, "train")
    toks = tokenize_samples([s.payload for s in train], "email")
    network: dict[str, int] = {}
    if members is not None:
        network["members"] = members
    if max_epochs is not None:
        network["max_epochs"] = max_epochs
    recipe = Recipe.from_config(C.DEFAULTS, "email", overrides={"network": network},
                                sparse=mode == "sparse")
    base_kb = _status_kb("VmRSS")
    reset = _reset_peak()
    t0 = time.perf_counter()
    model = train_model(train, recipe, token_lists=toks)
    seconds = time.perf_counter() - t0
    peak_kb = _status_kb("VmHWM") if reset else None
    out = {
        "corpus": corpus, "mode": mode, "messages": len(train),
        "train_seconds": round(seconds, 2), "fit_seconds": model.summary["seconds"]["fit"],
        "peak_mb": None if peak_kb is None else round(peak_kb / 1024, 1),
        "base_mb": None if base_kb is None else round(base_kb / 1024, 1),
        "process_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "epochs": [r["epochs"] for r in model.summary.get("members", [model.summary])],
        "words_sha": __import__("hashlib").sha256("\n".join(model.words).encode()).hexdigest(),
    }
    t1 = time.perf_counter()
    X = model.features(toks, sparse=True)
    out["features_seconds_csr"] = round(time.perf_counter() - t1, 2)
    m, n = X.shape
    out["density_percent"] = round(100 * X.nnz / (m * n), 3)
    out["csr_mb"] = round((X.data.nbytes + X.indices.nbytes + X.indptr.nbytes) / 2**20, 1)
    out["dense_mb"] = round(m * n * 4 / 2**20, 1)
    del X
    if test:
        part = load_split_samples(str(split), root, "test")
        sp = model.spamicity_of_tokens(tokenize_samples([s.payload for s in part], "email"))
        ev = evaluate(labels_of(part), sp, model.threshold, model.ham_factor, model.spam_factor)
        out["test"] = {"fp": ev.false_positives, "fn": ev.false_negatives,
                       "one_minus_roca_percent": round(ev.one_minus_roca_percent, 4),
                       "n_ham": ev.n_ham, "n_spam": ev.n_spam}
    return out


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}x" if a and b else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpora", default=str(ROOT.parent / "shared" / "corpora"))
    ap.add_argument("--only", choices=tuple(CORPORA))
    ap.add_argument("--modes", default="dense,sparse", help="comma-separated: dense, sparse")
    ap.add_argument("--members", type=int, help="network.members (default: the config's, 3)")
    ap.add_argument("--max-epochs", type=int, help="network.max_epochs (default: the config's)")
    ap.add_argument("--no-test", action="store_true", help="skip the test-part figures")
    ap.add_argument("--json", help="also write every measurement to this file")
    ap.add_argument("--child", nargs=2, metavar=("CORPUS", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    corpora = Path(args.corpora)
    if args.child:
        res = child(args.child[0], args.child[1], corpora, args.members, args.max_epochs,
                    not args.no_test)
        print(json.dumps(res))
        return 0
    modes = [m for m in args.modes.split(",") if m]
    results = []
    print(f"# machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}", flush=True)
    for corpus in ([args.only] if args.only else list(CORPORA)):
        for mode in modes:
            cmd = [sys.executable, __file__, "--corpora", str(corpora), "--child", corpus, mode]
            for flag, val in (("--members", args.members), ("--max-epochs", args.max_epochs)):
                if val is not None:
                    cmd += [flag, str(val)]
            if args.no_test:
                cmd.append("--no-test")
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if r.returncode != 0:
                sys.exit(f"{corpus} {mode} failed:\n{r.stderr}")
            res = json.loads(r.stdout.strip().splitlines()[-1])
            results.append(res)
            print(f"{corpus:12s} {mode:6s} train {res['train_seconds']:8.1f} s  peak "
                  f"{res['peak_mb']} MB  epochs {res['epochs']}  test {res.get('test')}",
                  flush=True)
    print()
    print("| corpus | messages | density | features dense / CSR | path | train s | peak MB "
          "| over base MB | process peak MB | epochs | test FP / FN / 1-ROCA |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---|---|")
    for r in results:
        t = r.get("test")
        fig = f"{t['fp']} / {t['fn']} / {t['one_minus_roca_percent']:.3f}%" if t else "-"
        over = (None if r["peak_mb"] is None or r["base_mb"] is None
                else round(r["peak_mb"] - r["base_mb"], 1))
        print(f"| {r['corpus']} | {r['messages']:,} | {r['density_percent']}% | "
              f"{r['dense_mb']} / {r['csr_mb']} MB | {r['mode']} | {r['train_seconds']} | "
              f"{r['peak_mb']} | {over} | {r['process_peak_mb']} | "
              f"{', '.join(map(str, r['epochs']))} | {fig} |")
    by = {(r["corpus"], r["mode"]): r for r in results}
    for corpus in dict.fromkeys(r["corpus"] for r in results):
        d, s = by.get((corpus, "dense")), by.get((corpus, "sparse"))
        if d and s:
            d_over = d["peak_mb"] - d["base_mb"] if d["peak_mb"] and d["base_mb"] else None
            s_over = s["peak_mb"] - s["base_mb"] if s["peak_mb"] and s["base_mb"] else None
            t_ratio = _ratio(d["train_seconds"], s["train_seconds"])
            print(f"\n{corpus}: dense / sparse: train time {t_ratio}"
                  f", peak {_ratio(d['peak_mb'], s['peak_mb'])}, over base "
                  f"{_ratio(d_over, s_over)}; same word list: {d['words_sha'] == s['words_sha']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
