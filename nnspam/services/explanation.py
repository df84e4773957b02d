"""A verdict's words as nnspam shows them: the ``X-NNSpam-Words`` header of the
pipe filter (``filter.words``), the per-word symbols and report lines of the
server's SYMBOLS and REPORT answers, and ``nnspam explain``'s text and JSON.

The words and their contributions come from :func:`nnspam.model.explain.explain`
(occlusion: the spamicity minus the spamicity of the message without the word; see
there). Here they are ``(word, delta, logit)`` triples: the change of the spamicity
and of its log-odds. Most mail scores near 0 or 1, where no single word moves the
spamicity by 0.0005 while the log-odds still move by a unit or two, so every form
below shows both.

``X-NNSpam-Words: click=+0.310 (+2.41), wrote=-0.000 (-0.64)``
    the top words, biggest effect first: the change of the spamicity with three
    decimals and of the log-odds in parentheses. Words are percent-encoded where they
    hold anything but printable ASCII that cannot be mistaken for the list's own
    punctuation (space, ``,``, ``=``, ``(``, ``)``, ``;``, ``"``, ``\\``, ``%``), so the
    value is one line of ASCII; it is cut to :data:`HEADER_MAX` characters.
SYMBOLS
    the verdict's symbol (``NNSPAM_SPAM``, ``NNSPAM_HAM``, ``NNSPAM_UNSURE``: spamd/protocol.py),
    then one symbol per word:
    ``NNSPAM_SPAMMY_CLICK`` for a word that pushed towards spam, ``NNSPAM_HAMMY_WROTE``
    towards ham (SpamAssassin's names for Bayes tokens), the word in upper case with
    anything but letters and digits as ``_``.
REPORT
    SpamAssassin's report layout (its default ``report`` template: "Content analysis
    details", then `` pts rule name              description`` and a line of dashes,
    then one line per rule: points right-aligned in 4 columns, the rule name in 22, the
    description wrapped at 50 columns), so ``spamc -R`` reads as with spamd. The rules
    are the verdict, by its symbol (points ``score_scale * spamicity``, as the ``Spam:``
    line), and the per-word symbols (points ``score_scale * delta``, the same mapping).

Standard library only: the pipe filter imports this module only when it explains.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from nnspam.model.core import Model

__all__ = ["HEADER_MAX", "REPORT_WORDS", "TopWords", "top_words", "header_value", "symbols",
           "report_table", "explain_text", "explain_json"]

#: (word, change of the spamicity, change of the log-odds) of the top words.
TopWords = list[tuple[str, float, float]]

#: The longest X-NNSpam-Words value: with the field name the line stays under the
#: 998 characters RFC 5322 allows, without folding.
HEADER_MAX = 900
#: Words of the server's SYMBOLS and REPORT answers while ``filter.words`` is 0 (the
#: header is opt-in because it changes every message; these answers are asked for).
REPORT_WORDS = 10
_SAFE = "!#$&'*+-./:<>?@[]^_`{|}~"  # besides letters and digits (quote keeps those)
_NOT_SYMBOL = re.compile(r"[^A-Z0-9]+")
_SYMBOL_WORD = 30  # characters of a word kept in its symbol


def top_words(model: Model, tokens: Sequence[str], n: int, ham_factor: float | None = None,
              spam_factor: float | None = None) -> TopWords:
    """The ``n`` words of a tokenized message with the biggest effect on its spamicity
    at the ham bias given (:func:`nnspam.model.explain.explain`)."""
    from nnspam.model.explain import explain

    got = explain(model, tokens, ham_factor, spam_factor)
    return [(w.word, w.delta, w.logit) for w in got.top(n)]


def _quoted(word: str) -> str:
    return quote(word, safe=_SAFE, errors="surrogateescape")


def header_value(words: TopWords) -> str:
    """The ``X-NNSpam-Words`` value (module docstring); ``none`` for a message without
    any input word."""
    parts: list[str] = []
    size = 0
    for word, delta, logit in words:
        item = f"{_quoted(word)}={delta:+.3f} ({logit:+.2f})"
        if size + len(item) + 2 > HEADER_MAX:
            break
        parts.append(item)
        size += len(item) + 2
    return ", ".join(parts) if parts else "none"


def _symbol(word: str, logit: float) -> str:
    name = _NOT_SYMBOL.sub("_", word.upper()).strip("_")[:_SYMBOL_WORD].strip("_")
    if not name:  # nothing ASCII in it (a word in another script): its code points
        name = "U" + "_".join(f"{ord(c):X}" for c in word)[:_SYMBOL_WORD]
    return f"NNSPAM_{'SPAMMY' if logit > 0 else 'HAMMY'}_{name}"


def symbols(words: TopWords) -> list[str]:
    """One symbol per word that changed anything, in order, without repeats."""
    out: dict[str, None] = {}
    for word, _, logit in words:
        if logit != 0.0:
            out.setdefault(_symbol(word, logit), None)
    return list(out)


def _rule(points: float, name: str, description: str) -> list[str]:
    lines = textwrap.wrap(description, 50) or [""]
    pts = round(points, 1) + 0.0  # no "-0.0"
    return [f"{pts:4.1f} {name:<22} {lines[0]}"] + [" " * 28 + x for x in lines[1:]]


def report_table(spamicity: float, threshold: float, scale: float, rule: str,
                 words: TopWords | None, mode: str = "spamicity") -> str:
    """SpamAssassin's report of one classified message (module docstring): the verdict
    as the rule ``rule`` (SYMBOLS' first symbol, e.g. NNSPAM_SPAM), then the words;
    ``\\r\\n`` line ends as the rest of the server's REPORT answer."""
    from nnspam.services.verdict import sa_points

    pts = sa_points(spamicity, threshold, scale, mode)
    lines = [f"Content analysis details:   ({pts:.1f} points, "
             f"{scale * threshold:.1f} required)", "",
             " pts rule name              description",
             "---- ---------------------- --------------------------------------------------"]
    lines += _rule(pts, rule, f"nnspam neural network: spamicity {spamicity:.3f}")
    seen: set[str] = set()
    for word, delta, logit in words or ():
        if logit == 0.0:
            continue
        name = _symbol(word, logit)
        if name in seen:
            continue
        seen.add(name)
        lines += _rule(scale * delta, name,
                       f'"{_quoted(word)}": spamicity {delta:+.3f}, log-odds {logit:+.2f}')
    return "".join(x + "\r\n" for x in lines)


# -- nnspam explain -----------------------------------------------------------------

def _printable(text: str) -> str:
    """``text`` with control characters escaped (a token must not drive the terminal)."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def explain_text(name: str, expl: Any, threshold: float, verdict: str, n: int) -> str:
    """``nnspam explain``'s text for one message: the verdict, the top ``n`` words
    (:class:`nnspam.model.explain.Explanation`), the tokens without an input word, the
    wide path's weights and the adaptive replacements."""
    out = [f"{_printable(name)}",
           f"  {verdict}: spamicity {expl.spamicity:.6f} (log-odds {expl.logit:+.2f}), "
           f"threshold {threshold:.3f}"]
    top = expl.top(n)
    if top:
        out.append(f"  {len(top)} of its {len(expl.words)} input words, by effect (the "
                   "spamicity minus the spamicity without the word):")
        out.append("    spamicity  log-odds  count  word")
        out += [f"    {w.delta:+9.4f}  {w.logit:+8.2f}  {w.count:5d}  {_printable(w.word)}"
                for w in top]
    else:
        out.append("  no input word of the model is in the message")
    shown = ", ".join(_printable(t) for t in expl.no_input[:n])
    more = f", ... ({len(expl.no_input) - n} more)" if len(expl.no_input) > n else ""
    out.append(f"  tokens without an input word: {len(expl.no_input)}"
               + (f": {shown}{more}" if expl.no_input else ""))
    if not expl.wide_active:
        out.append("  wide path: not taught by any correction yet (adds nothing)")
    elif not expl.wide:
        out.append("  wide path: none of these tokens carries weight")
    else:
        out.append(f"  wide path: {len(expl.wide)} of them carry weight (token, weight, "
                   "term in the wide logit):")
        out += [f"    {_printable(w.token)}  {w.weight:+.4f}  {w.logit:+.4f}"
                for w in expl.wide[:n]]
    if expl.digest:
        out.append(f"  wide path digest: {expl.digest:+.2f} log-odds for this very message "
                   "(it was learned; held fixed in the contributions above)")
    if not expl.replacements:
        out.append("  adaptive replacements: none involve its words")
    else:
        out.append("  adaptive replacements involving its words (input: old -> new):")
        out += [f"    {r.index}: {_printable(r.old)} -> {_printable(r.new)}"
                + (f"  ({r.time})" if r.time else "") for r in expl.replacements]
    return "\n".join(out)


def explain_json(name: str, expl: Any, threshold: float, verdict: str,
                 n: int) -> dict[str, Any]:
    """``nnspam explain --json``'s object for one message (the top ``n`` words; every
    token without an input word, wide weight and replacement)."""
    return {"message": name, "verdict": verdict, "threshold": threshold,
            **expl.to_json(words=n)}
