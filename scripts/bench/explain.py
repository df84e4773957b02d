#!/usr/bin/env python3
"""Cost of explaining a verdict (nnspam/model/explain.py) and of the filter's opt-in
``X-NNSpam-Words`` field (``filter.words``).

Prints figures; asserts nothing.

    python scripts/bench/explain.py [--messages 200] [--words 5] [--corpus DIR]
                                    [--processes 20]

On N real messages (half ham, half spam, from the SpamAssassin corpus: DIR, else
/tmp/corpus/spamassassin, else unpacked from ../shared/corpora/spamassassin.tar.xz)
with the shipped model, per message:

* tokenizing, scoring (``Model.judge_tokens``) and explaining (``explain``: one
  occlusion row per input word of the message), with the number of input words;
* the filter path in-process: :func:`nnspam.services.scoring.classify` with the
  model's scorer, ``filter.words`` 0 against ``--words`` (each message timed in turn
  with and without, best of 3, so that load on the host hits both alike), and the
  ratio of the two;
* with ``--processes K`` (0 to skip) also K whole ``nnspam filter`` processes each
  way, as procmail runs them (start-up, imports and model load included).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from nnspam.config import load_config  # noqa: E402
from nnspam.model.core import Model  # noqa: E402
from nnspam.model.explain import explain  # noqa: E402
from nnspam.services import scoring  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from filter_startup import find_corpus, pick  # noqa: E402  (the same corpus and sample)


def ms(xs: list[float]) -> str:
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, int(0.9 * len(xs)))]
    return (f"median {1000 * statistics.median(xs):7.3f} ms  p90 {1000 * p90:7.3f} ms  "
            f"mean {1000 * statistics.fmean(xs):7.3f} ms  max {1000 * xs[-1]:7.3f} ms")


def best_of(fn, k: int = 3) -> float:
    best = float("inf")
    for _ in range(k):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--words", type=int, default=5, help="filter.words of the 'on' runs (5)")
    ap.add_argument("--corpus")
    ap.add_argument("--processes", type=int, default=20,
                    help="whole nnspam filter processes each way (20; 0: skip)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = pick(find_corpus(args.corpus, tmp), args.messages)
        raws = [p.read_bytes() for p in paths]
        model = Model.load("default")
        cfg = load_config(None)
        off = scoring.settings(cfg, "default")
        cfg["filter"]["words"] = args.words
        on = scoring.settings(cfg, "default")
        for raw in raws[:5]:  # warm-up (imports, first allocations)
            explain(model, model.tokens(raw))

        tok_t, score_t, expl_t, inputs = [], [], [], []
        for raw in raws:
            t0 = time.perf_counter()
            toks = model.tokens(raw)
            tok_t.append(time.perf_counter() - t0)
            score_t.append(best_of(lambda toks=toks: model.judge_tokens([toks])))
            expl_t.append(best_of(lambda toks=toks: explain(model, toks)))
            inputs.append(len(explain(model, toks).words))

        def classify(raw: bytes, s: scoring.FilterSettings) -> None:
            res = scoring.classify(raw, scoring.model_scorer(model, s), s.threshold,
                                      s.unsure, s.words)
            assert (b"X-NNSpam-Words: " in res.output) == (s.words > 0)

        t_off, t_on = [], []
        for raw in raws:
            t_off.append(best_of(lambda raw=raw: classify(raw, off)))
            t_on.append(best_of(lambda raw=raw: classify(raw, on)))

        print(f"nnspam explain benchmark: {len(raws)} SpamAssassin messages (half ham, half "
              f"spam), shipped model ({len(model.words)} inputs, "
              f"{model.network.hidden_size} hidden)")
        print(f"input words per message: median {statistics.median(inputs):.0f}, "
              f"max {max(inputs)}")
        print(f"tokenize              {ms(tok_t)}")
        print(f"score (judge_tokens)  {ms(score_t)}")
        print(f"explain               {ms(expl_t)}")
        print("filter path in-process (scoring.classify: tokenize, score, headers):")
        print(f"  filter.words: 0     {ms(t_off)}")
        print(f"  filter.words: {args.words:<5} {ms(t_on)}")
        ratio = statistics.median(t_on) / statistics.median(t_off)
        extra = statistics.median([a - b for a, b in zip(t_on, t_off, strict=True)])
        print(f"  ratio of medians {ratio:.2f}, median extra {1000 * extra:.3f} ms per message")

        if args.processes > 0:
            exe = [sys.executable, "-m", "nnspam", "filter", "-c"]
            cfg_off, cfg_on = Path(tmp) / "off.yaml", Path(tmp) / "on.yaml"
            cfg_off.write_text("filter:\n  words: 0\n")
            cfg_on.write_text(f"filter:\n  words: {args.words}\n")
            p_off, p_on = [], []
            for raw in raws[: args.processes]:
                for c, acc in ((cfg_off, p_off), (cfg_on, p_on)):
                    t0 = time.perf_counter()
                    subprocess.run(exe + [str(c)], input=raw, stdout=subprocess.DEVNULL,
                                   check=True)
                    acc.append(time.perf_counter() - t0)
            print(f"whole nnspam filter processes ({len(p_off)} each way, start-up included):")
            print(f"  filter.words: 0     {ms(p_off)}")
            print(f"  filter.words: {args.words:<5} {ms(p_on)}")
            print(f"  ratio of medians {statistics.median(p_on) / statistics.median(p_off):.2f}")


if __name__ == "__main__":
    main()
