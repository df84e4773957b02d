"""The TREC Spam Filter Evaluation Toolkit commands, backed by nnspam's online learner.

The toolkit's ``run.sh`` starts one process per command (see
docs/guides/trec.md):

``initialize``                      create the filter state
``classify FILE``                   print ``class=spam|ham score=X tfile=-``
``train JUDGE FILE CLASS TFILE``    learn FILE with its gold label JUDGE (CLASS,
                                    the verdict classify gave, and TFILE are
                                    ignored: nnspam trains on every message)
``finalize``                        tidy the state directory

X is the spamicity's log-odds (the logit, any real number; 0 is a spamicity
of 0.5) printed in full (Python's repr: the shortest text that reads back as
the same float), so no two different scores print alike and the ranking that
1-ROCA is computed from is kept; a spamicity rounds to 0 or 1 for thousands
of messages of a real stream, its logit does not. The class is spam when the
spamicity reaches the model's threshold (0.5 by default: a logit of 0).

Environment:

``NNSPAM_TREC_DIR``     the state directory (an ``OnlineFilter``, see
                        ``nnspam/services/runs/online.py``); default ``./nnspam-trec``
                        (relative to the directory run.sh runs the commands in).
``NNSPAM_TREC_MODEL``   initialize only: the model to start from (a model
                        directory, ``default`` or ``default-sms``); unset: an
                        untrained network that learns its inputs from the stream.
``NNSPAM_TREC_KIND``    initialize only, untrained start: ``email`` (default) or
                        ``sms`` (the SMS tokenizer).
``NNSPAM_TREC_CONFIG``  initialize only: an nnspam config file (its ``online:``
                        section: epochs, learning rate, n ...); unset: the defaults.
``NNSPAM_PYTHON``       the Python interpreter that has nnspam installed.

Which Python runs it: the scripts start with ``#!/usr/bin/env python3``, so
with nnspam's virtualenv active (or nnspam installed for that python3) they
run directly. If ``nnspam`` cannot be imported there, they re-execute
themselves with ``$NNSPAM_PYTHON``, else with the ``.venv/bin/python`` of the
repository they sit in. They work from any working directory.

Only NumPy and nnspam's own modules are imported on the way (no scikit-learn,
SciPy or YAML, except YAML at initialize when NNSPAM_TREC_CONFIG is set).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# One message per process: a 1 x n by n x h product needs no BLAS threads, and
# starting them (and their spinning) cost more CPU than the work (measured:
# 248 ms CPU for 162 ms wall per classify process with the default threads).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

USAGE = {
    "initialize": "initialize",
    "classify": "classify FILE",
    "train": "train JUDGE FILE CLASS TFILE",
    "finalize": "finalize",
}
_NARGS = {"initialize": 0, "classify": 1, "train": 4, "finalize": 0}


def _ensure_nnspam(argv: list[str]) -> None:
    """Import nnspam (and NumPy, which it needs), or re-execute this script
    with a Python that has them."""
    try:
        import nnspam.services.runs.online  # noqa: F401
        return
    except ImportError:
        pass
    here = Path(__file__).resolve().parent
    candidates = [os.environ.get("NNSPAM_PYTHON", ""), str(here.parents[1] / ".venv/bin/python")]
    for py in candidates:
        if py and os.path.exists(py) and not os.environ.get("_NNSPAM_TREC_REEXEC"):
            os.environ["_NNSPAM_TREC_REEXEC"] = "1"
            os.execv(py, [py, *argv])
    sys.stderr.write("nnspam-trec: cannot import nnspam with " + sys.executable +
                     "; activate nnspam's virtualenv or set NNSPAM_PYTHON\n")
    sys.exit(2)


def state_dir() -> Path:
    return Path(os.environ.get("NNSPAM_TREC_DIR") or "nnspam-trec").absolute()


def _fail(msg: str) -> int:
    sys.stderr.write(f"nnspam-trec: {msg}\n")
    return 2


def main(command: str, argv: list[str]) -> int:
    """Run one TREC command; returns the exit status."""
    _ensure_nnspam([sys.argv[0], *argv])
    args = argv
    if len(args) != _NARGS[command]:
        return _fail(f"usage: {USAGE[command]}")
    from nnspam.services.runs.online import OnlineError, OnlineFilter

    directory = state_dir()
    try:
        if command == "initialize":
            config = None
            cfg_file = os.environ.get("NNSPAM_TREC_CONFIG")
            if cfg_file:
                from nnspam.config import ConfigError, load_config

                try:
                    config = load_config(cfg_file)
                except ConfigError as exc:
                    return _fail(str(exc))
            model = os.environ.get("NNSPAM_TREC_MODEL") or None
            kind = None if model else (os.environ.get("NNSPAM_TREC_KIND") or "email")
            try:
                OnlineFilter.create(directory, model, config, kind=kind)
            except ValueError as exc:
                return _fail(str(exc))
            return 0
        if command == "finalize":
            OnlineFilter.load(directory)  # fails loudly if the run left no state
            return 0
        path = args[0] if command == "classify" else args[1]
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            return _fail(f"{path}: {exc.strerror}")
        f = OnlineFilter.load(directory)
        if command == "classify":
            # the spamicity of f.classify and its logit, in one pass
            sps, zs = f.model.judge_tokens([f.tokens(raw)])
            verdict = "spam" if f.is_spam(float(sps[0])) else "ham"
            sys.stdout.write(f"class={verdict} score={float(zs[0])!r} tfile=-\n")
            return 0
        judge = args[0].lower()
        if judge not in ("spam", "ham"):
            return _fail(f"JUDGE must be spam or ham, not {args[0]!r}")
        f.train(raw, judge)
        f.save()
        return 0
    except OnlineError as exc:
        return _fail(str(exc))
