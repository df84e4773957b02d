"""The scoring every front shares: score one message with a model and mark it.

:func:`classify` scores a whole message and inserts the X-NNSpam header fields
(:func:`status_fields`, and SpamAssassin's, :func:`spamassassin_fields`, when asked),
never raising for a bad message or scorer; :func:`model_scorer` is the scorer of a loaded
model; :class:`FilterSettings` (:func:`settings`) is what the config says about it. The pipe
filter (:mod:`nnspam.services.delivery.pipefilter`), its client of the scoring server
(:mod:`nnspam.services.delivery.spamc`), the server (:mod:`nnspam.services.spamd.protocol`) and
the model registry (:mod:`nnspam.services.models.registry`) all classify through here,
so they classify alike. Standard library only at import time, as the filter needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nnspam import __version__
from nnspam.mail.headers import set_header_fields, tag_subject
from nnspam.services.verdict import (
    HAM,
    SPAM,
    UNSURE,
    SenderLists,
    is_spam,
    sa_points,
    sa_threshold,
    score_tokens,
)
from nnspam.services.verdict import verdict as verdict_of

if TYPE_CHECKING:
    from nnspam.model.core import Model

__all__ = [
    "STATUS", "FLAG", "WORDS", "OUR_FIELDS", "SA_FIELDS", "Result", "FilterSettings", "classify",
    "mark", "model_scorer", "settings", "skipped_fields", "spamassassin_fields",
    "status_fields",
]

STATUS = "X-NNSpam-Status"
FLAG = "X-NNSpam-Flag"
WORDS = "X-NNSpam-Words"  # filter.words > 0: the top words (nnspam.services.explanation)
OUR_FIELDS = (STATUS, FLAG, WORDS)



@dataclass
class Result:
    """What the filter did with one message.

    ``verdict`` is one of ``spam``, ``ham``, ``unsure`` (classified, in the
    unsure band; the headers still say Yes/No by the threshold), ``skipped``
    (over the size cap) or ``error`` (passed through unchanged).
    """

    output: bytes
    verdict: str
    spamicity: float | None = None
    error: str | None = None
    #: the top words (word, change of spamicity, of log-odds) when asked for (``explain``)
    words: list[tuple[str, float, float]] | None = None


def status_fields(spamicity: float, threshold: float,
                  unsure: tuple[float, float] | None = None) -> list[tuple[str, str]]:
    """The header fields for a classified message: ``X-NNSpam-Status: Yes`` (and
    ``X-NNSpam-Flag: YES``) for spam, ``No`` for ham, ``Unsure`` inside the unsure band
    (as bogofilter's ``X-Bogosity: Unsure``; no flag, so recipes that file on the flag
    or on ``Yes`` leave it in the inbox or file it apart). The word is the verdict of
    :func:`nnspam.services.verdict.verdict`."""
    word = {SPAM: "Yes", HAM: "No", UNSURE: "Unsure"}[verdict_of(spamicity, threshold, unsure)]
    fields = [(STATUS, f"{word}, spamicity={spamicity:.3f}, "
                       f"threshold={threshold:.3f}, version={__version__}")]
    if word == "Yes":
        fields.append((FLAG, "YES"))
    return fields


#: SpamAssassin's fields, written by ``filter.spamassassin_headers`` and
#: ``serve.spamassassin_headers`` (any earlier ones, forged or another filter's, replaced).
SA_FIELDS = ("X-Spam-Flag", "X-Spam-Status", "X-Spam-Level")


def spamassassin_fields(spamicity: float, threshold: float,
                        scale: float, mode: str = "spamicity") -> list[tuple[str, str]]:
    """SpamAssassin's header fields for a classified message, so rules written for
    SpamAssassin (Sieve ``header :contains "X-Spam-Flag" "YES"``, procmail
    ``^X-Spam-Status: Yes``, ``X-Spam-Level: *****``) work unchanged:
    ``X-Spam-Flag: YES`` (spam only), ``X-Spam-Status: Yes|No, score=S required=R
    tests=NNSPAM_SPAM|NNSPAM_HAM autolearn=no version=nnspam-V`` and ``X-Spam-Level``, one
    ``*`` per whole point of the score. Points are ``scale`` times the spamicity and the
    threshold (``serve.score_scale``, 10: the threshold 0.5 is SpamAssassin's 5.0). Yes/No
    is by ``threshold``: the callers pass :func:`nnspam.services.verdict.sa_threshold`
    (the top of the unsure band, if one is set: SpamAssassin has no unsure)."""
    spam = is_spam(spamicity, threshold)
    score = sa_points(spamicity, threshold, scale, mode)  # serve.score_mode
    status = (f"{'Yes' if spam else 'No'}, score={score:.1f} "
              f"required={scale * threshold:.1f} tests=NNSPAM_{'SPAM' if spam else 'HAM'} "
              f"autolearn=no version=nnspam-{__version__}")
    stars = "*" * min(max(int(score), 0), 50)
    return ([("X-Spam-Flag", "YES")] if spam else []) + [("X-Spam-Status", status),
                                                          ("X-Spam-Level", stars)]


def skipped_fields(reason: str) -> list[tuple[str, str]]:
    """The header field for a message passed through unclassified."""
    return [(STATUS, f"Skipped, reason={reason}")]


def mark(raw: bytes, fields: Sequence[tuple[str, str]], at_eof: bool = True) -> bytes:
    """``raw`` with any existing X-NNSpam headers replaced by ``fields``."""
    return set_header_fields(raw, fields, OUR_FIELDS, at_eof)


def classify(raw: bytes, score: Callable[[bytes], float], threshold: float,
             unsure: tuple[float, float] | None = None, words: int = 0,
             explain: int = 0, spamassassin: float | None = None,
             rewrite_subject: str | None = None, score_mode: str = "spamicity") -> Result:
    """Score one whole message and mark it; never raises for a bad message or
    scorer: any exception (``MemoryError`` included) gives the input back
    unchanged with verdict ``error``.

    ``words`` > 0 adds the X-NNSpam-Words field with that many words, ``explain`` > 0
    only fills ``Result.words`` (the server's SYMBOLS and REPORT), when the scorer can
    explain (:func:`model_scorer`'s can). A failure to explain costs only the words."""
    try:
        sp = float(score(raw))
        if sp != sp:  # NaN from a broken model: do not file mail on it
            raise ValueError("the model returned NaN")
        fields = status_fields(sp, threshold, unsure)
        top = None
        if words > 0 or explain > 0:
            top, more = _explained(score, raw, words, explain)
            fields += more
        out = mark(raw, fields)
        if spamassassin is not None:  # SpamAssassin's fields too, at this score scale
            out = set_header_fields(
                out, spamassassin_fields(sp, sa_threshold(threshold, unsure), spamassassin,
                                         score_mode), SA_FIELDS)
        v = verdict_of(sp, threshold, unsure)
        if rewrite_subject and v == SPAM:  # spam only: unsure mail keeps its Subject
            out = tag_subject(out, rewrite_subject)
        return Result(out, v, sp, words=top)
    except Exception as exc:  # noqa: BLE001 - never lose mail, whatever failed
        return Result(raw, "error", None, f"{exc.__class__.__name__}: {exc}")


def _explained(score: Callable[[bytes], float], raw: bytes, words: int, explain: int
               ) -> tuple[list[tuple[str, float, float]] | None, list[tuple[str, str]]]:
    """(top words, [the X-NNSpam-Words field] when ``words`` > 0) of ``raw`` from the
    scorer's ``explain``; (None, []) when it has none or explaining fails (logged on
    ``nnspam.filter``, which is stderr): never raises, the verdict is written anyway."""
    fn = getattr(score, "explain", None)
    if fn is None:
        return None, []
    try:
        top = fn(raw, max(words, explain))
        if words <= 0:
            return top, []
        from nnspam.services.explanation import header_value

        return top, [(WORDS, header_value(top[:words]))]
    except Exception as exc:  # noqa: BLE001 - the verdict headers are written anyway
        import logging

        logging.getLogger("nnspam.filter").warning(
            "nnspam filter: cannot explain the verdict (%s: %s); no %s field",
            exc.__class__.__name__, exc, WORDS)
        return None, []


# -- settings ----------------------------------------------------------------

@dataclass
class FilterSettings:
    """What the filter needs from the config: the model, the verdict's threshold and
    unsure band, the ham bias, and the size cap (:func:`settings`)."""

    model: str
    threshold: float
    ham_factor: float
    spam_factor: float
    max_size: int
    unsure: tuple[float, float] | None
    words: int = 0  # filter.words: the X-NNSpam-Words field with the top N words; 0: none
    #: filter.spamassassin_headers: SpamAssassin's fields at this score scale
    #: (serve.score_scale), None: not written
    spamassassin: float | None = None
    #: filter.rewrite_subject: put before a spam's Subject (SpamAssassin's rewrite_header
    #: Subject), None: the Subject is left alone
    rewrite_subject: str | None = None
    #: serve.score_mode: how SpamAssassin's points are made (verdict.sa_points)
    score_mode: str = "spamicity"
    #: lists: the user's allow/deny lists of senders (verdict.SenderLists), None: none
    lists: Any = None


def settings(cfg: dict[str, Any], model: str | None) -> FilterSettings:
    """The filter's :class:`FilterSettings` from a loaded config (``-m`` replaces its model),
    checked: ValueError for a bad unsure band or size cap. Shared with ``nnspam filter
    --server`` (:mod:`nnspam.services.delivery.spamc`) and ``nnspam serve``, so the three
    classify alike."""
    f = cfg["filter"]
    unsure = f.get("unsure")
    t = float(cfg["threshold"])
    band: tuple[float, float] | None = None
    if unsure is not None:
        if (not isinstance(unsure, list | tuple) or len(unsure) != 2
                or not all(isinstance(x, int | float) for x in unsure)):
            raise ValueError("filter.unsure must be null or a list [low, high]")
        lo, hi = float(unsure[0]), float(unsure[1])
        if not (0.0 <= lo <= t <= hi <= 1.0):
            raise ValueError(f"filter.unsure [{lo}, {hi}] must satisfy 0 <= low <= threshold "
                             f"({t}) <= high <= 1")
        band = (lo, hi) if lo < hi else None
    max_size = int(f["max_size"])
    if max_size < 0:
        raise ValueError("filter.max_size must be >= 0")
    words = f["words"]
    if not isinstance(words, int) or isinstance(words, bool) or words < 0:
        raise ValueError(f"filter.words must be a whole number >= 0, not {words!r}")
    tag = f.get("rewrite_subject")
    if tag is not None and (not isinstance(tag, str) or not tag.strip() or len(tag) > 64
                            or not all(" " <= c <= "~" for c in tag)):
        raise ValueError(f"filter.rewrite_subject must be null or up to 64 printable ASCII "
                         f"characters, e.g. '[SPAM] ', not {tag!r}")
    return FilterSettings(model or cfg["model"], t, float(cfg["ham_factor"]),
                    float(cfg["spam_factor"]), max_size, band, words,
                    float(cfg["serve"]["score_scale"]) if f.get("spamassassin_headers")
                    else None, tag, str(cfg["serve"]["score_mode"]),
                    SenderLists.from_config(cfg))


def model_scorer(model: Model, s: FilterSettings) -> Callable[[bytes], float]:
    """A function raw bytes -> spamicity with ``model`` at the settings' ham bias,
    through the one scoring routine (:func:`nnspam.services.verdict.score_tokens`); the
    verdict is :func:`classify`'s, which knows the unsure band. The scoring server
    scores with the same function.

    Its ``explain(raw, n)`` gives the top ``n`` words of the message with their
    contributions (:func:`nnspam.services.explanation.top_words`), from the tokens of the
    message it scored last when that is ``raw``: a message is tokenized once."""
    last: list[tuple[bytes, list[str]]] = []

    def score(raw: bytes) -> float:
        toks = model.tokens(raw)
        last[:] = [(raw, toks)]
        return score_tokens(model, [toks], s.threshold, s.ham_factor, s.spam_factor,
                            lists=s.lists)[0][0]

    def explain(raw: bytes, n: int) -> list[tuple[str, float, float]]:
        from nnspam.services.explanation import top_words

        seen = last[0] if last else None
        toks = seen[1] if seen is not None and seen[0] is raw else model.tokens(raw)
        return top_words(model, toks, n, s.ham_factor, s.spam_factor)

    score.explain = explain  # type: ignore[attr-defined]  # function attribute, read by _explained
    return score
