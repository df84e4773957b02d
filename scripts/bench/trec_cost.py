"""Cost and quality of nnspam's online learner (the TREC protocol).

Two measurements, both on a seeded shuffle of a split file (the split files
are sorted by folder, so a stream in file order would be all ham, then all
spam):

``--processes N`` (default 50): the per-message cost under the TREC toolkit,
which starts one process per message. Runs ``scripts/trec/initialize``, then
for each of N messages ``classify FILE`` and ``train JUDGE FILE CLASS TFILE``
as real processes, and prints the mean wall time per classify process and per
train process, next to the in-process cost of the same calls
(``OnlineFilter.classify`` / ``train`` / ``save``).

``--stream N``: the online stream in one process (what compare.py's online
mode does): classify each message, then train on its true label. Prints the
cumulative ham lost (FP) %, spam missed (FN) %, 1-ROCA % and messages per
second; ``--set online.epochs=2`` etc. override settings for tuning.

    python scripts/bench/trec_cost.py                      # per-process cost, 50 messages
    python scripts/bench/trec_cost.py --stream 3000        # online stream, untrained start
    python scripts/bench/trec_cost.py --stream 3000 --model default
    python scripts/bench/trec_cost.py --stream 3000 --sms ../shared/corpora/sms/SMSSpamCollection \\
        --split ../shared/corpora/splits/sms.tsv
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nnspam.mail.corpus import load_split_samples
from nnspam.services.runs.evaluate import evaluate
from nnspam.services.runs.online import OnlineFilter

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "corpora"
TREC = ROOT / "scripts" / "trec"


def stream_samples(args: argparse.Namespace) -> list:
    """The split's messages (both parts) in the seeded shuffle, cut to the limit."""
    part = None if args.part == "all" else args.part
    if args.sms:
        samples = load_split_samples(str(args.split), sms_file=str(args.sms), part=part)
    else:
        corpus = args.corpus
        if corpus is None:
            unpacked = Path("/tmp/corpus/spamassassin")
            corpus = unpacked if unpacked.is_dir() else SHARED / "spamassassin.tar.xz"
        samples = load_split_samples(str(args.split), str(corpus), part=part)
    random.Random(args.seed).shuffle(samples)
    return samples


def parse_sets(items: list[str]) -> dict:
    """``section.key=value`` (JSON values, else strings) -> a nested config dict."""
    cfg: dict = {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg


def run_stream(args: argparse.Namespace) -> None:
    samples = stream_samples(args)[: args.stream]
    cfg = parse_sets(args.set)
    kind = "sms" if args.sms else "email"
    with tempfile.TemporaryDirectory() as d:
        f = OnlineFilter.create(d, args.model, cfg, kind=None if args.model else kind)
        scores, labels = [], []
        t0 = time.perf_counter()
        for i, s in enumerate(samples):
            scores.append(f.classify(s.payload))
            labels.append(1 if s.label == "spam" else 0)
            f.train(s.payload, s.label)
            if args.progress and (i + 1) % 500 == 0:
                ev = evaluate(np.array(labels), np.array(scores), f.threshold,
                              f.model.ham_factor, f.model.spam_factor)
                print(f"  {i + 1}: FP {ev.false_positives} FN {ev.false_negatives} "
                      f"1-ROCA {ev.one_minus_roca_percent:.3f}% free {f.free_inputs}",
                      file=sys.stderr)
        dt = time.perf_counter() - t0
    y, sc = np.array(labels), np.array(scores)
    ev = evaluate(y, sc, f.threshold, f.model.ham_factor, f.model.spam_factor)
    half = len(y) // 2
    ev2 = evaluate(y[half:], sc[half:], f.threshold, f.model.ham_factor, f.model.spam_factor)
    print(f"stream: {len(y)} messages ({ev.n_spam} spam, {ev.n_ham} ham) of part {args.part}, "
          f"seed {args.seed}, "
          f"start {args.model or 'untrained'}, overrides {cfg or 'none'}")
    print(f"  ham lost (FP) {ev.false_positives} ({100 * ev.ham_lost:.2f}%), spam missed (FN) "
          f"{ev.false_negatives} ({100 * (1 - ev.spam_caught):.2f}%), "
          f"1-ROCA {ev.one_minus_roca_percent:.3f}%")
    print(f"  second half: FP {ev2.false_positives}, FN {ev2.false_negatives}, "
          f"1-ROCA {ev2.one_minus_roca_percent:.3f}%")
    print(f"  {len(y) / dt:.1f} messages/s (classify + train, in process), "
          f"free inputs left {f.free_inputs}")


def _mean_ms(times: list[float]) -> float:
    return 1000.0 * sum(times) / max(1, len(times))


def _child_cpu() -> float:
    """CPU seconds (user + system) used by finished child processes so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _timed(cmd: list[str], env: dict, wall: list[float], cpu: list[float]) -> str:
    """Run one command; record its wall and CPU time; return its stdout."""
    c0, t0 = _child_cpu(), time.perf_counter()
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    wall.append(time.perf_counter() - t0)
    cpu.append(_child_cpu() - c0)
    return out


def run_processes(args: argparse.Namespace) -> None:
    samples = stream_samples(args)[: args.processes]
    env = dict(os.environ)
    env.pop("NNSPAM_TREC_MODEL", None)
    if args.model:
        env["NNSPAM_TREC_MODEL"] = args.model
    py_bin = str(Path(sys.executable).parent)
    env["PATH"] = py_bin + os.pathsep + env.get("PATH", "")
    with tempfile.TemporaryDirectory() as d:
        env["NNSPAM_TREC_DIR"] = str(Path(d) / "state")
        msgs = Path(d) / "msgs"
        msgs.mkdir()
        t = time.perf_counter()
        subprocess.run([str(TREC / "initialize")], env=env, check=True)
        t_init = time.perf_counter() - t
        t_cls, t_tr, c_cls, c_tr = [], [], [], []
        for i, s in enumerate(samples):
            p = msgs / str(i)
            data = s.payload if isinstance(s.payload, bytes) else s.payload.encode()
            p.write_bytes(data)
            out = _timed([str(TREC / "classify"), str(p)], env, t_cls, c_cls)
            cls = out.split()[0].split("=")[1]
            _timed([str(TREC / "train"), s.label, str(p), cls, "-"], env, t_tr, c_tr)
        t = time.perf_counter()
        subprocess.run([str(TREC / "finalize")], env=env, check=True)
        t_fin = time.perf_counter() - t
        # The same calls in one process, on the state the processes left.
        f = OnlineFilter.load(env["NNSPAM_TREC_DIR"])
        c_in, t_in, s_in = [], [], []
        for s in samples:
            t = time.perf_counter()
            f._last = None  # tokenize for each call, as a process must
            f.classify(s.payload)
            c_in.append(time.perf_counter() - t)
            t = time.perf_counter()
            f._last = None
            f.train(s.payload, s.label)
            t_in.append(time.perf_counter() - t)
            t = time.perf_counter()
            f.save()
            s_in.append(time.perf_counter() - t)
    n_in = f.model.network.n_inputs
    print(f"{len(samples)} messages, start {args.model or 'untrained'}, n = {n_in}")
    print(f"  initialize: {1000 * t_init:.0f} ms, finalize: {1000 * t_fin:.0f} ms")
    print(f"  per classify process: {_mean_ms(t_cls):.0f} ms wall "
          f"(median {1000 * float(np.median(t_cls)):.0f}), {_mean_ms(c_cls):.0f} ms CPU")
    print(f"  per train process:    {_mean_ms(t_tr):.0f} ms wall "
          f"(median {1000 * float(np.median(t_tr)):.0f}), {_mean_ms(c_tr):.0f} ms CPU")
    print(f"  in process: classify {_mean_ms(c_in):.1f} ms, train {_mean_ms(t_in):.1f} ms, "
          f"save {_mean_ms(s_in):.1f} ms")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", type=Path, default=SHARED / "splits" / "spamassassin.tsv")
    ap.add_argument("--corpus", type=Path, default=None,
                    help="corpus root or .tar.xz (default /tmp/corpus/spamassassin if "
                         "unpacked, else ../shared/corpora/spamassassin.tar.xz)")
    ap.add_argument("--sms", type=Path, default=None, help="the SMS collection (with --split)")
    ap.add_argument("--part", choices=("all", "train", "test"), default="all",
                    help="which part of the split to stream (default all; test: messages "
                         "the shipped models were not trained on)")
    ap.add_argument("--seed", type=int, default=1, help="stream shuffle seed (default 1)")
    ap.add_argument("--model", default=None,
                    help="start model (default: untrained); e.g. default, default-sms")
    ap.add_argument("--processes", type=int, default=50,
                    help="messages for the per-process cost (default 50)")
    ap.add_argument("--stream", type=int, default=0,
                    help="run the in-process online stream on this many messages instead")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="config override for --stream, e.g. online.epochs=2")
    ap.add_argument("--progress", action="store_true", help="print figures every 500 messages")
    args = ap.parse_args(argv)
    if args.stream:
        run_stream(args)
    else:
        run_processes(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
