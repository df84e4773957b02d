"""scripts/bench/compare.py on a small slice, with every peer CI installs, so the
comparison cannot rot: each filter must train, score and learn online, and the reports
(JSON, Markdown, PNG) must hold sane figures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SA_SPLIT, SMS_FILE, SMS_SPLIT, needs_corpora

SCRIPT = ROOT / "scripts" / "bench" / "compare.py"
PEER_PROGRAMS = {"bogofilter": "bogofilter", "spamprobe": "spamprobe", "crm114": "crm",
                 "spamassassin": "spamassassin"}


def _peers() -> list[str]:
    """The peers to run: all under CI (a missing one fails the test), else those here."""
    if os.environ.get("CI"):
        return list(PEER_PROGRAMS)
    return [name for name, prog in PEER_PROGRAMS.items() if shutil.which(prog)]


def _run(tmp_path: Path, *args: str) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args, "--out", str(tmp_path),
                           "--filters", ",".join(["nnspam", *_peers()])],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _check(report: dict, names: list[str], mode: str, abstains: tuple[str, ...] = ()) -> None:
    """Sane figures for every filter; ``abstains``: filters that may not have scored yet
    (SpamAssassin's Bayes answers nothing before it has learned 200 spam and 200 ham)."""
    assert report["mode"] == mode
    for name in names:
        r = report["filters"][name]
        assert "skipped" not in r, f"{name}: {r.get('skipped')}"
        assert r["n_ham"] > 0 and r["n_spam"] > 0
        assert 0 <= r["ham_lost_pct"] <= 100 and 0 <= r["spam_missed_pct"] <= 100
        assert 0 <= r["one_minus_roca_pct"] <= 100
        assert r["peak_mb"] > 0, name
        # Every filter must beat chance in ranking: a broken driver (all scores equal,
        # scores not matched to their messages) lands at 50% or worse.
        if name not in abstains:
            assert r["one_minus_roca_pct"] < 30, (name, r)


@pytest.mark.slow
@needs_corpora
def test_batch_comparison_on_a_spamassassin_slice(tmp_path, sa_corpus):
    _run(tmp_path, "--split", str(SA_SPLIT), "--corpus", str(sa_corpus), "--mode", "batch",
         "--limit", "700", "--per-process", "3")
    report = json.loads((tmp_path / "compare-spamassassin-batch.json").read_text())
    names = ["nnspam", *_peers()]
    _check(report, names, "batch")
    nn = report["filters"]["nnspam"]
    assert nn["one_minus_roca_pct"] < 5 and nn["ham_lost_pct"] < 5
    for name in names:
        r = report["filters"][name]
        assert r["train_s"] > 0 and r["bulk_msgs_per_s"] > 0 and r["one_process_msgs_per_s"] > 0
    md = (tmp_path / "compare-spamassassin-batch.md").read_text()
    assert md.startswith("| filter | ham lost (FP) |")
    assert all(f"| {n} |" in md or f"| **{n}** |" in md for n in names)
    png = (tmp_path / "compare-spamassassin-batch.png").read_bytes()
    assert png.startswith(b"\x89PNG")


@pytest.mark.slow
@needs_corpora
def test_online_comparison_on_an_sms_slice(tmp_path):
    _run(tmp_path, "--sms", str(SMS_FILE), "--split", str(SMS_SPLIT), "--mode", "online",
         "--limit", "400", "--no-plot")
    report = json.loads((tmp_path / "compare-sms-online.json").read_text())
    # 400 SMS hold about 50 spam: too few for SpamAssassin's Bayes to start scoring.
    _check(report, ["nnspam", *_peers()], "online", abstains=("spamassassin",))
    assert report["filters"]["nnspam"]["n_ham"] + report["filters"]["nnspam"]["n_spam"] == 400
    assert "seeded shuffle 1" in report["what"]


def test_sms_wrapping_is_the_same_minimal_message_for_every_filter():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import compare
    finally:
        sys.path.remove(str(SCRIPT.parent))
    raw = compare.wrap_sms("Free entry! Txt WIN to 80086 £100")
    head, _, body = raw.partition(b"\n\n")
    assert b"Content-Type: text/plain; charset=utf-8" in head
    assert body == "Free entry! Txt WIN to 80086 £100\n".encode()
    from nnspam.mail.tokens import sms_text_from_bytes
    assert sms_text_from_bytes(raw).strip() == "Free entry! Txt WIN to 80086 £100"


def test_subsample_keeps_both_classes_in_proportion_and_order():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import compare
    finally:
        sys.path.remove(str(SCRIPT.parent))
    from nnspam.mail.corpus import Sample
    samples = [Sample(f"m{i}", b"x", "spam" if i % 4 == 0 else "ham") for i in range(400)]
    sub = compare.subsample(samples, 100, seed=3)
    assert len(sub) == 100
    assert sum(s.label == "spam" for s in sub) == 25
    idx = [int(s.name[1:]) for s in sub]
    assert idx == sorted(idx)
    assert compare.subsample(samples, 100, seed=3) == sub
    assert compare.subsample(samples, None, seed=3) == samples


@pytest.mark.parametrize("results,fp,fn", [
    ([(0.9, True), (0.1, False), (0.8, True), (0.2, False)], 0, 0),
    ([(0.9, True), (0.6, True), (0.4, False), (0.2, False)], 1, 1),
])
def test_figures(results, fp, fn):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import compare
    finally:
        sys.path.remove(str(SCRIPT.parent))
    labels = ["spam", "ham", "spam", "ham"]
    fig = compare.figures(labels, results)
    assert (fig["fp"], fig["fn"]) == (fp, fn)
    assert fig["ham_lost_pct"] == 50.0 * fp and fig["spam_missed_pct"] == 50.0 * fn
