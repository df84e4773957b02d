"""The pipe filter: ``nnspam filter`` reads one message on stdin and writes it
to stdout with the verdict headers added, for procmail, maildrop, Dovecot's
Sieve ``filter`` action or an MTA's pipe transport.

Mail filters are trusted with mail, so the rules here come before accuracy:

* The message is never lost. Anything that goes wrong while classifying
  (model missing or corrupt, bad config, a parser bug, ``MemoryError``) ends
  with the input written back unchanged and exit 0, or exit 75 (EX_TEMPFAIL)
  with ``--tempfail`` - the input is still written then, so a caller that
  ignores the exit status keeps the message too.
* Only header lines are inserted, into the raw bytes (:mod:`nnspam.mail.headers`);
  the message is never re-serialised.
* stdin is read to EOF, and the exit status is 0 only after all output has
  been written and flushed. If the output cannot be written (the reader went
  away: EPIPE, or the disk is full) the filter exits 75 in every mode so that
  procmail/maildrop keep the original and an MTA retries.
* Messages over the size cap pass through unclassified, marked
  ``X-NNSpam-Status: Skipped, reason=size``; only the first ``max_size`` bytes
  are held in memory, the rest is copied through in chunks.
* Start-up is cheap: this module imports only the standard library; NumPy
  and the model code are imported when a message is classified, YAML only
  when a config file is read.
* ``filter.words: N`` (opt-in) adds ``X-NNSpam-Words`` with the N words that moved the
  spamicity most (:mod:`nnspam.services.explanation`); a failure to explain drops only
  that field.

Exit codes with ``--verdict-exit`` (as bogofilter): 0 spam, 1 ham, 2 unsure
(in the configured band, or not classified because of the size cap), 3 error
(75 instead when ``--tempfail`` is given too).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import BinaryIO, Protocol

from nnspam.config import DEFAULTS
from nnspam.services.scoring import (
    FilterSettings,
    Result,
    classify,
    mark,
    model_scorer,
    settings,
    skipped_fields,
)

__all__ = [
    "EX_TEMPFAIL", "VERDICT_SPAM", "VERDICT_HAM", "VERDICT_UNSURE", "VERDICT_ERROR",
    "VERDICT_EXIT", "add_arguments", "filter_stream", "main", "quiet_stdout", "read_upto",
]

EX_TEMPFAIL = 75  # sysexits.h: temporary failure, the caller should retry
VERDICT_SPAM, VERDICT_HAM, VERDICT_UNSURE, VERDICT_ERROR = 0, 1, 2, 3
CHUNK = 1 << 16


def _scorer(s: FilterSettings) -> Callable[[bytes], float]:
    """Load the model now (so that a missing model fails before any output)
    and return a function raw bytes -> spamicity."""
    from nnspam.model.core import Model

    return model_scorer(Model.load(s.model), s)


# -- I/O -----------------------------------------------------------------------

class OutputError(Exception):
    """The output could not be written (EPIPE, ENOSPC, ...)."""


def _write(out: BinaryIO, data: bytes) -> None:
    try:
        out.write(data)
    except OSError as exc:
        raise OutputError(str(exc)) from exc


class Reader(Protocol):
    """What the filter reads a message from: standard input's binary stream, or one whose
    first bytes ``nnspam filter --server`` has read already
    (:mod:`nnspam.services.delivery.spamc`)."""

    def read(self, n: int = -1, /) -> bytes: ...


def read_upto(inp: Reader, limit: int) -> bytes:
    """Read until EOF or until more than ``limit`` bytes are held (one more byte
    than ``limit`` says the message is over the size cap). Also used by ``nnspam
    filter --server``, which must read the message exactly as the filter does."""
    parts: list[bytes] = []
    have = 0
    while have <= limit:
        chunk = inp.read(min(CHUNK, limit + 1 - have) or 1)
        if not chunk:
            break
        parts.append(chunk)
        have += len(chunk)
    return b"".join(parts)


def filter_stream(inp: Reader, out: BinaryIO, settings_of: Callable[[], FilterSettings],
                  scorer_of: Callable[[FilterSettings], Callable[[bytes], float]] = _scorer,
                  max_size_fallback: int = DEFAULTS["filter"]["max_size"],
                  log: Callable[[str], None] | None = None) -> tuple[str, float | None]:
    """Copy one message from ``inp`` to ``out``, marked; return (verdict,
    spamicity). Raises :class:`OutputError` when writing fails and OSError
    when reading fails; every other failure passes the message through
    unchanged with verdict ``error``."""
    err: str | None = None
    settings: FilterSettings | None
    try:
        settings = settings_of()
        max_size = settings.max_size
    except Exception as exc:  # noqa: BLE001 - a bad config must not lose mail
        settings, max_size = None, max_size_fallback
        err = f"{exc.__class__.__name__}: {exc}"
    raw = read_upto(inp, max_size)
    if len(raw) > max_size:
        # Too big to classify: mark it from its first bytes and copy the rest.
        try:
            head = mark(raw, skipped_fields("size"), at_eof=False) if err is None else raw
        except Exception as exc:  # noqa: BLE001
            head, err = raw, f"{exc.__class__.__name__}: {exc}"
        del raw
        _write(out, head)
        del head
        while True:
            chunk = inp.read(CHUNK)
            if not chunk:
                break
            _write(out, chunk)
        verdict = "skipped" if err is None else "error"
        sp = None
    elif settings is None:
        _write(out, raw)
        verdict, sp = "error", None
    elif not raw.strip():
        # No message (an empty or blank input): nothing to mark or score; what came in goes
        # out as it was, and --verdict-exit says error (3), not ham.
        _write(out, raw)
        verdict, sp, err = "error", None, "empty input: no message"
    else:
        try:
            score = scorer_of(settings)
        except Exception as exc:  # noqa: BLE001
            score, err = None, f"{exc.__class__.__name__}: {exc}"
        if score is None:
            res = Result(raw, "error", None, err)
        else:
            res = classify(raw, score, settings.threshold, settings.unsure, settings.words,
                           spamassassin=settings.spamassassin,
                           rewrite_subject=settings.rewrite_subject,
                           score_mode=settings.score_mode)
        del raw
        _write(out, res.output)
        verdict, sp, err = res.verdict, res.spamicity, res.error
    try:
        out.flush()
    except OSError as exc:
        raise OutputError(str(exc)) from exc
    if err is not None and log is not None:
        log(f"nnspam filter: {err}; message passed through unchanged")
    return verdict, sp


# -- command line ----------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    """The filter's options (shared by the fast path and ``nnspam --help``)."""
    p.add_argument("-c", "--config", metavar="FILE", help="config file (YAML)")
    p.add_argument("-m", "--model", metavar="MODEL",
                   help="model directory, or 'default' for the shipped email model "
                   "(default: the 'model' setting of the config)")
    p.add_argument("--verdict-exit", action="store_true",
                   help="exit 0 spam, 1 ham, 2 unsure or skipped, 3 error (like bogofilter)")
    p.add_argument("--tempfail", action="store_true",
                   help="exit 75 (EX_TEMPFAIL) when the message could not be classified; "
                   "the input is still written to stdout unchanged")


DESCRIPTION = (
    "Read one message on stdin, write it to stdout with X-NNSpam-Status (and "
    "X-NNSpam-Flag: YES on spam) added to the header; every other byte unchanged. On any "
    "failure the message is written unchanged and the exit status is 0 (75 with "
    "--tempfail). Messages over filter.max_size bytes pass through marked 'Skipped, "
    "reason=size'. Exit 75 if the output cannot be written."
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nnspam filter", description=DESCRIPTION)
    add_arguments(p)
    return p


#: ``--verdict-exit`` status of each verdict (bogofilter's convention), shared with
#: ``nnspam filter --server``.
VERDICT_EXIT = {"spam": VERDICT_SPAM, "ham": VERDICT_HAM, "unsure": VERDICT_UNSURE,
                 "skipped": VERDICT_UNSURE, "error": VERDICT_ERROR}


def run(args: argparse.Namespace, inp: Reader | None = None,
        out: BinaryIO | None = None) -> int:
    """Run the filter with parsed arguments; returns the exit status."""
    inp = inp if inp is not None else sys.stdin.buffer
    out = out if out is not None else sys.stdout.buffer

    def settings_of() -> FilterSettings:
        from nnspam.config import load_config

        return settings(load_config(args.config), args.model)

    def log(msg: str) -> None:
        try:
            print(msg, file=sys.stderr, flush=True)
        except OSError:
            pass

    try:
        verdict, _ = filter_stream(inp, out, settings_of, log=log)
    except OutputError as exc:
        log(f"nnspam filter: cannot write the output ({exc}); exit {EX_TEMPFAIL}")
        quiet_stdout()
        return EX_TEMPFAIL
    except OSError as exc:
        log(f"nnspam filter: cannot read the input ({exc}); exit {EX_TEMPFAIL}")
        return EX_TEMPFAIL
    if verdict == "error" and args.tempfail:
        return EX_TEMPFAIL
    if args.verdict_exit:
        return VERDICT_EXIT[verdict]
    return 0


def quiet_stdout() -> None:
    """After EPIPE, point fd 1 at /dev/null so that the interpreter's final
    flush of sys.stdout does not report the broken pipe a second time."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.close(fd)
    except OSError:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """``nnspam filter ...``: called by :func:`nnspam.front.cli.main` before the
    rest of the command line is even built, to keep start-up cheap."""
    args = build_parser().parse_args(argv)
    return run(args)
