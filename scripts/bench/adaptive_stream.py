"""Adaptive input words against frozen inputs on a mail stream that drifts.

Trains on the older SpamAssassin parts (``spam``, ``easy_ham``) with the
default training settings, then streams the later parts (``spam_2``,
``easy_ham_2``) in a fixed seeded interleaved order. Each message is
classified; the adaptive statistics see it (``adaptive.observe``, as the
daemon does); when the verdict is wrong the user's correction is learned
(``nnspam.model.correct.correct``, the one correction routine, with the config's ``learn:``
rule); ``--feedback confident`` also
learns confident verdicts (the daemon's ``learn_on_confident``), ``--feedback
all`` every message with its true label. Prints false negative and false positive rates over the
stream and per quarter, for frozen inputs and for each adaptive policy, with
everything else the same.

    python scripts/bench/adaptive_stream.py                      # full run
    python scripts/bench/adaptive_stream.py --limit 600          # quick
    python scripts/bench/adaptive_stream.py --corpus ../shared/corpora/spamassassin.tar.xz
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import tarfile
import time
from pathlib import Path

from nnspam import config as C
from nnspam.mail.corpus import Sample, iter_messages
from nnspam.model import adaptive
from nnspam.model.correct import Rule, correct, observe, rule_from_config
from nnspam.services.runs.training import Recipe, tokenize_samples, train_model

TRAIN_PARTS = {"spam": "spam", "easy_ham": "ham"}
STREAM_PARTS = {"spam_2": "spam", "easy_ham_2": "ham"}
DEFAULT_DIR = Path("/tmp/corpus/spamassassin")
DEFAULT_TAR = Path("/work/shared/corpora/spamassassin.tar.xz")


def load_parts(corpus: Path, parts: dict[str, str]) -> dict[str, list[Sample]]:
    """Messages of each named part, from an unpacked directory or the .tar.xz."""
    out: dict[str, list[Sample]] = {p: [] for p in parts}
    if corpus.is_dir():
        for part, label in parts.items():
            out[part] = sorted(iter_messages([str(corpus / part)], label), key=lambda s: s.name)
        return out
    with tarfile.open(corpus) as tar:
        for m in tar:
            bits = m.name.split("/")
            if m.isfile() and len(bits) >= 2 and bits[-2] in parts and bits[-1] != "cmds":
                fh = tar.extractfile(m)
                if fh is not None:
                    out[bits[-2]].append(Sample(m.name, fh.read(), parts[bits[-2]]))
    for p in out:
        out[p].sort(key=lambda s: s.name)
    return out


def run_stream(model, toks, labels, feedback: str, margin: float,
               rule: Rule | None = None) -> dict:
    """Classify each message in order, feed the adaptive statistics, learn the
    correction when the verdict is wrong; with feedback ``confident`` also
    learn confident verdicts as the daemon's ``learn_on_confident`` does
    (spamicity >= threshold + margin or <= threshold - margin), with ``all``
    learn every message with its true label. Returns per-message errors and
    the number of replacements."""
    errors = []
    replaced = 0
    for t, lab in zip(toks, labels, strict=True):
        s = float(model.spamicity_of_tokens([t])[0])
        verdict = "spam" if s >= model.threshold else "ham"
        replaced += len(observe(model, [t]))  # the daemon's arrival path
        wrong = verdict != lab
        errors.append(wrong)
        if wrong or feedback == "all":
            replaced += len(correct(model, [t], lab, rule))
        elif feedback == "confident" and abs(s - model.threshold) >= margin:
            replaced += len(correct(model, [t], verdict, rule))
    return {"errors": errors, "replacements": replaced}


def rates(errors, labels, lo: int, hi: int) -> tuple[int, int, int, int]:
    fn = sum(1 for i in range(lo, hi) if labels[i] == "spam" and errors[i])
    fp = sum(1 for i in range(lo, hi) if labels[i] == "ham" and errors[i])
    ns = sum(1 for i in range(lo, hi) if labels[i] == "spam")
    return fn, ns, fp, (hi - lo) - ns


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=None,
                    help="unpacked spamassassin dir or the .tar.xz (default: "
                         f"{DEFAULT_DIR}, else {DEFAULT_TAR})")
    ap.add_argument("--size", type=int, default=8000, help="input words (default 8000)")
    ap.add_argument("--limit", type=int, default=0, help="stream only this many messages")
    ap.add_argument("--seeds", default="1,2,3",
                    help="stream order seeds, comma-separated (default 1,2,3); the network's "
                         "training seed stays the config default")
    ap.add_argument("--feedback", choices=("errors", "confident", "all"), default="errors",
                    help="learn corrections of errors only (default), also confident verdicts "
                         "(adaptive.learn_on_confident), or every message with its label")
    ap.add_argument("--policies", default="frozen,lfu,lfu-ig")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override an adaptive setting, e.g. --set half_life=300")
    ap.add_argument("--learn", choices=("sgd", "adam"), default=C.DEFAULTS["learn"]["optimizer"],
                    help="how a correction is learned (config learn.optimizer; adam starts "
                    "from fresh moments, as after loading a model)")
    ap.add_argument("--learn-rate", type=float, default=C.DEFAULTS["learn"]["learning_rate"],
                    help="config learn.learning_rate")
    ap.add_argument("--epochs", type=int, default=C.DEFAULTS["learn"]["passes"],
                    help="network passes per learned message (config learn.passes)")
    ap.add_argument("--no-wide", action="store_true",
                    help="corrections move only the network (config learn.wide: false)")
    ap.add_argument("--net", action="append", default=[], metavar="KEY=VALUE",
                    help="override a network setting of the trained model, e.g. --net members=1")
    args = ap.parse_args(argv)
    corpus = args.corpus or (DEFAULT_DIR if DEFAULT_DIR.is_dir() else DEFAULT_TAR)

    t0 = time.perf_counter()
    parts = load_parts(corpus, {**TRAIN_PARTS, **STREAM_PARTS})
    train = [s for p in TRAIN_PARTS for s in parts[p]]
    all_stream = [s for p in STREAM_PARTS for s in parts[p]]
    toks = tokenize_samples([s.payload for s in train + all_stream])
    train_toks, all_stream_toks = toks[:len(train)], toks[len(train):]
    t_load = time.perf_counter() - t0

    network_defaults = C.email_training(C.DEFAULTS)["network"]
    network = {}
    for kv in args.net:
        k, _, v = kv.partition("=")
        if k not in network_defaults:
            raise SystemExit(f"--net {kv}: no network setting {k!r}")
        network[k] = type(network_defaults[k])(v)
    recipe = Recipe.from_config(C.DEFAULTS, "email", overrides={
        "wordlist": {"size": args.size}, "network": network})
    t1 = time.perf_counter()
    base = train_model(train, recipe, token_lists=train_toks)
    # as after loading the model from disk: no optimiser state (Adam moments are not saved)
    base.network.set_weights(base.network.get_weights())
    t_train = time.perf_counter() - t1
    overrides = {}
    for kv in args.set:
        k, _, v = kv.partition("=")
        overrides[k] = type(C.DEFAULTS["adaptive"][k])(v) if k != "enabled" else v == "true"

    print(f"corpus {corpus}: train {len(train)} messages (spam, easy_ham), {args.size} inputs, "
          f"feedback: {args.feedback}, adaptive overrides: {overrides or 'none'}, "
          f"network overrides: {args.net or 'none'}, corrections: {args.learn} "
          f"{args.learn_rate}, {args.epochs} passes")
    print(f"load+tokenize {t_load:.1f} s, train {t_train:.1f} s")
    totals: dict[str, list[int]] = {}
    for seed in [int(x) for x in args.seeds.split(",")]:
        order = list(range(len(all_stream)))
        random.Random(seed).shuffle(order)
        if args.limit:
            order = order[:args.limit]
        stream_toks = [all_stream_toks[i] for i in order]
        labels = [all_stream[i].label for i in order]
        for pol, (fn, fp) in one_order(base, stream_toks, labels, seed, args,
                                       overrides).items():
            t = totals.setdefault(pol, [0, 0])
            t[0] += fn
            t[1] += fp
    if len(args.seeds.split(",")) > 1:
        print(f"\nall stream orders ({args.seeds}):")
        compare(totals)
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


def compare(results: dict[str, list[int]] | dict[str, tuple[int, int]]) -> None:
    """Errors of each adaptive policy against frozen inputs."""
    if "frozen" not in results:
        return
    f_fn, f_fp = results["frozen"]
    for pol, (fn, fp) in results.items():
        if pol != "frozen":
            tot_f, tot = f_fn + f_fp, fn + fp
            print(f"{pol}: errors {tot} vs frozen {tot_f} "
                  f"({100 * (tot_f - tot) / max(tot_f, 1):+.1f}% fewer), "
                  f"FN {fn} vs {f_fn}, FP {fp} vs {f_fp}")


def one_order(base, stream_toks, labels, seed, args, overrides) -> dict[str, tuple[int, int]]:
    """Run every policy over one stream order; print its table."""
    stream = labels
    ns = labels.count("spam")
    print(f"\nstream order seed {seed}: {len(stream)} messages ({ns} spam_2, "
          f"{len(stream) - ns} easy_ham_2)")
    q = [round(len(stream) * k / 4) for k in range(5)]
    header = "policy   | FN rate (missed spam) | FP rate (ham lost)  | repl | " + " | ".join(
        f"Q{k + 1} FN/FP" for k in range(4)) + " | seconds"
    print(header)
    print("-" * len(header))
    results = {}
    for pol in args.policies.split(","):
        model = copy.deepcopy(base)
        if pol == "frozen":
            adaptive.configure(model, {"enabled": False})
        else:
            adaptive.configure(model, {**overrides, "enabled": True, "policy": pol})
        t2 = time.perf_counter()
        r = run_stream(model, stream_toks, labels, args.feedback,
                       float(C.DEFAULTS["adaptive"]["confident_margin"]),
                       rule_from_config({"learn": {
                           "optimizer": args.learn, "learning_rate": args.learn_rate,
                           "passes": args.epochs, "max_passes": args.epochs,
                           "wide": not args.no_wide}}))
        dt = time.perf_counter() - t2
        fn, n_s, fp, n_h = rates(r["errors"], labels, 0, len(stream))
        results[pol] = (fn, fp)
        quarters = []
        for k in range(4):
            qfn, qs, qfp, qh = rates(r["errors"], labels, q[k], q[k + 1])
            quarters.append(f"{qfn}/{qs} {qfp}/{qh}")
        print(f"{pol:8s} | {fn:4d}/{n_s:4d} = {100 * fn / max(n_s, 1):5.2f}% | "
              f"{fp:4d}/{n_h:4d} = {100 * fp / max(n_h, 1):5.2f}% | {r['replacements']:4d} | "
              + " | ".join(quarters) + f" | {dt:.1f}")
    compare(results)
    return results


if __name__ == "__main__":
    sys.exit(main())
