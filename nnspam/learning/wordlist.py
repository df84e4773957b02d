"""The word list: which tokens become the network's input neurons.

Two ways to choose them:

``freq`` (the original NNSpam procedure)
    Count every word over the spam messages, sort by count, drop stop words
    (English, German, French), domain names and noise, keep the top n.
``ig`` (information gain, needs ham too)
    Rank tokens by the information their presence gives about the class,
    over spam and ham documents alike, and keep the top n. Unlike ``freq``
    it also picks strong *ham* words, which is what keeps hams out of Junk.
``chi2``
    The chi-square statistic of presence vs class, same inputs as ``ig``.

The file format is the original's: one ``count<TAB>word`` line per input,
editable by hand; lines starting with ``#`` are comments. The order is the
selection order (most frequent first for ``freq``, most informative first
for ``ig``/``chi2``); ``count`` is the word's occurrences in the messages the
list was built from.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from nnspam.mail.atomic import atomic_write_text

__all__ = [
    "METHODS",
    "WordListError",
    "stop_words",
    "is_noise",
    "select_frequent",
    "select_informative",
    "build",
    "DocCounts",
    "count_docs",
    "from_counts",
    "frequent_from_counts",
    "informative_from_counts",
    "read_wordlist",
    "write_wordlist",
]

METHODS = ("freq", "ig", "chi2")

_DOMAIN_RE = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$")
_HAS_LETTER = re.compile(r"[^\W\d_]")


class WordListError(Exception):
    """A word list file that cannot be used."""


@lru_cache(maxsize=1)
def stop_words() -> frozenset[str]:
    """English, German and French stop words shipped in ``nnspam/data``."""
    words: set[str] = set()
    for lang in ("en", "de", "fr"):
        text = resources.files("nnspam").joinpath(f"data/stopwords-{lang}.txt").read_text("utf-8")
        for line in text.splitlines():
            if not line.startswith("#"):
                words.update(line.split())
    return frozenset(words)


def is_noise(token: str) -> bool:
    """What the original procedure drops besides stop words: domain names,
    tokens without a letter (numbers, prices), and the prefixed header and
    structure tokens, which are not words of the message."""
    if ":" in token or " " in token:
        return True
    if not _HAS_LETTER.search(token):
        return True
    return bool(_DOMAIN_RE.match(token))


@dataclass
class DocCounts:
    """What choosing a word list needs of a corpus, and nothing more: per token, the
    spam and ham messages that hold it and its total count in each class, and the
    number of messages of each class. Counts of parts of a corpus add up (``a + b``) to
    the counts of the whole, so shards counted apart (on a Dask cluster,
    :mod:`nnspam.services.runs.distributed`) give exactly the word list of one pass."""

    df_spam: dict[str, int] = field(default_factory=dict)
    df_ham: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)  # every occurrence, both classes
    total_spam: dict[str, int] = field(default_factory=dict)  # occurrences in spam (freq)
    n_spam: int = 0
    n_ham: int = 0

    def __add__(self, other: DocCounts) -> DocCounts:
        out = DocCounts(n_spam=self.n_spam + other.n_spam, n_ham=self.n_ham + other.n_ham)
        for name in ("df_spam", "df_ham", "total", "total_spam"):
            merged = dict(getattr(self, name))
            for t, c in getattr(other, name).items():
                merged[t] = merged.get(t, 0) + c
            setattr(out, name, merged)
        return out


def count_docs(spam_docs: Iterable[Sequence[str]],
               ham_docs: Iterable[Sequence[str]] = ()) -> DocCounts:
    """The :class:`DocCounts` of tokenized spam and ham messages."""
    out = DocCounts()
    for docs, df, spam in ((spam_docs, out.df_spam, True), (ham_docs, out.df_ham, False)):
        total, in_spam = out.total, out.total_spam
        n = 0
        for doc in docs:
            n += 1
            for t in set(doc):
                df[t] = df.get(t, 0) + 1
            for t in doc:
                total[t] = total.get(t, 0) + 1
                if spam:
                    in_spam[t] = in_spam.get(t, 0) + 1
        if spam:
            out.n_spam = n
        else:
            out.n_ham = n
    return out


def select_frequent(
    spam_docs: Iterable[Sequence[str]], n: int
) -> list[tuple[int, str]]:
    """The original NNSpam list: the n most frequent words of the spam messages."""
    return frequent_from_counts(count_docs(spam_docs), n)


def frequent_from_counts(counts: DocCounts, n: int) -> list[tuple[int, str]]:
    """:func:`select_frequent` from counts: the n most frequent spam words, without
    stop words and noise, ties broken alphabetically."""
    stops = stop_words()
    ranked = sorted(
        ((c, w) for w, c in counts.total_spam.items() if w not in stops and not is_noise(w)),
        key=lambda cw: (-cw[0], cw[1]),
    )
    return ranked[:n]


def _entropy(p: float) -> float:
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def select_informative(
    spam_docs: Sequence[Sequence[str]],
    ham_docs: Sequence[Sequence[str]],
    n: int,
    method: str = "ig",
    min_df: int | None = None,
) -> list[tuple[int, str]]:
    """The n tokens whose presence best separates spam from ham.

    ``min_df``: a token must occur in at least that many training messages;
    rarer ones are as likely to be accidents of the sample as evidence.
    Ties are broken by total count, then alphabetically, so a list is
    reproducible.
    """
    return informative_from_counts(count_docs(spam_docs, ham_docs), n, method, min_df)


def informative_from_counts(counts: DocCounts, n: int, method: str = "ig",
                            min_df: int | None = None) -> list[tuple[int, str]]:
    """:func:`select_informative` from counts (see there)."""
    min_df = default_min_df() if min_df is None else int(min_df)
    df_spam, df_ham, total = counts.df_spam, counts.df_ham, counts.total
    n_s, n_h = counts.n_spam, counts.n_ham
    n_all = n_s + n_h
    if n_s == 0 or n_h == 0:
        raise WordListError("choosing words by information needs both spam and ham messages")
    h_class = _entropy(n_s / n_all)
    scored = []
    for t, tot in total.items():
        a = df_spam.get(t, 0)  # spam docs with t
        b = df_ham.get(t, 0)  # ham docs with t
        if a + b < min_df:
            continue
        if method == "ig":
            present = a + b
            absent = n_all - present
            cond = present / n_all * _entropy(a / present)
            if absent:
                cond += absent / n_all * _entropy((n_s - a) / absent)
            score = h_class - cond
        elif method == "chi2":
            c, d = n_s - a, n_h - b
            num = n_all * (a * d - b * c) ** 2
            den = (a + b) * (c + d) * (a + c) * (b + d)
            score = num / den if den else 0.0
        else:
            raise WordListError(f"unknown selection method {method!r} (use one of {METHODS})")
        scored.append((score, tot, t))
    scored.sort(key=lambda x: (-x[0], -x[1], x[2]))
    return [(tot, t) for _, tot, t in scored[:n]]


def build(
    spam_docs: Sequence[Sequence[str]],
    ham_docs: Sequence[Sequence[str]] | None,
    n: int,
    method: str,
    min_df: int | None = None,
) -> list[tuple[int, str]]:
    """Build a word list with the given method (``freq`` ignores ham)."""
    if method != "freq" and not ham_docs:
        if n < 1:
            raise WordListError(f"word list size must be at least 1, not {n}")
        raise WordListError(f"method {method!r} needs ham messages (--ham PATH)")
    counts = count_docs(spam_docs, ham_docs if method != "freq" and ham_docs else ())
    return from_counts(counts, n, method, min_df)


def default_min_df() -> int:
    """``wordlist.min_df`` of the built-in config: the one default of the setting."""
    from nnspam.config import DEFAULTS

    return int(DEFAULTS["wordlist"]["min_df"])


def from_counts(counts: DocCounts, n: int, method: str, min_df: int | None = None
                ) -> list[tuple[int, str]]:
    """:func:`build` from :class:`DocCounts` (of one pass, or summed over shards)."""
    if n < 1:
        raise WordListError(f"word list size must be at least 1, not {n}")
    if method == "freq":
        return frequent_from_counts(counts, n)
    if not counts.n_ham:
        raise WordListError(f"method {method!r} needs ham messages (--ham PATH)")
    return informative_from_counts(counts, n, method, min_df)


def _clean(word: str) -> str:
    return word.replace("\t", " ").replace("\n", " ").replace("\r", " ")


def write_wordlist(path: str | os.PathLike, entries: Iterable[tuple[int, str]],
                   comment: str | None = None) -> None:
    """Write ``count<TAB>word`` lines atomically (``-`` writes to stdout)."""
    lines: list[str] = []
    if comment:
        lines.extend(f"# {c}" for c in comment.splitlines())
    lines.extend(f"{count}\t{_clean(word)}" for count, word in entries)
    text = "\n".join(lines) + "\n"
    if str(path) == "-":
        import sys

        sys.stdout.write(text)
        return
    atomic_write_text(Path(path), text)


def read_wordlist(path: str | os.PathLike) -> list[tuple[int, str]]:
    """Read a word list file; blank and ``#`` lines are skipped, a line with
    no tab is taken as a bare word (count 0), duplicates are dropped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise WordListError(f"{path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise WordListError(f"{path}: not UTF-8 text") from None
    entries: list[tuple[int, str]] = []
    seen: set[str] = set()
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        count_s, sep, word = line.partition("\t")
        if not sep:
            count, word = 0, line.strip()
        else:
            try:
                count = int(count_s.strip() or 0)
            except ValueError:
                raise WordListError(f"{path}:{i}: count {count_s!r} is not a number") from None
        if word and word not in seen:
            seen.add(word)
            entries.append((count, word))
    if not entries:
        raise WordListError(f"{path}: no words in the word list")
    return entries
