"""Merge the reports of ``scripts/bench/stream.py`` runs that drove different filters over the
same streams (e.g. the slow peers once, nnspam again after a change) into one report per
stream: JSON, Markdown, the learning-curve plot, and the summary table.

Only reports of the same stream, feedback, start and message count are merged (anything else
is an error); each filter keeps the command and machine of the run that measured it.

    python scripts/bench/stream_merge.py --out docs/stream RUN_DIR...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from stream import markdown, summary_markdown  # noqa: E402

ORDER = ("nnspam", "reference", "bogofilter", "spamprobe", "crm114", "spamassassin")


def merge(dirs: list[Path]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Reports by (stream, feedback, start), with every filter found in ``dirs``."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for d in dirs:
        for f in sorted(d.glob("stream-*.json")):
            rep = json.loads(f.read_text())
            if "filters" not in rep:
                continue  # a summary
            key = (rep["stream"], rep["feedback"], rep["start"])
            base = out.setdefault(key, {**rep, "filters": {}, "runs": []})
            if base["messages"] != rep["messages"] or bool(base.get("header_break")) != bool(
                    rep.get("header_break")):
                raise SystemExit(f"{f}: not the same stream as the others of {key}")
            base["runs"].append({"command": rep.get("command"), "machine": rep.get("machine"),
                                 "filters": list(rep["filters"])})
            for name, r in rep["filters"].items():
                base["filters"][name] = r
    for rep in out.values():
        rep["filters"] = dict(sorted(rep["filters"].items(),
                                     key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else 9))
    return out


def plot(path: Path, rep: dict[str, Any]) -> None:
    """Cumulative ham lost and spam missed against messages, from each filter's error
    positions (``ham_lost_at``, ``spam_missed_at``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = rep["messages"]
    x = np.arange(1, n + 1)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for name, r in rep["filters"].items():
        if "skipped" in r:
            continue
        lw = 2.2 if name == "nnspam" else 1.3
        for ax, what in zip(axes, ("ham_lost_at", "spam_missed_at"), strict=True):
            marks = np.zeros(n + 1, dtype=np.int64)
            np.add.at(marks, np.asarray(r[what], dtype=np.int64), 1)
            ax.plot(x, np.cumsum(marks)[1:], lw=lw, drawstyle="steps-post",
                    label=f"{name} ({len(r[what])})")
    for ax, what in zip(axes, (f"ham lost (of {rep['ham']:,} ham)",
                               f"spam missed (of {rep['spam']:,} spam)"), strict=True):
        ax.set_xlabel("messages")
        ax.set_ylabel(f"cumulative {what}")
        ax.set_title(what)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize=9)
    hb = ", header break" if rep.get("header_break") else ""
    fig.suptitle(f"{rep['stream']}: {n:,} messages, feedback {rep['feedback']}, "
                 f"start {rep['start']}{hb}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path, help="output folders of stream.py runs")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tag", default="", help="added to the file names (e.g. -header-break)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    reports = merge(args.dirs)
    by_mode: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for (stream, feedback, start), rep in sorted(reports.items()):
        stem = f"stream-{stream}-{feedback}-{start}{args.tag}"
        (args.out / f"{stem}.json").write_text(json.dumps(rep, indent=1) + "\n")
        (args.out / f"{stem}.md").write_text(markdown(rep))
        plot(args.out / f"{stem}.png", rep)
        by_mode.setdefault((feedback, start), []).append(rep)
    for (feedback, start), reps in by_mode.items():
        stem = f"stream-summary-{feedback}-{start}{args.tag}"
        (args.out / f"{stem}.md").write_text(summary_markdown(reps))
        print(f"## feedback {feedback}, start {start}{args.tag}\n")
        print(summary_markdown(reps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
