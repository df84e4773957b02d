"""The command line end to end, on a small slice of the real SpamAssassin corpus."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from nnspam.services.runs.evaluate import roc_auc

from conftest import SA_SPLIT, SA_TAR, SMS_FILE, SMS_SPLIT, needs_corpora


def nnspam(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnspam", *args], capture_output=True,
                          input=stdin)


@pytest.fixture(scope="module")
def small_split(sa_corpus, tmp_path_factory):
    """Every 6th train message and every 4th test message of the real split."""
    d = tmp_path_factory.mktemp("split")
    lines = SA_SPLIT.read_text().splitlines()
    train = [ln for ln in lines[1:] if ln.endswith("\ttrain")][::6]
    test = [ln for ln in lines[1:] if ln.endswith("\ttest")][::4]
    f = d / "small.tsv"
    f.write_text("\n".join([lines[0], *train, *test]) + "\n")
    return f


@pytest.fixture(scope="module")
def small_model(small_split, sa_corpus, tmp_path_factory):
    m = tmp_path_factory.mktemp("model") / "m"
    r = nnspam("train", "--split", str(small_split), "--corpus", str(sa_corpus), "-m", str(m),
               "-n", "300", "--epochs", "15")
    assert r.returncode == 0, r.stderr.decode()
    return m


@needs_corpora
def test_train_classify_test_end_to_end(small_split, small_model, sa_corpus):
    r = nnspam("classify", "-m", str(small_model), "--format", "tsv",
               "--split", str(small_split), "--corpus", str(sa_corpus))
    assert r.returncode == 0, r.stderr.decode()
    rows = [ln.split("\t") for ln in r.stdout.decode().splitlines()]
    labels = {ln.split("\t")[0]: ln.split("\t")[1] for ln in small_split.read_text().splitlines()}
    assert len(rows) == sum(1 for ln in small_split.read_text().splitlines()
                            if ln.endswith("\ttest"))
    for path, sp, verdict in rows:
        assert path in labels
        assert len(sp.split(".")[1]) >= 6
        assert verdict == ("spam" if float(sp) >= 0.5 else "ham")
    y = np.array([labels[p] == "spam" for p, _, _ in rows], dtype=int)
    s = np.array([float(sp) for _, sp, _ in rows])
    assert s[y == 1].mean() > s[y == 0].mean()
    assert roc_auc(y, s) > 0.97

    t = nnspam("test", "-m", str(small_model), "--split", str(small_split), "--corpus",
               str(sa_corpus), "--json", str(small_model.parent / "ev.json"), "--errors")
    out = t.stdout.decode()
    assert t.returncode == 0, t.stderr.decode()
    for needle in ("Ham factor", "Spam factor", "Threshold", "False Negatives (of",
                   "False Positives (of", "MCC", "ROC AUC", "F1"):
        assert needle in out
    ev = json.loads((small_model.parent / "ev.json").read_text())
    assert ev["n_ham"] + ev["n_spam"] == len(rows)


@needs_corpora
def test_classify_paths_and_stdin(small_model, sa_corpus):
    one = sorted((sa_corpus / "spam").iterdir())[0]
    r = nnspam("classify", "-m", str(small_model), "--format", "tsv", str(one))
    assert r.returncode == 0
    path, sp, verdict = r.stdout.decode().strip().split("\t")
    assert path == str(one) and verdict in ("spam", "ham")
    r2 = nnspam("classify", "-m", str(small_model), "--format", "tsv", "-",
                stdin=one.read_bytes())
    assert r2.stdout.decode().split("\t")[1] == sp


@needs_corpora
def test_inspect_and_learn(small_model, sa_corpus, tmp_path):
    r = nnspam("inspect", "-m", str(small_model))
    out = r.stdout.decode()
    # the default email recipe merges 3 networks of 128 hidden units
    assert r.returncode == 0 and "Input words" in out
    assert "300 inputs -> 384 hidden (relu, 3 merged members of 128)" in out
    one = sorted((sa_corpus / "easy_ham").iterdir())[0]
    import shutil

    shutil.copytree(small_model, tmp_path / "m")
    before = nnspam("classify", "-m", str(tmp_path / "m"), "--format", "tsv", str(one))
    r = nnspam("learn", "-m", str(tmp_path / "m"), "--spam", str(one), "--epochs", "10")
    assert r.returncode == 0, r.stderr.decode()
    after = nnspam("classify", "-m", str(tmp_path / "m"), "--format", "tsv", str(one))
    assert float(after.stdout.split(b"\t")[1]) > float(before.stdout.split(b"\t")[1])


@needs_corpora
def test_build_wordlist_original_and_informative(sa_corpus, tmp_path):
    spam = sa_corpus / "spam"
    out = tmp_path / "words"
    r = nnspam("build-wordlist", str(spam), "-n", "50", "-o", str(out))
    assert r.returncode == 0, r.stderr.decode()
    lines = [ln for ln in out.read_text().splitlines() if not ln.startswith("#")]
    assert len(lines) == 50
    counts = [int(ln.split("\t")[0]) for ln in lines]
    assert counts == sorted(counts, reverse=True)
    words = [ln.split("\t")[1] for ln in lines]
    assert "the" not in words and not any(":" in w for w in words)
    r = nnspam("build-wordlist", str(spam), "--ham", str(sa_corpus / "easy_ham_2"), "-n", "40",
               "-o", str(tmp_path / "ig"))
    assert r.returncode == 0, r.stderr.decode()
    assert len((tmp_path / "ig").read_text().splitlines()) == 42  # two comment lines


@needs_corpora
def test_train_with_wordlist_file_and_paths(sa_corpus, tmp_path):
    words = tmp_path / "words"
    words.write_text("10\tclick\n9\tfree\n8\tremove\n7\tlinux\n6\tlist\n5\tmoney\n")
    ham = sorted((sa_corpus / "easy_ham").iterdir())[:40]
    spam = sorted((sa_corpus / "spam").iterdir())[:40]
    hd, sd = tmp_path / "ham", tmp_path / "spam"
    hd.mkdir()
    sd.mkdir()
    for f in ham:
        (hd / f.name).write_bytes(f.read_bytes())
    for f in spam:
        (sd / f.name).write_bytes(f.read_bytes())
    r = nnspam("train", "--ham", str(hd), "--spam", str(sd), "--wordlist", str(words),
               "-m", str(tmp_path / "m"), "--epochs", "5")
    assert r.returncode == 0, r.stderr.decode()
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["words"] == ["click", "free", "remove", "linux", "list", "money"]
    t = nnspam("test", "-m", str(tmp_path / "m"), "--ham", str(hd), "--spam", str(sd))
    assert t.returncode == 0 and b"False Positives (of 40)" in t.stdout


@pytest.mark.slow
@needs_corpora
def test_sms_train_and_classify(tmp_path):
    m = tmp_path / "sms"
    r = nnspam("train", "--sms", str(SMS_FILE), "--split", str(SMS_SPLIT), "-m", str(m),
               "-n", "300", "--epochs", "10")
    assert r.returncode == 0, r.stderr.decode()
    r = nnspam("classify", "-m", str(m), "--sms", str(SMS_FILE), "--split", str(SMS_SPLIT),
               "--format", "tsv")
    rows = r.stdout.decode().splitlines()
    assert len(rows) == 1694 and rows[0].startswith("line:")


def test_usage_errors_are_one_line(tmp_path):
    for args in (["classify", "-m", str(tmp_path / "none"), str(tmp_path)],
                 ["train", "-m", str(tmp_path / "m"), "--ham", str(tmp_path)],
                 ["classify", "--split", "x.tsv"],
                 ["test", "-m", "default", "--ham", str(tmp_path / "missing"), "--spam", "x"]):
        r = nnspam(*args)
        assert r.returncode == 2, args
        assert r.stderr.decode().startswith("nnspam: ") and b"Traceback" not in r.stderr


def test_help_texts():
    for cmd in ("train", "classify", "test", "inspect", "learn", "build-wordlist", "convert"):
        r = nnspam(cmd, "--help")
        assert r.returncode == 0 and len(r.stdout) > 300, cmd


def test_default_tar_corpus_is_readable():
    if not SA_TAR.is_file():
        pytest.skip("no shared corpus")
    from nnspam.mail.corpus import load_split_samples

    test = load_split_samples(str(SA_SPLIT), str(SA_TAR), "test")
    assert len(test) == 1855


@needs_corpora
def test_plot_writes_png(small_split, small_model, sa_corpus, tmp_path):
    png = tmp_path / "roc.png"
    r = nnspam("test", "-m", str(small_model), "--split", str(small_split), "--corpus",
               str(sa_corpus), "--plot", str(png))
    assert r.returncode == 0, r.stderr.decode()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10000


def test_convert_command(tmp_path):
    box = tmp_path / "box"
    box.write_bytes(b"From a@x Mon Jan  1 00:00:00 2024\nSubject: 1\n\none\n\n"
                    b"From b@x Mon Jan  1 00:00:00 2024\nSubject: 2\n\ntwo\n")
    r = nnspam("convert", "mbox", str(box), str(tmp_path / "md"))
    assert r.returncode == 0, r.stderr.decode()
    assert len(list((tmp_path / "md" / "new").iterdir())) == 2
    r = nnspam("convert", "mbox", str(tmp_path / "missing"), str(tmp_path / "md2"))
    assert r.returncode == 2 and b"missing" in r.stderr


def test_classifying_imports_only_numpy_and_the_standard_library(tmp_path):
    msg = tmp_path / "m.eml"
    msg.write_bytes(b"From: a@example.org\nSubject: hello\n\nfree money now\n")
    code = (
        "import sys\n"
        "from nnspam.model.core import Model\n"
        f"m = Model.load('default'); m.score([open({str(msg)!r}, 'rb').read()])\n"
        "heavy = {'sklearn', 'scipy', 'yaml', 'matplotlib', 'tensorflow', 'flask'}\n"
        "print(sorted(heavy & {k.split('.')[0] for k in sys.modules}))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_learn_refuses_the_shipped_model(tmp_path):
    msg = tmp_path / "m.eml"
    msg.write_bytes(b"Subject: x\n\ny\n")
    r = nnspam("learn", "-m", "default", "--spam", str(msg))
    assert r.returncode == 2 and b"read-only" in r.stderr
