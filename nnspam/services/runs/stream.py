"""Replay a mail history in order: classify each message, then learn it through the one
correction routine (:func:`nnspam.model.correct.correct`), as a user who corrects mistakes
(``errors``), as the TREC full-feedback protocol (``all``), or not at all (``none``).

This is ``nnspam stream`` and the nnspam side of ``scripts/bench/stream.py``. The index
is the TREC toolkit's: one ``spam|ham PATH`` line per message, in stream order, with
PATH relative to the corpus folder (by default the index file's folder, as the toolkit
resolves it). The corpus may also be a ``.tar``/``.tar.xz`` archive, read in one pass.

For each message the model sees exactly what the daemon sees: the message is scored,
and then either learned with its true class (a correction) or, when it is not learned,
observed unlabelled by the adaptive inputs (the daemon's arrival path).
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from nnspam.model.core import Model

__all__ = ["FEEDBACK", "StreamError", "Step", "read_index", "load_messages", "replay",
           "summarize", "ham_loss_key"]

FEEDBACK = ("all", "errors", "none")


class StreamError(Exception):
    """An index or corpus that cannot be read; the message names the file and line."""


@dataclass
class Step:
    """One message of a replay: its index path, true class, spamicity, verdict and
    whether it was learned."""

    path: str
    judge: str
    spamicity: float
    score: float  # a ranking score without ties at 0 or 1 (the spamicity's logit)
    verdict: str
    learned: bool


def read_index(index_file: str | Path) -> list[tuple[str, str]]:
    """``(judge, path)`` pairs of a TREC index, in order (StreamError on a bad line)."""
    out: list[tuple[str, str]] = []
    try:
        text = Path(index_file).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise StreamError(f"{index_file}: {exc.strerror}") from None
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or parts[0].lower() not in ("spam", "ham"):
            raise StreamError(f"{index_file}:{i}: expected 'spam|ham PATH', got {line[:80]!r}")
        out.append((parts[0].lower(), parts[1].strip()))
    if not out:
        raise StreamError(f"{index_file}: no messages listed")
    return out


def load_messages(paths: Sequence[str], corpus: str | Path) -> Callable[[str], bytes]:
    """A reader of the index's messages: ``corpus`` is a folder the paths are relative
    to, or a tar archive holding them (under a top folder or not), read once here."""
    root = Path(corpus)
    if root.is_dir():
        def read(p: str) -> bytes:
            try:
                return (root / p).read_bytes()
            except OSError as exc:
                raise StreamError(f"{root / p}: {exc.strerror}") from None
        return read
    if root.is_file() and tarfile.is_tarfile(root):
        from nnspam.mail.corpus import read_from_tar, strip_dots

        wanted = {strip_dots(p) for p in paths}
        found = read_from_tar(root, wanted)
        missing = wanted - found.keys()
        if missing:
            raise StreamError(f"{corpus}: {len(missing)} listed messages missing, "
                              f"e.g. {min(missing)}")
        return lambda p: found[strip_dots(p)]
    raise StreamError(f"{corpus}: not a folder or tar archive")


def start_model(spec: str | None, config: dict[str, Any] | None = None,
                kind: str = "email") -> Any:
    """The model a replay starts from: ``spec`` names a model (``default``,
    ``default-sms`` or a directory), loaded into memory (the files are never written);
    None is an untrained network of ``kind`` whose free input slots the stream fills
    (:func:`nnspam.services.runs.online.untrained_model`). The config's ``adaptive:`` section is
    applied, as the daemon does."""
    from nnspam import config as C
    from nnspam.model import adaptive
    from nnspam.model.core import Model
    from nnspam.services.runs.online import online_settings, untrained_model

    cfg = C.merge(C.DEFAULTS, config or {})
    if spec is None:
        model = untrained_model(online_settings(cfg, kind))
    else:
        model = Model.load(spec)
    adaptive.configure(model, dict(cfg["adaptive"]))
    return model


#: Messages a tokenizing process is handed at a time (``replay(..., tokenizers=N)``): large
#: enough that handing them over costs little, small enough that a stream of big messages is
#: never held in memory at once.
TOKENIZE_BLOCK = 256


def tokenized(model: Model, items: Sequence[tuple[str, str]], read: Callable[[str], bytes],
              tokenizers: int = 0) -> Iterator[list[str]]:
    """Each message's tokens, in order. ``tokenizers`` > 0: that many other processes
    tokenize the next block while this one learns the current one (the same tokens: the
    same function, :func:`nnspam.model.core.tokenize_payload`); the messages are read here,
    a block ahead."""
    if tokenizers <= 0:
        for _, path in items:
            yield model.tokens(read(path))
        return
    import functools
    import multiprocessing

    from nnspam.model.core import tokenize_payload

    work = functools.partial(tokenize_payload, kind=model.kind,
                             max_part_bytes=model.max_part_bytes)
    blocks = [items[i:i + TOKENIZE_BLOCK] for i in range(0, len(items), TOKENIZE_BLOCK)]
    # fork, as training's tokenize_samples: spawn would re-run a calling script that lacks
    # an `if __name__ == "__main__"` guard in every worker (it hung such a script)
    ctx = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
    with ctx.Pool(tokenizers) as pool:
        pending = (pool.map_async(work, [read(p) for _, p in blocks[0]], chunksize=16)
                   if blocks else None)
        for k in range(len(blocks)):
            assert pending is not None
            done = pending.get()
            if k + 1 < len(blocks):
                pending = pool.map_async(work, [read(p) for _, p in blocks[k + 1]],
                                         chunksize=16)
            yield from done


def replay(model: Model, items: Sequence[tuple[str, str]], read: Callable[[str], bytes],
           feedback: str = "errors", rule: Any = None, adaptive: bool = True,
           tokenizers: int = 0) -> Iterator[Step]:
    """Classify then (by ``feedback``) learn each ``(judge, path)`` in order; yields a
    :class:`Step` per message. The model changes in place.

    No correction journal is kept: a replay's lessons are not a user's, to be forgotten
    one by one, and recording each (a copy of the weights it changes) took 3 of the 30 ms
    a full-feedback message cost (cProfile, 600 TREC messages). The journal only records,
    so the figures are the same with it or without.

    ``tokenizers``: processes that tokenize ahead (:func:`tokenized`); the figures are the
    same with them or without."""
    from nnspam.model.correct import Rule, correct, observe
    from nnspam.services.verdict import verdict as verdict_of

    if feedback not in FEEDBACK:
        raise ValueError(f"feedback must be one of {FEEDBACK}, not {feedback!r}")
    rule = (rule or Rule()).with_(journal=0)
    t, h, s = rule.point(model)  # the verdicts' operating point, as the corrections'

    for (judge, path), toks in zip(items, tokenized(model, items, read, tokenizers),
                                   strict=True):
        out = model.outputs([toks])  # for the verdict, and for observe's own verdicts
        sps, zs = model.judge_tokens([toks], h, s, outputs=out)
        sp, score = float(sps[0]), float(zs[0])  # scored before the message is learned
        verdict = verdict_of(sp, t)  # the one rule (judge_tokens also gives the logit)
        learn = feedback == "all" or (feedback == "errors" and verdict != judge)
        if learn:
            correct(model, [toks], judge, rule, adaptive_inputs=adaptive, source="stream")
        else:
            observe(model, [toks], adaptive_inputs=adaptive, outputs=out)
        yield Step(path, judge, sp, score, verdict, learn)


def summarize(steps: Sequence[Step]) -> dict[str, Any]:
    """Ham lost, spam missed, corrections and 1-ROCA (%) of a replay, and the spam missed
    (%) at the thresholds that lose at most 0.05% and 0.1% of ham
    (``spam_missed_at_ham_loss_0.05_percent``, ``..._0.1_percent``; from the logits,
    :func:`nnspam.services.runs.evaluate.spam_missed_at_ham_loss`)."""
    from nnspam.services.runs.evaluate import HAM_LOSS_POINTS, roc_auc, spam_missed_at_ham_loss

    y = np.array([1 if s.judge == "spam" else 0 for s in steps])
    score = np.array([s.score for s in steps], dtype=np.float64)
    pred = np.array([s.verdict == "spam" for s in steps], dtype=bool)
    n_spam = int(y.sum())
    n_ham = len(y) - n_spam
    fp = int((pred & (y == 0)).sum())
    fn = int((~pred & (y == 1)).sum())
    auc = roc_auc(y, score) if n_spam and n_ham else float("nan")
    out = {
        "messages": len(y), "ham": n_ham, "spam": n_spam,
        "ham_lost": fp, "spam_missed": fn,
        "ham_lost_percent": 100.0 * fp / n_ham if n_ham else 0.0,
        "spam_missed_percent": 100.0 * fn / n_spam if n_spam else 0.0,
        "learned": int(sum(s.learned for s in steps)),
        "one_minus_roca_percent": (1.0 - auc) * 100.0 if auc == auc else float("nan"),
    }
    for fraction in HAM_LOSS_POINTS:
        out[ham_loss_key(fraction)] = 100.0 * spam_missed_at_ham_loss(y, score, fraction)
    return out


def ham_loss_key(fraction: float) -> str:
    """``summarize``'s key of the spam missed at ``fraction`` of ham lost (0.0005 ->
    ``spam_missed_at_ham_loss_0.05_percent``)."""
    return f"spam_missed_at_ham_loss_{100 * fraction:g}_percent"
