"""Figures of a stream (issue 23, parts 3-5): a score written with full resolution
(``nnspam stream --out``), the spam missed at a fixed ham loss
(:func:`nnspam.services.runs.evaluate.spam_missed_at_ham_loss`), and the TREC reference learner
as a peer of ``scripts/bench/stream.py``, on small hand-made streams."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import sys

import numpy as np
import pytest

from nnspam.front import cli
from nnspam.services.runs import stream as nn_stream
from nnspam.services.runs.evaluate import (
    HAM_LOSS_POINTS,
    ham_loss_threshold,
    roc_auc,
    spam_missed_at_ham_loss,
)
from nnspam.services.runs.stream import Step, ham_loss_key, summarize

from conftest import ROOT, make_message
from helpers import stream_corpus

SCRIPT = ROOT / "scripts" / "bench" / "stream.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("nnspam_stream_bench_figures", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while being made
    spec.loader.exec_module(mod)
    return mod


bench = _load_bench()


# -- spam missed at a fixed ham loss ------------------------------------------------------

def _brute(y, s, fraction):
    """The definition, by trying every threshold: the lowest one (of the scores, or above
    them all) with at most floor(fraction * hams) hams at or above it."""
    y, s = np.asarray(y), np.asarray(s, dtype=float)
    allowed = math.floor(fraction * (y == 0).sum() + 1e-9)
    ok = [t for t in [*s, math.inf] if ((s >= t) & (y == 0)).sum() <= allowed]
    t = min(ok)
    return t, ((s < t) & (y == 1)).sum() / (y == 1).sum()


# six spams and four hams; a ham tied with a spam at 7 and with two spams at 5
Y = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
S = [9, 7, 5, 5, 3, 1, 7, 5, 2, 0]


@pytest.mark.parametrize("fraction, threshold, missed", [
    (0.0, 9, 5 / 6),  # no ham may be lost: the ham at 7 takes the spam at 7 with it
    (0.25, 7, 4 / 6),  # one ham: the ham at 5 would take its two tied spams (they are missed)
    (0.3, 7, 4 / 6),  # floor(0.3 * 4) = 1 ham
    (0.5, 3, 1 / 6),  # two hams (7 and 5): everything down to 3
    (0.75, 1, 0.0),  # three hams: every spam caught
    (1.0, 0, 0.0),
])
def test_spam_missed_at_ham_loss_hand_made_with_ties(fraction, threshold, missed):
    assert ham_loss_threshold(Y, S, fraction) == threshold
    assert spam_missed_at_ham_loss(Y, S, fraction) == pytest.approx(missed)
    assert (threshold, missed) == pytest.approx(_brute(Y, S, fraction))
    # order does not matter
    order = np.random.default_rng(0).permutation(len(Y))
    assert spam_missed_at_ham_loss(np.array(Y)[order], np.array(S)[order],
                                   fraction) == pytest.approx(missed)


def test_spam_missed_at_ham_loss_edges():
    assert math.isnan(spam_missed_at_ham_loss([0, 0], [1.0, 2.0], 0.5))  # no spam
    assert spam_missed_at_ham_loss([1, 1], [1.0, 2.0], 0.001) == 0.0  # no ham: all caught
    # the spammiest message is a ham: at 0 hams lost no threshold catches anything
    assert ham_loss_threshold([0, 1, 1], [3.0, 2.0, 1.0], 0.0) == math.inf
    assert spam_missed_at_ham_loss([0, 1, 1], [3.0, 2.0, 1.0], 0.0) == 1.0
    # one tied score for everything: with a ham in it, it is all or nothing
    assert spam_missed_at_ham_loss([0, 1, 1], [1.0, 1.0, 1.0], 0.0) == 1.0
    assert spam_missed_at_ham_loss([0, 1, 1], [1.0, 1.0, 1.0], 1.0) == 0.0


def test_the_two_fixed_ham_losses_on_2000_hams():
    """0.05% of 2,000 hams is 1 ham, 0.1% is 2 (floor); scores with many ties."""
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(2000, int), np.ones(500, int)]
    s = np.r_[rng.integers(-50, 5, 2000), rng.integers(-5, 50, 500)].astype(float)
    for fraction in HAM_LOSS_POINTS:
        t, missed = _brute(y, s, fraction)
        assert ham_loss_threshold(y, s, fraction) == t
        assert spam_missed_at_ham_loss(y, s, fraction) == pytest.approx(missed)
        assert ((s >= t) & (y == 0)).sum() <= round(fraction * 2000)
    assert ham_loss_threshold(y, s, 0.0005) >= ham_loss_threshold(y, s, 0.001)


def test_summarize_gives_both_fixed_ham_loss_figures():
    steps = [Step(f"m{i}", "spam" if y else "ham", 0.5, float(s), "spam" if s > 0 else "ham",
                  True) for i, (y, s) in enumerate(zip(Y, S, strict=True))]
    r = summarize(steps)
    assert ham_loss_key(0.0005) == "spam_missed_at_ham_loss_0.05_percent"
    assert ham_loss_key(0.001) == "spam_missed_at_ham_loss_0.1_percent"
    for fraction in HAM_LOSS_POINTS:  # 4 hams: 0 may be lost at either
        assert r[ham_loss_key(fraction)] == pytest.approx(100 * 5 / 6)


# -- a score that ranks: nnspam stream --out ------------------------------------------------

def _read_out(path):
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    assert all(len(r) == 5 for r in rows)
    y = np.array([r[1] == "spam" for r in rows], dtype=int)
    return rows, y


# Spamicities that print alike at 6 decimals (1.000000, 0.000000) but rank apart; the hams
# sit between the spams, so the rounded column ranks them wrong.
FAKE = [("spam", 14.7), ("ham", 15.05), ("spam", 16.1), ("ham", -16.2), ("spam", -15.4),
        ("ham", -3.0), ("spam", 3.0), ("ham", 15.000000000000002)]


def test_stream_out_writes_the_logit_in_full(tmp_path, capsys, monkeypatch):
    """Two spams whose spamicities both round to 1.000000 get distinct printed scores, and
    1-ROCA from the printed file equals the replay's own, to the last bit (the SPAMICITY
    column, 6 decimals, gives another)."""
    box = stream_corpus(tmp_path, 4)
    items = nn_stream.read_index(box / "index")

    def fake_replay(model, items_, read, feedback="errors", rule=None, adaptive=True,
                    tokenizers=0):
        for (judge, z), (_, path) in zip(FAKE, items_, strict=False):
            sp = 1.0 / (1.0 + math.exp(-z))
            yield Step(path, judge, sp, z, "spam" if sp >= 0.5 else "ham", False)

    monkeypatch.setattr(nn_stream, "replay", fake_replay)
    out = tmp_path / "out.tsv"
    assert cli.main(["stream", "--index", str(box / "index"), "--feedback", "none",
                     "--out", str(out)]) == 0
    rows, y = _read_out(out)
    assert len(rows) == len(FAKE) == len(items)
    assert [r[2] for r in rows[:3]] == ["1.000000"] * 3  # the old column ties them
    printed = [float(r[4]) for r in rows]
    assert printed == [z for _, z in FAKE]  # read back exactly
    assert rows[1][4] != rows[7][4]  # 15.05 and 15.000000000000002 print apart
    assert len({r[4] for r in rows}) == len(rows)
    steps = [Step(p, j, 0.0, z, "ham", False) for (j, z), (_, p) in zip(FAKE, items,
                                                                          strict=False)]
    in_memory = summarize(steps)["one_minus_roca_percent"]
    from_file = (1.0 - roc_auc(y, np.array(printed))) * 100.0
    assert from_file == in_memory
    from_rounded = (1.0 - roc_auc(y, np.array([float(r[2]) for r in rows]))) * 100.0
    assert from_rounded != in_memory  # what 6 decimals gave before
    err = capsys.readouterr().err
    assert "spam missed at the threshold that loses at most 0.05% of ham: " in err
    assert "0.1% of ham: " in err


def test_stream_out_scores_are_the_replay_s_own(tmp_path, monkeypatch):
    """With the real replay (shipped model, corrections): every printed score reads back as
    the replay's Step.score, and 1-ROCA from the file is the summary's."""
    box = stream_corpus(tmp_path, 6)
    seen: list[Step] = []
    real = nn_stream.replay

    def spy(*a, **k):
        for st in real(*a, **k):
            seen.append(st)
            yield st

    monkeypatch.setattr(nn_stream, "replay", spy)
    out = tmp_path / "out.tsv"
    assert cli.main(["stream", "--index", str(box / "index"), "--feedback", "errors",
                     "--out", str(out)]) == 0
    rows, y = _read_out(out)
    assert [float(r[4]) for r in rows] == [st.score for st in seen]
    assert all(repr(float(r[4])) == r[4] for r in rows)
    assert [r[3] for r in rows] == [st.verdict for st in seen]
    from_file = (1.0 - roc_auc(y, np.array([float(r[4]) for r in rows]))) * 100.0
    assert from_file == summarize(seen)["one_minus_roca_percent"]


def test_tokenizing_ahead_gives_the_same_replay(tmp_path, monkeypatch):
    """Other processes tokenizing the next block (``--tokenizers``) change nothing: the
    same steps, score for score, over blocks smaller than the stream."""
    from nnspam import config as C
    from nnspam.model.correct import rule_from_config

    box = stream_corpus(tmp_path, 8)
    items = nn_stream.read_index(box / "index")
    read = nn_stream.load_messages([p for _, p in items], box)
    monkeypatch.setattr(nn_stream, "TOKENIZE_BLOCK", 5)
    rule = rule_from_config(C.DEFAULTS)
    runs = []
    for n in (0, 1):
        model = nn_stream.start_model("default", C.DEFAULTS)
        runs.append([(s.path, s.score, s.verdict, s.learned)
                     for s in nn_stream.replay(model, items, read, "all", rule, tokenizers=n)])
    assert runs[0] == runs[1] and len(runs[0]) == 16


# -- the reference learner as a peer --------------------------------------------------------

def test_reference_features_are_binary_hashed_4grams_of_the_first_3000_bytes():
    feat = bench.features
    raw = make_message("hello", "x" * 5000 + " body")
    f = feat(raw)
    assert f.dtype == np.int64 and np.all(np.diff(f) > 0)  # sorted, each slot once
    assert 0 <= f.min() and f.max() < 2 ** 22
    assert np.array_equal(feat(raw[:3000]), f)  # bytes after 3,000 are not read
    assert np.array_equal(feat(raw[:3000] + b"anything else"), f)
    assert len(feat(b"abcdabcdabcd")) == 4  # abcd, bcda, cdab, dabc
    assert len(feat(b"abc")) == 0
    assert not np.array_equal(feat(b"Subject: a"), feat(b"subject: a"))  # raw bytes


def test_reference_step_is_the_logistic_gradient():
    lr = bench.ReferenceLR()
    slots = bench.features(b"Subject: cheap pills\n\nbuy now")
    assert lr.score(slots) == 0.0
    lr.learn(slots, True)  # sigmoid(0) = 0.5: every present slot +0.001
    assert np.allclose(lr.w[slots], 0.001) and lr.w.sum() == pytest.approx(0.001 * len(slots))
    z = lr.score(slots)
    assert z == pytest.approx(0.001 * len(slots))
    lr.learn(slots, False)
    assert np.allclose(lr.w[slots], 0.001 - 0.002 / (1 + math.exp(-z)))


def _stream(tmp_path, n=30):
    """A hand-made stream, alternately spam and ham, written to files."""
    box = stream_corpus(tmp_path, n)
    items = nn_stream.read_index(box / "index")
    read = nn_stream.load_messages([p for _, p in items], box)
    return box, bench.Stream(name="hand", kind="email", source="-", corpus=str(box),
                             items=items, read=read, files=[str(box / p) for _, p in items])


@pytest.mark.parametrize("feedback", ["all", "errors"])
def test_reference_peer_learns_a_hand_made_stream(tmp_path, feedback):
    _, stream = _stream(tmp_path)
    peer = bench.StreamReference(name="reference", kind="email", db=tmp_path / "db")
    run = bench.run_peer(peer, stream, feedback, None)
    labels = stream.labels
    assert run.scores[0] == 0.0 and run.spam[0] is False  # nothing learned yet: ham
    assert run.spam == [s > 0 for s in run.scores]
    assert run.peak_mb is None  # in this process
    wrong = [(s > 0) != (lab == "spam") for s, lab in zip(run.scores, labels, strict=True)]
    assert not any(wrong[10:])  # learned after a few messages
    if feedback == "all":
        assert all(run.learned)
    else:
        assert run.learned == wrong
    r = bench.result(labels, run)
    assert r["one_minus_roca_pct"] < 10
    for fraction in HAM_LOSS_POINTS:
        key = bench.ham_loss_key(fraction)
        y = np.array([lab == "spam" for lab in labels], dtype=int)
        assert r[key] == pytest.approx(100 * spam_missed_at_ham_loss(y, run.scores, fraction))


def test_reference_in_the_bench_reports_and_trained_start(tmp_path):
    """--filters reference end to end on a hand-made stream and a hand-made split: trained
    first on the split's train part (one pass of the same steps, in its order), then the
    stream; JSON, Markdown and the summary carry it and the fixed-ham-loss figures."""
    box, _ = _stream(tmp_path, 20)
    train = tmp_path / "train"
    (train / "t").mkdir(parents=True)
    rows = ["path\tlabel\tsplit"]
    for i, kind in itertools.product(range(5), ("spam", "ham")):
        p = train / "t" / f"{kind}{i}"
        p.write_bytes(make_message(*(("cheap pills", "buy cheap pills now") if kind == "spam"
                                     else ("meeting notes", "hi bob, the notes"))))
        rows.append(f"t/{kind}{i}\t{kind}\ttrain")
    split = tmp_path / "split.tsv"
    split.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert bench.main(["--index", str(box / "index"), "--corpus", str(box), "--filters",
                       "reference", "--feedback", "errors", "--start", "trained",
                       "--train-split", str(split), "--train-corpus", str(train),
                       "--out", str(out), "--no-plot"]) == 0
    rep = json.loads((out / "stream-index-errors-trained.json").read_text())
    r = rep["filters"]["reference"]
    assert rep["start_detail"]["peers_trained_on"] == 10 and r["train_s"] > 0
    assert r["messages"] == 40 and r["ham_lost"] + r["spam_missed"] == r["corrections"]
    assert r["ham_lost"] + r["spam_missed"] <= 2  # trained first: (almost) right from the start
    assert "spam_missed_at_ham_loss_0.05_pct" in r and "spam_missed_at_ham_loss_0.1_pct" in r
    md = (out / "stream-index-errors-trained.md").read_text()
    assert "| spam missed at 0.05% ham | spam missed at 0.1% ham |" in md
    assert "| reference |" in md and "in-process" in md
    summary = (out / "stream-summary-errors-trained.md").read_text()
    assert "| index | reference |" in summary and "spam missed at 0.05% ham" in summary
    assert "reference" in bench.DEFAULT_FILTERS


def test_stream_progress_shows_rate_and_running_figures(tmp_path, capsys):
    """Issue 23, part 6: ``nnspam stream --progress`` says every 500 messages how fast it
    goes and how it does so far (ham lost, spam missed, 1-ROCA)."""
    box = stream_corpus(tmp_path, 260)  # 520 messages
    out = tmp_path / "out.tsv"
    assert cli.main(["stream", "--index", str(box / "index"), "--feedback", "errors",
                     "--progress", "--tokenizers", "1", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("nnspam stream: 500/520")]
    assert len(line) == 1, err
    assert "msg/s" in line[0] and "ham lost" in line[0] and "1-ROCA" in line[0]
    assert len(out.read_text().splitlines()) == 520
