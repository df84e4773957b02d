"""scripts/bench/stream.py on a small slice of an Enron stream, with every peer installed
here (under CI: every peer .ci/run installs), so the stream benchmark cannot rot: each
filter must follow the same classify-then-learn protocol, the counts must add up, filters
that are not installed must be skipped (not failed), and the reports (JSON, Markdown, PNG)
must be written."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import CORPORA, ROOT, SA_SPLIT, SA_TAR, need

SCRIPT = ROOT / "scripts" / "bench" / "stream.py"
ENRON_TAR = CORPORA / "enron-spam.tar.xz"
ENRON1 = CORPORA / "streams" / "enron1.index"
PEER_PROGRAMS = {"bogofilter": "bogofilter", "spamprobe": "spamprobe", "crm114": "crm"}
LIMIT = 60

needs_enron = pytest.mark.skipif(
    not all(p.is_file() for p in (ENRON_TAR, ENRON1, SA_TAR, SA_SPLIT)),
    reason=f"{CORPORA} (enron-spam.tar.xz, streams/, spamassassin.tar.xz) not found",
)


def _load():
    spec = importlib.util.spec_from_file_location("nnspam_stream_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while being made
    spec.loader.exec_module(mod)
    return mod


bench = _load()


def _peers() -> list[str]:
    """The peers to run: all under CI (a missing one fails there), else those here."""
    if os.environ.get("CI"):
        for prog in PEER_PROGRAMS.values():
            need(prog)
        return list(PEER_PROGRAMS)
    return [name for name, prog in PEER_PROGRAMS.items() if shutil.which(prog)]


def _check(report: dict, names: list[str], feedback: str) -> None:
    """Every filter ran and its counts add up under the feedback's protocol."""
    assert report["feedback"] == feedback
    assert report["messages"] == LIMIT == report["ham"] + report["spam"]
    assert report["ham"] > 0 and report["spam"] > 0
    assert list(report["filters"]) == names
    for name in names:
        r = report["filters"][name]
        assert "skipped" not in r, f"{name}: {r.get('skipped')}"
        assert r["messages"] == r["ham"] + r["spam"] == LIMIT
        assert (r["ham"], r["spam"]) == (report["ham"], report["spam"])
        assert 0 <= r["ham_lost"] <= r["ham"] and 0 <= r["spam_missed"] <= r["spam"]
        assert len(r["ham_lost_at"]) == r["ham_lost"]
        assert len(r["spam_missed_at"]) == r["spam_missed"]
        assert all(1 <= i <= LIMIT for i in r["ham_lost_at"] + r["spam_missed_at"])
        assert r["ham_lost_pct"] == pytest.approx(100 * r["ham_lost"] / r["ham"])
        assert r["spam_missed_pct"] == pytest.approx(100 * r["spam_missed"] / r["spam"])
        assert 0 <= r["one_minus_roca_pct"] <= 100
        if feedback == "all":
            assert r["corrections"] == LIMIT, name
        else:  # learned exactly the messages it got wrong
            assert r["corrections"] == r["ham_lost"] + r["spam_missed"], name
        assert r["msgs_per_s"] > 0 and r["total_s"] > 0
        for key in ("spam_missed_at_ham_loss_0.05_pct", "spam_missed_at_ham_loss_0.1_pct"):
            assert 0 <= r[key] <= 100, (name, key)


def _run(tmp_path: Path, *args: str) -> list[str]:
    names = ["nnspam", *_peers(), "reference"]  # the reference learner runs in-process
    status = bench.main(["--index", str(ENRON1), "--limit", str(LIMIT), "--out", str(tmp_path),
                         "--filters", ",".join(names), *args])
    assert status == 0
    return names


@pytest.mark.slow
@needs_enron
@pytest.mark.parametrize("feedback", ["errors", "all"])
def test_empty_start_from_the_archive(tmp_path, feedback):
    names = _run(tmp_path, "--corpus", str(ENRON_TAR), "--feedback", feedback,
                 "--start", "empty")
    report = json.loads((tmp_path / f"stream-enron1-{feedback}-empty.json").read_text())
    _check(report, names, feedback)
    assert report["corpus"] == str(ENRON_TAR)
    png = (tmp_path / f"stream-enron1-{feedback}-empty.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    md = (tmp_path / f"stream-enron1-{feedback}-empty.md").read_text()
    assert all(f"| {n} |" in md or f"| **{n}** |" in md for n in names)
    summary = (tmp_path / f"stream-summary-{feedback}-empty.md").read_text()
    assert summary.startswith("| stream | filter | ham lost |")
    assert sum(line.startswith("| enron1 |") for line in summary.splitlines()) == len(names)


@pytest.mark.slow
@needs_enron
def test_trained_start_with_errors_feedback(tmp_path):
    names = _run(tmp_path, "--corpus", str(ENRON_TAR), "--feedback", "errors",
                 "--start", "trained", "--train-limit", "100", "--train-corpus", str(SA_TAR),
                 "--train-split", str(SA_SPLIT))
    report = json.loads((tmp_path / "stream-enron1-errors-trained.json").read_text())
    _check(report, names, "errors")
    start = report["start_detail"]
    assert start["nnspam_model"] == "default"
    if len(names) > 1:  # peers to train
        assert start["peers_trained_on"] == 100 and start["overlap_with_training"] == 0
    for name in names[1:]:
        assert report["filters"][name]["train_s"] > 0
    assert (tmp_path / "stream-enron1-errors-trained.png").is_file()


@needs_enron
def test_filters_not_installed_are_skipped(tmp_path, monkeypatch):
    """With no peer on PATH the peers are noted as not installed; nnspam still runs."""
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    peers = list(PEER_PROGRAMS)
    status = bench.main(["--index", str(ENRON1), "--corpus", str(ENRON_TAR), "--limit", "20",
                         "--start", "empty", "--out", str(tmp_path),
                         "--filters", ",".join(["nnspam", *peers])])
    assert status == 0
    report = json.loads((tmp_path / "stream-enron1-errors-empty.json").read_text())
    assert report["filters"]["nnspam"]["messages"] == 20
    for name in peers:
        assert report["filters"][name]["skipped"].startswith("not installed"), name
    assert "Not run: bogofilter: not installed" in (
        tmp_path / "stream-enron1-errors-empty.md").read_text()


class _FakePeer:
    """A peer that says spam for every message and records what it was asked."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.meter = SimpleNamespace(peak_kb=0)  # as compare.Meter, nothing measured

    def version(self) -> str:
        return "fake 1"

    def start(self) -> None:
        self.calls.append(("start",))

    def classify(self, path: str) -> tuple[float, bool]:
        self.calls.append(("classify", path))
        return 1.0, True

    def learn(self, path: str, label: str) -> None:
        self.calls.append(("learn", path, label))

    def finish(self) -> None:
        self.calls.append(("finish",))


@pytest.mark.parametrize("feedback", ["errors", "all"])
def test_protocol_classify_then_learn(feedback):
    labels = ["ham", "spam", "ham"]
    stream = bench.Stream(name="s", kind="email", source="-", corpus="-",
                          items=[(lab, f"m{i}") for i, lab in enumerate(labels)],
                          read=lambda p: b"", files=["f0", "f1", "f2"])
    peer = _FakePeer()
    run = bench.run_peer(peer, stream, feedback, None)
    assert run.spam == [True, True, True]
    if feedback == "errors":  # only the hams were wrong
        assert peer.calls == [("start",), ("classify", "f0"), ("learn", "f0", "ham"),
                              ("classify", "f1"), ("classify", "f2"), ("learn", "f2", "ham"),
                              ("finish",)]
        assert run.learned == [True, False, True]
    else:
        assert peer.calls == [("start",), ("classify", "f0"), ("learn", "f0", "ham"),
                              ("classify", "f1"), ("learn", "f1", "spam"),
                              ("classify", "f2"), ("learn", "f2", "ham"), ("finish",)]
    r = bench.result(labels, run)
    assert (r["ham_lost"], r["spam_missed"], r["ham_lost_at"]) == (2, 0, [1, 3])


def test_corpus_is_found_beside_the_streams(tmp_path):
    corpora = tmp_path / "corpora"
    (corpora / "streams").mkdir(parents=True)
    (corpora / "enron-spam" / "enron1" / "ham").mkdir(parents=True)
    msg = corpora / "enron-spam" / "enron1" / "ham" / "1.txt"
    msg.write_text("Subject: hi\n\nhello\n")
    index = corpora / "streams" / "enron1.index"
    index.write_text("ham enron1/ham/1.txt\n")
    assert bench.resolve_corpus(index, "enron1/ham/1.txt", None) == corpora / "enron-spam"
    assert bench.resolve_corpus(index, "enron1/ham/1.txt", str(corpora)) == (
        corpora / "enron-spam")
    (corpora / "spamassassin.tar.xz").write_bytes(b"")
    assert bench.find_corpus("spam/1", "spamassassin", [corpora]) == (
        corpora / "spamassassin.tar.xz")


def test_header_break_only_for_a_bare_subject_line():
    hb = bench.header_break
    assert hb(b"Subject: hi\r\nbody line\r\n") == b"Subject: hi\r\n\r\nbody line\r\n"
    assert hb(b"Subject: hi\nbody\n") == b"Subject: hi\n\nbody\n"
    for same in (b"Subject: hi\r\n\r\nbody\r\n", b"Subject: hi\n\nbody",
                 b"From: a@b\nSubject: hi\n\nbody", b"Subject: only", b"Subject: x\n"):
        assert hb(same) == same
