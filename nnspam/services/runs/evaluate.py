"""Evaluation: spamicities and true labels -> the numbers a mail admin asks for.

The table follows the original NNSpam results page (ham factor, spam factor,
threshold, false negatives of N, false positives of M) and adds accuracy,
spam caught, ham lost, F1, MCC and ROC AUC (with 1-ROCA, the TREC figure).
NumPy only: no scikit-learn needed to test a model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from nnspam.services.verdict import is_spam

__all__ = ["Evaluation", "evaluate", "roc_auc", "roc_curve", "format_table", "plot",
           "HAM_LOSS_POINTS", "ham_loss_threshold", "spam_missed_at_ham_loss"]

# The ham losses a user chooses a threshold by (fractions of ham): 1 ham in 2,000 and in 1,000.
HAM_LOSS_POINTS = (0.0005, 0.001)


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (spam = positive), ties counted as half,
    from the Mann-Whitney rank statistic."""
    y = np.asarray(y)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int((y == 1).sum())
    n_neg = int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    i = 0
    n = len(scores)
    while i < n:
        j = i
        while j + 1 < n and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    sum_pos = ranks[y == 1].sum()
    return float((sum_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold."""
    y = np.asarray(y)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    ys = y[order]
    s = np.asarray(scores)[order]
    tps = np.cumsum(ys == 1)
    fps = np.cumsum(ys == 0)
    last = np.r_[np.diff(s) != 0, True]
    tpr = np.r_[0.0, tps[last] / max(1, (y == 1).sum())]
    fpr = np.r_[0.0, fps[last] / max(1, (y == 0).sum())]
    return fpr, tpr


def ham_loss_threshold(y: np.ndarray, scores: np.ndarray, fraction: float) -> float:
    """The lowest score threshold (spam when ``score >= threshold``) at which at most
    ``floor(fraction * n_ham)`` hams are lost (scored at or above it).

    The threshold is always one of the scores (or +inf when even the highest score holds
    too many hams): messages of equal score fall on the same side, so a ham tied with
    spams counts as lost with them (the conservative reading of a tie)."""
    y = np.asarray(y)
    s = np.asarray(scores, dtype=np.float64)
    n_ham = int((y == 0).sum())
    allowed = math.floor(fraction * n_ham + 1e-9)  # 0.001 * 3000 is not quite 3.0
    if not len(s):
        return math.inf
    order = np.argsort(-s, kind="mergesort")
    ss = s[order]
    hams = np.cumsum(y[order] == 0)
    last = np.r_[ss[1:] != ss[:-1], True]  # the last message of each run of equal scores
    ok = np.flatnonzero(last & (hams <= allowed))
    # ham counts only grow down the list: the lowest admissible run is the last one
    return float(ss[ok[-1]]) if len(ok) else math.inf


def spam_missed_at_ham_loss(y: np.ndarray, scores: np.ndarray, fraction: float) -> float:
    """Share of spam (0..1) missed at the threshold that loses at most ``fraction`` of
    the ham (``floor(fraction * n_ham)`` hams; :func:`ham_loss_threshold`): the spams
    scored below it. The figure a user picks a threshold by: e.g. ``fraction=0.0005``,
    "if I may lose 1 ham in 2,000, how much spam still gets through?". ``y`` is 1 for
    spam, 0 for ham; higher scores are spammier. NaN without spam."""
    y = np.asarray(y)
    s = np.asarray(scores, dtype=np.float64)
    n_spam = int((y == 1).sum())
    if n_spam == 0:
        return float("nan")
    t = ham_loss_threshold(y, s, fraction)
    return float((s[y == 1] < t).sum() / n_spam)


@dataclass
class Evaluation:
    ham_factor: float
    spam_factor: float
    threshold: float
    n_spam: int
    n_ham: int
    false_negatives: int
    false_positives: int
    accuracy: float
    spam_caught: float
    ham_lost: float
    precision: float
    f1: float
    mcc: float
    roc_auc: float
    # the unsure band (filter.unsure), when one is set: the messages inside it, which
    # every front files apart (.Unsure, X-NNSpam-Status: Unsure); the rows above are by
    # the threshold, as SpamAssassin's Yes/No
    unsure_band: tuple[float, float] | None = None
    unsure_ham: int = 0
    unsure_spam: int = 0

    @property
    def one_minus_roca_percent(self) -> float:
        return (1.0 - self.roc_auc) * 100.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["one_minus_roca_percent"] = self.one_minus_roca_percent
        return d


def evaluate(
    y: np.ndarray, spamicities: np.ndarray, threshold: float,
    ham_factor: float, spam_factor: float, unsure: tuple[float, float] | None = None,
) -> Evaluation:
    """Confusion counts at ``threshold`` plus threshold-free ROC AUC, and with an unsure
    band ``(low, high)`` the hams and spams inside it (:func:`nnspam.services.verdict.verdict`)."""
    y = np.asarray(y)
    s_all = np.asarray(spamicities, dtype=np.float64)
    inside = ((s_all >= unsure[0]) & (s_all < unsure[1]) if unsure is not None
              else np.zeros(len(y), dtype=bool))
    pred = is_spam(np.asarray(spamicities), threshold)
    tp = int(((y == 1) & pred).sum())
    fn = int(((y == 1) & ~pred).sum())
    fp = int(((y == 0) & pred).sum())
    tn = int(((y == 0) & ~pred).sum())
    n_spam, n_ham = tp + fn, tn + fp
    total = max(1, n_spam + n_ham)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / n_spam if n_spam else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = (tp * tn - fp * fn) / den if den else 0.0
    return Evaluation(
        ham_factor=ham_factor, spam_factor=spam_factor, threshold=threshold,
        n_spam=n_spam, n_ham=n_ham, false_negatives=fn, false_positives=fp,
        accuracy=(tp + tn) / total, spam_caught=recall,
        ham_lost=fp / n_ham if n_ham else 0.0, precision=precision, f1=f1, mcc=mcc,
        roc_auc=roc_auc(y, spamicities),
        unsure_band=None if unsure is None else (float(unsure[0]), float(unsure[1])),
        unsure_ham=int((inside & (y == 0)).sum()), unsure_spam=int((inside & (y == 1)).sum()),
    )


def format_table(ev: Evaluation) -> str:
    """The original NNSpam results table, extended."""
    def pct(x: float) -> str:
        return f"{x * 100:.2f}%"

    fn_rate = ev.false_negatives / ev.n_spam if ev.n_spam else 0.0
    rows = [
        ("Ham factor", f"{ev.ham_factor:g}", ""),
        ("Spam factor", f"{ev.spam_factor:g}", ""),
        ("Threshold", f"{ev.threshold:g}", ""),
        ("", "", ""),
        (f"False Negatives (of {ev.n_spam})", str(ev.false_negatives), pct(fn_rate)),
        (f"False Positives (of {ev.n_ham})", str(ev.false_positives), pct(ev.ham_lost)),
        ("", "", ""),
        ("Accuracy (True negatives)", pct(1 - ev.ham_lost) if ev.n_ham else "-", ""),
        ("Accuracy (True positives)", pct(ev.spam_caught) if ev.n_spam else "-", ""),
        ("Accuracy (all messages)", pct(ev.accuracy), ""),
        ("Spam caught", pct(ev.spam_caught), ""),
        ("Ham lost", pct(ev.ham_lost), ""),
        ("Precision", f"{ev.precision:.4f}", ""),
        ("F1", f"{ev.f1:.4f}", ""),
        ("MCC", f"{ev.mcc:.4f}", ""),
        ("ROC AUC", f"{ev.roc_auc:.5f}", f"1-ROCA {ev.one_minus_roca_percent:.3f}%"),
    ]
    if ev.unsure_band is not None:
        lo, hi = ev.unsure_band
        rows[6:6] = [(f"Unsure [{lo:g}, {hi:g}) (ham / spam)",
                      f"{ev.unsure_ham} / {ev.unsure_spam}",
                      f"{pct(ev.unsure_ham / ev.n_ham) if ev.n_ham else '-'} / "
                      f"{pct(ev.unsure_spam / ev.n_spam) if ev.n_spam else '-'}")]
    width = max(len(r[0]) for r in rows) + 4
    lines = []
    for a, b, c in rows:
        if not a:
            lines.append("")
            continue
        lines.append(f" {a:<{width}}{b:>8}   {c}".rstrip())
    return "\n".join(lines)


def plot(path: str, y: np.ndarray, spamicities: np.ndarray, threshold: float,
         title: str = "nnspam") -> None:
    """Draw the ROC curve (log-scale false positive axis) and the original
    page's per-message error chart (|target - spamicity|, spam first) to a PNG.
    Needs matplotlib (``pip install 'nnspam[plot]'``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError(
            "--plot needs matplotlib: pip install 'nnspam[plot]'"
        ) from None
    y = np.asarray(y)
    s = np.asarray(spamicities)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    fpr, tpr = roc_curve(y, s)
    ax1.plot(np.maximum(fpr * 100, 1e-3), (1 - tpr) * 100, drawstyle="steps-post")
    ax1.set_xscale("log")
    ax1.set_yscale("symlog", linthresh=0.1)
    ax1.set_ylim(0, 100)
    ax1.set_xlabel("ham lost (% of ham, log scale)")
    ax1.set_ylabel("spam missed (% of spam)")
    ax1.set_title(f"ROC, 1-ROCA = {(1 - roc_auc(y, s)) * 100:.3f}%")
    ax1.grid(True, which="both", alpha=0.3)
    order = np.r_[np.flatnonzero(y == 1), np.flatnonzero(y == 0)]
    err = np.abs(y[order] - s[order])
    wrong = (y[order] == 1) != is_spam(s[order], threshold)
    # vlines, not bars: a bar one pixel wide can vanish when the chart is drawn
    x = np.arange(len(order))
    ax2.vlines(x[~wrong], 0, err[~wrong], color="tab:blue", lw=0.8)
    ax2.vlines(x[wrong], 0, err[wrong], color="tab:red", lw=1.2,
               label=f"misclassified ({int(wrong.sum())})")
    ax2.legend(loc="upper right")
    ax2.axvline((y == 1).sum() - 0.5, color="k", lw=0.8)
    ax2.set_xlabel("message (spam first, then ham)")
    ax2.set_ylabel("error |target - spamicity|")
    ax2.set_title("error of every test message")
    ax2.set_ylim(0, 1)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
