"""The first day (issue 25): a user installs nnspam on a mailbox that already holds mail.

For each stream (Enron users 1-6, the SpamAssassin corpus by date; ``../shared/corpora/
streams/``), its first 10% stand for the mailbox the user already has, sorted, and the
rest for the mail that arrives afterwards, of which the user corrects every mistake and
sorts every message filed as unsure. Compared, on that rest:

* ``shipped``: the shipped model, corrections only, no first day (what the README's
  corrections-only tables measure, here on the rest only);
* ``init``: ``nnspam init`` on the first 10% (:func:`nnspam.services.runs.first_day.learn_mailbox`:
  an untrained network learning the mailbox in order), then corrections only;
* ``init + unsure``: the same with the unsure band ``filter.unsure [0.5, 0.99]`` the
  first day recommends: unsure mail is filed apart and sorted by the user (learned), not
  lost and not missed;
* ``bogofilter``: trained on the same first 10% (``-s``/``-n`` each), then taught its
  mistakes (its own Unsure counted as ham).

Prints a Markdown table and writes JSON (``--out``). Real messages stay in the corpus; only
figures are written.

    python scripts/bench/first_day.py [--streams enron1,...] [--corpus-root DIR] [--out F]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from stream import StreamBogofilter, load_index_stream  # noqa: E402

from nnspam import config as C  # noqa: E402
from nnspam.model.correct import correct, observe, rule_from_config  # noqa: E402
from nnspam.services.runs.first_day import learn_mailbox  # noqa: E402
from nnspam.services.runs.stream import start_model, tokenized  # noqa: E402
from nnspam.services.verdict import verdict as verdict_of  # noqa: E402

STREAMS = ("enron1", "enron2", "enron3", "enron4", "enron5", "enron6", "spamassassin-by-date")
BAND = (0.5, 0.99)
SHARE = 0.1


def nnspam_rest(model: Any, items: list[tuple[str, str]], read: Any,
                band: tuple[float, float] | None) -> dict[str, int]:
    """Corrections only over ``items``: a mistake or an unsure message is learned with its
    true class (the user moves it), every other message observed, as the daemon does."""
    cfg = C.DEFAULTS
    rule = rule_from_config(cfg).with_(journal=0)
    t = float(cfg["threshold"])
    out = {"ham": 0, "spam": 0, "ham_lost": 0, "spam_missed": 0, "unsure_ham": 0,
           "unsure_spam": 0}
    for (judge, _), toks in zip(items, tokenized(model, items, read, 1), strict=True):
        sp = float(model.judge_tokens([toks])[0][0])
        v = verdict_of(sp, t, band)
        out[judge] += 1
        if v == "unsure":
            out["unsure_" + judge] += 1
        elif v != judge:
            out["ham_lost" if judge == "ham" else "spam_missed"] += 1
        if v != judge:
            correct(model, [toks], judge, rule)
        else:
            observe(model, [toks])
    return out


def bogofilter_rest(files: list[str], labels: list[str], n: int, work: Path) -> dict[str, int]:
    peer = StreamBogofilter(name="bogofilter", kind="email", db=work / "bogofilter")
    peer.start()
    for path, judge in zip(files[:n], labels[:n], strict=True):
        peer.learn(path, judge)
    out = {"ham": 0, "spam": 0, "ham_lost": 0, "spam_missed": 0}
    for path, judge in zip(files[n:], labels[n:], strict=True):
        _, spam = peer.classify(path)
        out[judge] += 1
        if spam != (judge == "spam"):
            out["ham_lost" if judge == "ham" else "spam_missed"] += 1
            peer.learn(path, judge)
    peer.finish()
    return out


def one_stream(name: str, corpus_root: Path | None, work: Path) -> dict[str, Any]:
    index = ROOT.parent / "shared" / "corpora" / "streams" / f"{name}.index"
    corpus = None
    if corpus_root is not None:
        corpus = str(corpus_root / ("spamassassin" if name.startswith("spam") else "enron-spam"))
    stream = load_index_stream(str(index), corpus, None, work)
    items, n = stream.items, int(len(stream.items) * SHARE)
    rest = items[n:]
    res: dict[str, Any] = {"stream": name, "mailbox": n, "rest": len(rest)}
    t0 = time.perf_counter()
    res["shipped"] = nnspam_rest(start_model("default", C.DEFAULTS), rest, stream.read, None)
    paths = dict(zip((k for _, k in items), stream.files, strict=True))
    box = [(judge, Path(paths[k])) for judge, k in items[:n]]
    for key, band in (("init", None), ("init + unsure", BAND)):
        model = learn_mailbox(box, C.DEFAULTS, tokenizers=1)
        res[key] = nnspam_rest(model, rest, stream.read, band)
    res["nnspam_seconds"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    res["bogofilter"] = bogofilter_rest(stream.files, stream.labels, n, work / name)
    res["bogofilter_seconds"] = round(time.perf_counter() - t0, 1)
    return res


def cell(r: dict[str, int]) -> str:
    txt = (f"{r['ham_lost']} ({100 * r['ham_lost'] / max(r['ham'], 1):.2f}%) / "
           f"{r['spam_missed']} ({100 * r['spam_missed'] / max(r['spam'], 1):.1f}%)")
    if "unsure_ham" in r and (r["unsure_ham"] or r["unsure_spam"]):
        txt += f"; unsure {r['unsure_ham']} ham, {r['unsure_spam']} spam"
    return txt


def table(results: list[dict[str, Any]]) -> str:
    cols = ("shipped", "init", "init + unsure", "bogofilter")
    lines = ["| stream (mailbox / rest) | " + " | ".join(
        ("nnspam " + c if c != "bogofilter" else "bogofilter (trained on the mailbox)")
        for c in cols) + " |", "|---|" + "---:|" * len(cols)]
    for r in results:
        lines.append(f"| {r['stream']} ({r['mailbox']:,} / {r['rest']:,}) | "
                     + " | ".join(cell(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", default=",".join(STREAMS))
    ap.add_argument("--corpus-root", type=Path,
                    help="folder holding enron-spam/ and spamassassin/ (default: guessed)")
    ap.add_argument("--out", type=Path, help="write the figures here (JSON)")
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="nnspam-first-day-") as tmp:
        for name in args.streams.split(","):
            print(f"== {name}", file=sys.stderr, flush=True)
            results.append(one_stream(name, args.corpus_root, Path(tmp)))
            print(table(results[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    print(table(results))
    if args.out:
        args.out.write_text(json.dumps({"command": " ".join(sys.argv), "band": BAND,
                                        "share": SHARE, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
