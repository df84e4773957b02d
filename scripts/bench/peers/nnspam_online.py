"""nnspam's online learner as a line-protocol process, for scripts/bench/compare.py.

Runs :class:`nnspam.services.runs.online.OnlineFilter` from an untrained network (the TREC start) in
one process, so that its memory is measured like a peer's. One answer line per request:

    score PATH           -> "<spamicity, full precision> spam|ham"
    train spam|ham PATH  -> "ok"

Usage: python nnspam_online.py DIR email|sms
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from nnspam.services.runs.online import OnlineFilter  # noqa: E402


def main() -> int:
    directory, kind = sys.argv[1], sys.argv[2]
    f = OnlineFilter.create(directory, model=None, kind=kind)
    for line in sys.stdin:
        cmd, _, rest = line.rstrip("\n").partition(" ")
        if cmd == "score":
            sp = f.classify(Path(rest).read_bytes())
            print(f"{sp!r} {'spam' if f.is_spam(sp) else 'ham'}", flush=True)
        elif cmd == "train":
            label, _, path = rest.partition(" ")
            f.train(Path(path).read_bytes(), label)
            print("ok", flush=True)
        else:
            print(f"unknown command {cmd!r}", file=sys.stderr)
            return 2
    f.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
