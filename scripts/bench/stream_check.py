"""Compare nnspam's stream figures of a new run (``stream.py --filters nnspam --out DIR``)
with the ones the docs hold (``docs/stream/*.json``), stream by stream.

    python scripts/bench/stream_check.py DIR [--suffix -header-break]

Prints, for each stream both hold, the hams lost, spam missed and 1-ROCA of each, and
whether they are equal; exit status 1 when any differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("ham_lost", "spam_missed", "one_minus_roca_pct")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("new", help="the --out directory of the new run")
    ap.add_argument("--docs", default=str(ROOT / "docs" / "stream"))
    ap.add_argument("--suffix", default="", help="added to each name in the docs (the "
                    "header-break run's files end in -header-break there)")
    a = ap.parse_args()
    differ = 0
    for new in sorted(Path(a.new).glob("stream-*.json")):
        if new.name.startswith("stream-summary"):
            continue
        old = Path(a.docs) / f"{new.stem}{a.suffix}.json"
        if not old.exists():
            print(f"{new.stem}: not in {a.docs}")
            continue
        n = json.loads(new.read_text())["filters"]["nnspam"]
        o = json.loads(old.read_text())["filters"]["nnspam"]
        same = all(n[k] == o[k] if k != "one_minus_roca_pct" else abs(n[k] - o[k]) < 5e-4
                   for k in KEYS)
        differ += not same
        fmt = "{ham_lost}/{spam_missed} {one_minus_roca_pct:.3f}%"
        print(f"{new.stem[len('stream-'):]:45s} docs {fmt.format(**o):22s} now "
              f"{fmt.format(**n):22s} {'equal' if same else 'DIFFERS'}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
