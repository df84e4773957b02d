#!/usr/bin/env python3
"""Build the models shipped inside the package (nnspam/data/models/{email,sms}).

Trained on the *train* part of the shared splits only, so that every number
measured on the test parts stays honest; the provenance (corpus checksums,
split, command, settings) is recorded in each model.json.

    python scripts/train_default_models.py [--corpora ../shared/corpora] [--only email|sms]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nnspam import config as C  # noqa: E402
from nnspam.mail.corpus import load_split_samples  # noqa: E402
from nnspam.services.runs.training import Recipe, train_model  # noqa: E402


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpora", default=str(ROOT.parent / "shared" / "corpora"))
    ap.add_argument("--only", choices=("email", "sms"))
    ap.add_argument("--out", default=str(ROOT / "nnspam" / "data" / "models"))
    args = ap.parse_args()
    corpora = Path(args.corpora)
    cfg = C.DEFAULTS
    jobs = []
    if args.only in (None, "email"):
        tar, split = corpora / "spamassassin.tar.xz", corpora / "splits" / "spamassassin.tsv"
        jobs.append(("email", split, tar, None, C.email_training(cfg), {
            "trained_on": "SpamAssassin public corpus, train part of splits/spamassassin.tsv",
            "corpus_sha256": sha256(tar), "split_sha256": sha256(split),
        }))
    if args.only in (None, "sms"):
        sms, split = corpora / "sms" / "SMSSpamCollection", corpora / "splits" / "sms.tsv"
        jobs.append(("sms", split, None, sms, C.sms_training(cfg), {
            "trained_on": "UCI SMS Spam Collection v.1, train part of splits/sms.tsv",
            "corpus_sha256": sha256(sms), "split_sha256": sha256(split),
        }))
    for kind, split, tar, sms, settings, prov in jobs:
        t0 = time.perf_counter()
        train = load_split_samples(str(split), str(tar) if tar else None, "train",
                                   sms_file=str(sms) if sms else None)
        prov = dict(prov, command="python scripts/train_default_models.py", settings=settings)
        model = train_model(train, Recipe.from_config(cfg, kind), provenance=prov)
        out = Path(args.out) / kind
        model.save(out)
        size = sum(p.stat().st_size for p in out.iterdir())
        print(f"{kind}: {len(train)} messages, {len(model.words)} inputs, "
              f"{model.summary['epochs']} epochs, {time.perf_counter() - t0:.1f}s, "
              f"{size / 1e6:.2f} MB -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
