"""The one verdict rule: spamicity and threshold -> ``spam`` or ``ham``.

Every front decides the same way through this module: the pipe filter and the scoring
server (the X-NNSpam and spamd answers), the maildir daemon and the SMS store (through
:class:`nnspam.services.delivery.sorter.Sorter`), ``nnspam classify``/``test``,
``nnspam stream``, the online learner and the evaluation tables. A message is spam when
its spamicity is at or above the threshold (``spamicity >= threshold``: exactly at the
threshold is spam, as the ``X-NNSpam-Status`` header always said); a NaN spamicity is never spam.

Why one module: the comparison was written inline at seven sites in four files, and a
change of rule (an ``unsure`` band, a different side for the tie) has to reach all of
them at once. :func:`verdict` takes the optional unsure band ``(low, high)``
(``filter.unsure``): a spamicity in ``low <= s < high`` is ``unsure``, in every front and
command; SpamAssassin's two-valued answers count spam from the band's top
(:func:`sa_threshold`).

Standard library only, and nothing imported at module level beyond it: the pipe
filter imports this before it knows whether it will classify at all.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

__all__ = ["SPAM", "HAM", "UNSURE", "VERDICTS", "is_spam", "verdict", "score_tokens",
           "sa_threshold", "sa_points", "SCORE_MODES", "SenderLists"]

#: How a spamicity becomes SpamAssassin points (``serve.score_mode``, :func:`sa_points`).
SCORE_MODES = ("spamicity", "log-odds")

SPAM, HAM, UNSURE = "spam", "ham", "unsure"
VERDICTS = (SPAM, HAM, UNSURE)


def is_spam(spamicity: Any, threshold: float) -> Any:
    """Whether ``spamicity`` is on the spam side of ``threshold`` (at it counts as spam).

    Works element-wise on a NumPy array (``nnspam test``'s tables) as well as on one
    float; the Yes/No of the headers and of spamd's ``Spam:`` line, which ignore the
    unsure band."""
    return spamicity >= threshold


def sa_threshold(threshold: float, unsure: tuple[float, float] | None) -> float:
    """The threshold of SpamAssassin's two-valued answers (spamd's ``Spam: True|False ;
    score / required``, ``X-Spam-Flag``, ``X-Spam-Status: Yes|No``): SpamAssassin has no
    unsure, so there spam is what nnspam files as spam, at or above the top of the unsure
    band when one is set (an unsure message answered ``Spam: True`` made spamc -c, Exim's
    ``spam =`` and spamass-milter reject mail that nnspam's own header called Unsure)."""
    return float(unsure[1]) if unsure is not None else float(threshold)


def sa_points(spamicity: float, threshold: float, scale: float,
              mode: str = "spamicity") -> float:
    """SpamAssassin points of a spamicity (spamd's ``Spam:`` line, ``X-Spam-Status``,
    ``X-Spam-Level``, REPORT). ``spamicity``: ``scale * spamicity`` (10: 0 to 10 points,
    the threshold 0.5 at 5.0). ``log-odds``: the threshold at ``scale * threshold`` and
    ``scale / 10`` points per logit beyond it, so a message as sure as SpamAssassin's 12
    points sits at 12 (spamicity 0.9991 at threshold 0.5), and rules written for
    SpamAssassin's open scale (Exim's ``$spam_score_int > 120``) fire, where the first
    mapping never passes 10."""
    base = scale * threshold
    if mode != "log-odds":
        return scale * spamicity
    p = min(max(spamicity, 1e-12), 1.0 - 1e-12)
    t = min(max(threshold, 1e-12), 1.0 - 1e-12)
    return base + scale / 10.0 * (math.log(p / (1.0 - p)) - math.log(t / (1.0 - t)))


def verdict(spamicity: float, threshold: float,
            unsure: tuple[float, float] | None = None) -> str:
    """``spam`` or ``ham`` for one spamicity; ``unsure`` when an unsure band
    ``(low, high)`` is given and ``low <= spamicity < high``."""
    if unsure is not None and unsure[0] <= spamicity < unsure[1]:
        return UNSURE
    return SPAM if is_spam(spamicity, threshold) else HAM


class SenderLists:
    """The user's allow and deny lists of senders (config ``lists:``), applied before the
    model by every front that scores mail (:func:`score_tokens`): a message whose From
    address or domain is allowed scores 0 (ham), one denied scores 1 (spam); allow wins
    when both match (a lost ham costs more than a missed spam). An entry is an address
    (``bob@example.org``) or a domain (``example.org`` or ``@example.org``: it and every
    domain below it). Matched on the From header's address as the tokenizer reads it
    (``from:addr:``), which a sender can forge: allow what spammers do not imitate."""

    def __init__(self, allow: Sequence[str] = (), deny: Sequence[str] = ()) -> None:
        self.allow = self._parse(allow, "allow")
        self.deny = self._parse(deny, "deny")

    @staticmethod
    def _parse(entries: Sequence[str], what: str) -> tuple[frozenset[str], frozenset[str]]:
        addrs, domains = set(), set()
        for e in entries:
            if not isinstance(e, str) or not e.strip() or any(c.isspace() for c in e.strip()):
                raise ValueError(f"lists.{what}: {e!r} is not an address or a domain")
            e = e.strip().lower()
            if e.startswith("@"):
                domains.add(e[1:])
            elif "@" in e:
                addrs.add(e)
            else:
                domains.add(e)
        return frozenset(addrs), frozenset(domains)

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> SenderLists | None:
        """The lists of a loaded config, None when both are empty (ValueError if bad)."""
        sec = cfg.get("lists") or {}
        if not sec.get("allow") and not sec.get("deny"):
            return None
        return cls(sec.get("allow") or (), sec.get("deny") or ())

    def __or__(self, other: SenderLists | None) -> SenderLists:
        """Both lists in one: the site's ``lists:`` and a user's own (serve.user_lists)."""
        if other is None:
            return self
        out = SenderLists()
        out.allow = (self.allow[0] | other.allow[0], self.allow[1] | other.allow[1])
        out.deny = (self.deny[0] | other.deny[0], self.deny[1] | other.deny[1])
        return out

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> SenderLists:
        """A user's lists from a YAML file holding ``allow:`` and ``deny:`` (each a list
        of addresses and domains, as the config's ``lists:``); ValueError naming the file
        when it is not that, OSError when it cannot be read."""
        import yaml

        with open(path, encoding="utf-8") as fh:
            try:
                data = yaml.safe_load(fh)
            except yaml.YAMLError as exc:
                raise ValueError(f"{path}: not YAML ({str(exc).splitlines()[0]})") from None
        if data is None:
            data = {}
        if not isinstance(data, dict) or set(data) - {"allow", "deny"} or not all(
                isinstance(v, list) or v is None for v in data.values()):
            raise ValueError(f"{path}: must hold 'allow:' and 'deny:' lists of addresses and "
                             "domains")
        try:
            return cls(data.get("allow") or (), data.get("deny") or ())
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    @staticmethod
    def _hit(tokens: Sequence[str], lists: tuple[frozenset[str], frozenset[str]]) -> bool:
        addrs, domains = lists
        for t in tokens:
            if t.startswith("from:addr:"):
                addr = t[len("from:addr:"):]
                if addr in addrs:
                    return True
                host = addr.rpartition("@")[2].split(".")
                if any(".".join(host[i:]) in domains for i in range(len(host))):
                    return True
        return False

    def verdict(self, tokens: Sequence[str]) -> str | None:
        """HAM (allowed), SPAM (denied) or None (the model decides)."""
        if self._hit(tokens, self.allow):
            return HAM
        if self._hit(tokens, self.deny):
            return SPAM
        return None


class ScoringModel(Protocol):
    """What :func:`score_tokens` scores with (:class:`nnspam.model.core.Model`)."""

    def spamicity_of_tokens(self, token_lists: Sequence[Sequence[str]],
                            ham_factor: float | None = None,
                            spam_factor: float | None = None) -> Iterable[float]: ...


def score_tokens(model: ScoringModel, token_lists: Sequence[Sequence[str]], threshold: float,
                 ham_factor: float | None = None, spam_factor: float | None = None,
                 unsure: tuple[float, float] | None = None,
                 lists: SenderLists | None = None) -> list[tuple[float, str]]:
    """(spamicity, verdict) of each tokenized message: the model's
    :meth:`~nnspam.model.core.Model.spamicity_of_tokens` at the ham bias given (the
    model's own where None), then :func:`verdict` at ``threshold``.

    The one scoring routine of every front, so that a message gets the same number
    and the same verdict whichever of them sees it."""
    sps = [float(x) for x in model.spamicity_of_tokens(token_lists, ham_factor, spam_factor)]
    if lists is not None:  # the user's lists before the model: 0 allowed, 1 denied
        for i, toks in enumerate(token_lists):
            listed = lists.verdict(toks)
            if listed is not None:
                sps[i] = 0.0 if listed == HAM else 1.0
    return [(sp, verdict(sp, threshold, unsure)) for sp in sps]
