"""Probes for issue 23 (a real server's stream): which learning rule and which features
rank a full-feedback stream best, measured outside nnspam on cached tokens, so that a
variant costs seconds instead of a 20-minute replay. Lab tool; the figures and what they
decided are in docs/lab/learner-probes.md.

Steps (all files under --work, default /tmp/nnspam-probes; nothing is written into the
repository, and a corpus's messages never leave that folder):

    cache  INDEX CORPUS NAME   tokenize a stream once with nnspam's tokenizer: each
                               message's class, its first 3,000 bytes and its tokens
                               (NAME.json.gz)
    record NAME [--feedback all|errors]
                               nnspam's own replay (services/runs/stream.py, the config's
                               learn: rule, untrained start for `all`, the shipped model
                               for `errors`), each message's logit in full (NAME-nnspam-
                               FEEDBACK.npy)
    linear NAME                online linear learners on hashed binary features, full
                               feedback: the reference (byte 4-grams of the first 3,000
                               bytes, logistic step 0.002) and variants (nnspam's tokens
                               added, AROW, AdaGrad)
    mix NAME                   nnspam's recorded logit combined with the byte 4-gram
                               learner: stacked (a residual learner on the sum) and mixed
                               (each learned apart, an online logistic combiner)
    combine NAME...            nnspam's recorded logit (record --lazy) and AROW over
                               byte 4-grams and tokens, added with bounds and a weight:
                               the settings of nnspam.model.grams

Each line: 1-ROCA (%) over the stream and per 5,000-message window, (ham lost, spam
missed) at the learner's own threshold, and spam missed (%) at 0.05% and 0.1% of ham lost
(nnspam.services.runs.evaluate).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from nnspam.services.runs.evaluate import roc_auc, spam_missed_at_ham_loss  # noqa: E402

BITS = 22
HAM_BIAS = math.log(0.1 / 0.9)  # nnspam's ham bias as a logit: log(s / h)


# -- features ------------------------------------------------------------------------------

def grams4(raw: bytes) -> np.ndarray:
    """The reference's features: distinct hashed 4-byte windows of the first 3,000 bytes."""
    b = np.frombuffer(raw[:3000], dtype=np.uint8).astype(np.uint32)
    if b.size < 4:
        return np.zeros(0, np.int64)
    g = (b[:-3] << 24) | (b[1:-2] << 16) | (b[2:-1] << 8) | b[3:]
    h = (g.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - BITS)
    return np.unique(h.astype(np.int64))


def token_slots(tokens: Sequence[str]) -> np.ndarray:
    """nnspam's tokens, distinct, hashed into the same 2**22 slots (CRC-32)."""
    mask = (1 << BITS) - 1
    return np.unique(np.fromiter((zlib.crc32(t.encode("utf-8", "surrogateescape")) & mask
                                  for t in set(tokens)), dtype=np.int64))


# -- learners (score first, then learn; full feedback) -----------------------------------------

def logistic(labels: Sequence[int], feats: Sequence[np.ndarray], rate: float) -> np.ndarray:
    """The reference rule: score = w.x; w[x] += rate * (y - sigmoid(w.x))."""
    w = np.zeros(1 << BITS)
    out = np.zeros(len(labels))
    for i, (y, idx) in enumerate(zip(labels, feats, strict=True)):
        z = out[i] = w[idx].sum()
        w[idx] += rate * (y - 1.0 / (1.0 + math.exp(-z)))
    return out


def adagrad(labels: Sequence[int], feats: Sequence[np.ndarray], rate: float) -> np.ndarray:
    """Logistic steps scaled per slot by 1/sqrt(1 + its squared gradients so far)."""
    w = np.zeros(1 << BITS)
    g2 = np.ones(1 << BITS)
    out = np.zeros(len(labels))
    for i, (y, idx) in enumerate(zip(labels, feats, strict=True)):
        z = out[i] = w[idx].sum()
        g = y - 1.0 / (1.0 + math.exp(-z))
        g2[idx] += g * g
        w[idx] += rate * g / np.sqrt(g2[idx])
    return out


def arow(labels: Sequence[int], feats: Sequence[np.ndarray], r: float = 1.0) -> np.ndarray:
    """AROW (Crammer, Kulesza and Dredze 2009), diagonal: a per-slot confidence that
    shrinks as a slot is seen, a hinge update at margin 1."""
    w = np.zeros(1 << BITS)
    sig = np.ones(1 << BITS)
    out = np.zeros(len(labels))
    for i, (y, idx) in enumerate(zip(labels, feats, strict=True)):
        m = out[i] = w[idx].sum()
        ys = 1.0 if y else -1.0
        if ys * m < 1.0:
            beta = 1.0 / (sig[idx].sum() + r)
            w[idx] += (1.0 - ys * m) * beta * ys * sig[idx]
            sig[idx] -= beta * sig[idx] ** 2
    return out


def stacked(labels: Sequence[int], feats: Sequence[np.ndarray], base: np.ndarray,
            rate: float, unbias: bool) -> np.ndarray:
    """score = base + w.x, w learning the residual by the logistic gradient of the sum
    (``unbias``: of the sum without nnspam's ham bias, which it would otherwise undo)."""
    w = np.zeros(1 << BITS)
    out = np.zeros(len(labels))
    shift = -HAM_BIAS if unbias else 0.0
    for i, (y, idx) in enumerate(zip(labels, feats, strict=True)):
        z = out[i] = base[i] + w[idx].sum()
        w[idx] += rate * (y - 1.0 / (1.0 + math.exp(-(z + shift))))
    return out


def mixed(labels: Sequence[int], za: np.ndarray, zb: np.ndarray, rate: float,
          clip: float = 30.0) -> np.ndarray:
    """An online logistic combiner a*za + b*zb + c of two scores learned apart (za is
    nnspam's, with its ham bias taken out and put back)."""
    a, b, c = 1.0, 0.0, 0.0
    out = np.zeros(len(labels))
    for i, y in enumerate(labels):
        xa = float(np.clip(za[i] - HAM_BIAS, -clip, clip))
        xb = float(np.clip(zb[i], -clip, clip))
        z = a * xa + b * xb + c
        out[i] = z + HAM_BIAS
        g = y - 1.0 / (1.0 + math.exp(-z))
        a += rate * g * xa / clip
        b += rate * g * xb / clip
        c += rate * g
    return out


# -- figures ---------------------------------------------------------------------------------

def line(name: str, labels: Sequence[int], score: np.ndarray, t: float | None) -> str:
    """One table row (``t``: the learner's seconds, features made beforehand; None: -)."""
    y = np.asarray(labels)

    def roca(a: int, b: int) -> float:
        return (1.0 - roc_auc(y[a:b], score[a:b])) * 100.0

    wins = " ".join(f"{roca(a, a + 5000):.4f}" for a in range(0, len(y), 5000)
                    if (y[a:a + 5000] == 0).any() and (y[a:a + 5000] == 1).any())
    fp = int(((score > 0) & (y == 0)).sum())
    fn = int(((score <= 0) & (y == 1)).sum())
    return (f"| {name} | {roca(0, len(y)):.4f}% | {wins} | {fp} / {fn} | "
            f"{100 * spam_missed_at_ham_loss(y, score, 0.0005):.2f}% / "
            f"{100 * spam_missed_at_ham_loss(y, score, 0.001):.2f}% | "
            f"{'-' if t is None else f'{len(y) / max(t, 1e-9):,.0f}'} |")


HEADER = ("| learner | 1-ROCA | per 5,000 | ham lost / spam missed | spam missed at 0.05% / "
          "0.1% ham lost | msg/s |\n|---|---:|---|---:|---:|---:|")


def timed(f: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    s = f()
    return s, time.perf_counter() - t


# -- steps ---------------------------------------------------------------------------------

def load(work: Path, name: str) -> tuple[list[int], list[bytes], list[list[str]]]:
    with gzip.open(work / f"{name}.json.gz", "rt", encoding="utf-8") as f:
        d = json.load(f)
    return d["labels"], [r.encode("latin-1") for r in d["raws"]], d["tokens"]


def cmd_cache(args: argparse.Namespace) -> None:
    from nnspam.services.runs.stream import load_messages, read_index, start_model

    items = read_index(args.index)
    read = load_messages([p for _, p in items], args.corpus)
    model = start_model(None, {})
    labels, raws, toks = [], [], []
    for judge, path in items:
        raw = read(path)
        labels.append(1 if judge == "spam" else 0)
        raws.append(raw[:3000].decode("latin-1"))
        t = model.tokens(raw)
        toks.append(t[:-1] if t and t[-1].startswith("\x00") else t)  # without the head token
    with gzip.open(args.work / f"{args.name}.json.gz", "wt", encoding="utf-8") as f:
        json.dump({"labels": labels, "raws": raws, "tokens": toks}, f)
    print(f"{args.name}: {len(labels)} messages cached", file=sys.stderr)


def cmd_record(args: argparse.Namespace) -> None:
    from nnspam import config as C
    from nnspam.model.correct import rule_from_config
    from nnspam.services.runs.stream import replay, start_model

    labels, _, toks = load(args.work, args.name)
    untrained = args.feedback == "all"
    model = start_model(None if untrained else "default", {})
    # nnspam's network and wide path alone (the grams part is what `combine` adds)
    rule = rule_from_config(C.DEFAULTS, untrained=untrained).with_(journal=0, grams=False)
    tag = ""
    from nnspam.learning import network

    network.LAZY_PARTIAL_FIT = bool(args.lazy)  # lazy network steps, or full ones
    if args.lazy:
        tag += "-lazy"
    if args.confirm_margin is not None:  # a variant of the rule: how far a right one is pushed
        rule = rule.with_(confirm_margin=args.confirm_margin)
        tag += f"-confirm{args.confirm_margin:g}"
    model.tokens = lambda raw: toks[int(raw)]  # the cached tokens, by position
    items = [("spam" if y else "ham", str(i)) for i, y in enumerate(labels)]
    z, t = timed(lambda: np.array([s.score for s in replay(
        model, items, lambda p: p.encode(), args.feedback, rule)]))
    np.save(args.work / f"{args.name}-nnspam-{args.feedback}{tag}.npy", z)
    print(HEADER)
    print(line(f"nnspam ({args.feedback}{tag.replace('-', ', ')})", labels, z, t))


def cmd_linear(args: argparse.Namespace) -> None:
    labels, raws, toks = load(args.work, args.name)
    g = [grams4(r) for r in raws]
    gt = [np.union1d(a, token_slots(b)) for a, b in zip(g, toks, strict=True)]
    print(HEADER)
    for fname, feats in (("bytes4", g), ("bytes4 + tokens", gt)):
        ref = " (the reference)" if fname == "bytes4" else ""
        for what, f in ((f"{fname}, logistic 0.002{ref}",
                         lambda F=feats: logistic(labels, F, 0.002)),
                        (f"{fname}, logistic 0.005", lambda F=feats: logistic(labels, F, 0.005)),
                        (f"{fname}, AdaGrad 0.02", lambda F=feats: adagrad(labels, F, 0.02)),
                        (f"{fname}, AROW r=1", lambda F=feats: arow(labels, F, 1.0))):
            print(line(what, labels, *timed(f)), flush=True)


def cmd_mix(args: argparse.Namespace) -> None:
    labels, raws, _ = load(args.work, args.name)
    za = np.load(args.work / f"{args.name}-nnspam-all.npy")
    g = [grams4(r) for r in raws]
    zb = logistic(labels, g, 0.002)
    print(HEADER)
    print(line("nnspam (all)", labels, za, None))
    for rate in (0.002, 0.005):
        print(line(f"stacked, logistic {rate}", labels,
                   *timed(lambda r=rate: stacked(labels, g, za, r, False))))
        print(line(f"stacked, logistic {rate}, ham bias kept out", labels,
                   *timed(lambda r=rate: stacked(labels, g, za, r, True))))
    for rate in (0.01, 0.05):
        print(line(f"mixed, combiner rate {rate}", labels,
                   *timed(lambda r=rate: mixed(labels, za, zb, r))), flush=True)


def cmd_joint(args: argparse.Namespace) -> None:
    """nnspam (lazy steps) and a byte 4-gram part learned together: each message is scored
    on the sum; nnspam's margin push sees the sum (so its wide path moves only as far as
    the bytes part leaves to do); then the bytes part takes the reference's logistic step
    on the sum as scored, without the ham bias. ``--cap C``: the wide path's content part
    squashed to C * tanh(x / C)."""
    from nnspam import config as C
    from nnspam.learning import network
    from nnspam.model import wide as wide_mod
    from nnspam.model.correct import rule_from_config
    from nnspam.services.runs.stream import replay, start_model

    network.LAZY_PARTIAL_FIT = True
    labels, raws, toks = load(args.work, args.name)
    g = [grams4(r) for r in raws]
    if args.cap:
        cap = args.cap

        def capped(self: Any, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
            out = np.zeros(len(token_lists))
            if not self.updates:
                return out
            for i, t in enumerate(token_lists):
                parts = [float(self.w[idx].astype(np.float64) @ self._values(idx))
                         if idx.size else 0.0 for idx in self._slots(t)]
                out[i] = cap * math.tanh(parts[0] / cap) + sum(parts[1:])
            return out

        wide_mod.Wide.logit = capped  # type: ignore[method-assign]
    model = start_model(None, {})
    rule = rule_from_config(C.DEFAULTS, untrained=True).with_(journal=0)
    w = np.zeros(1 << BITS)
    cur = [0]
    base_logits, base_judge = model.logits, model.judge_tokens

    def logits(token_lists: Any) -> Any:
        net, wide = base_logits(token_lists)
        return net, wide + w[g[cur[0]]].sum()

    def judge(token_lists: Any, *a: Any, **k: Any) -> Any:
        _, z = base_judge(token_lists, *a, **k)
        z = z + w[g[cur[0]]].sum()
        return 1.0 / (1.0 + np.exp(-z)), z

    model.logits, model.judge_tokens = logits, judge
    model.tokens = lambda raw: toks[int(raw)]

    def read(p: str) -> bytes:
        cur[0] = int(p)
        return p.encode()

    items = [("spam" if y else "ham", str(i)) for i, y in enumerate(labels)]
    out = np.zeros(len(labels))
    t0 = time.perf_counter()
    for i, step in enumerate(replay(model, items, read, "all", rule)):
        out[i] = step.score
        w[g[i]] += args.rate * (labels[i] - 1.0 / (1.0 + math.exp(-(step.score - HAM_BIAS))))
    print(HEADER)
    print(line(f"nnspam (lazy) + bytes4 jointly, logistic {args.rate:g}"
               + (f", content cap {args.cap:g}" if args.cap else ""), labels, out,
               time.perf_counter() - t0))


def cmd_combine(args: argparse.Namespace) -> None:
    """nnspam's recorded logit (``record NAME --lazy``) and AROW over byte 4-grams and
    tokens, learned apart, added as nnspam.model.grams.combine adds them: the nnspam
    logit without the ham bias bounded to +-CAP, plus WEIGHT * (the AROW margin bounded to
    +-GRAMS_CAP, less BIAS). One row per setting: 1-ROCA % and ham lost / spam missed of
    each stream."""
    data = {}
    for name in args.names:
        labels, raws, toks = load(args.work, name)
        f = args.work / f"{name}-arow-bt.npy"
        if f.exists():
            za = np.load(f)
        else:
            g = [grams4(r) for r in raws]
            za = arow(labels, [np.union1d(a, token_slots(b)) for a, b in zip(g, toks,
                                                                                  strict=True)])
            np.save(f, za)
        data[name] = (np.asarray(labels), np.load(args.work / f"{name}-nnspam-all-lazy.npy"),
                      za)
    print("| cap / weight / bias / grams cap | " + " | ".join(args.names) + " |")
    print("|---|" + "---:|" * len(args.names))
    for cap in args.cap:
        for k in args.weight:
            for gcap in args.grams_cap:
                cells = []
                for name in args.names:
                    y, zn, za = data[name]
                    z = (np.clip(zn - HAM_BIAS, -cap, cap) + HAM_BIAS
                         + k * (np.clip(za, -gcap, gcap) - args.bias))
                    cells.append(f"{(1 - roc_auc(y, z)) * 100:.4f}% "
                                 f"{int(((z > 0) & (y == 0)).sum())}/"
                                 f"{int(((z <= 0) & (y == 1)).sum())}")
                print(f"| {cap:g} / {k:g} / {args.bias:g} / {gcap:g} | "
                      + " | ".join(cells) + " |", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/nnspam-probes"))
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("cache")
    p.add_argument("index")
    p.add_argument("corpus")
    p.add_argument("name")
    p = sub.add_parser("record")
    p.add_argument("name")
    p.add_argument("--feedback", choices=("all", "errors"), default="all")
    p.add_argument("--lazy", action="store_true",
                   help="lazy network steps (only the W1 rows a message touches)")
    p.add_argument("--confirm-margin", type=float,
                   help="learn.confirm_margin of the replay's rule (untrained default: "
                   "the ham margin, 16)")
    for name in ("linear", "mix"):
        sub.add_parser(name).add_argument("name")
    p = sub.add_parser("joint")
    p.add_argument("name")
    p.add_argument("--rate", type=float, default=0.002)
    p.add_argument("--cap", type=float, default=0.0)
    p = sub.add_parser("combine")
    p.add_argument("names", nargs="+")
    p.add_argument("--cap", type=float, nargs="+", default=[8.0, 10.0, 12.0, 16.0])
    p.add_argument("--weight", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0])
    p.add_argument("--bias", type=float, default=0.5)
    p.add_argument("--grams-cap", type=float, nargs="+", default=[1e9])
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    {"cache": cmd_cache, "record": cmd_record, "linear": cmd_linear, "mix": cmd_mix,
     "joint": cmd_joint, "combine": cmd_combine}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
