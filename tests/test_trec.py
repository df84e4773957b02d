"""The TREC scripts (scripts/trec/) under a minimal driver of the TREC protocol.

Like the toolkit's run.sh: ``initialize``; for each message in a fixed order
``classify FILE`` (one output line, checked with a strict pattern), then
``train JUDGE FILE CLASS TFILE`` with the gold label; ``finalize``. Every
command is a real process started from another working directory.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnspam.mail.corpus import read_split
from nnspam.services.runs.evaluate import roc_auc

from conftest import SA_SPLIT, needs_corpora

TREC = Path(__file__).resolve().parents[1] / "scripts" / "trec"
# the score is the logit in full (repr), spam from 0 (spamicity 0.5) up
LINE = re.compile(r"\Aclass=(spam|ham) score=(-?(?:[0-9.]+(?:e[-+][0-9]+)?|inf)) tfile=-\n\Z")


def _env(tmp_path: Path, model: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["NNSPAM_TREC_DIR"] = str(tmp_path / "state")
    env.pop("NNSPAM_TREC_MODEL", None)
    env.pop("NNSPAM_TREC_KIND", None)
    env.pop("NNSPAM_TREC_CONFIG", None)
    if model:
        env["NNSPAM_TREC_MODEL"] = model
    # The interpreter of this test run has nnspam: put it first, as an active venv does.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> str:
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"{cmd[0]} failed ({p.returncode}): {p.stderr}"
    return p.stdout


def _stream(sa_corpus: Path, n: int) -> list[tuple[Path, str]]:
    rows = read_split(str(SA_SPLIT))
    random.Random(1).shuffle(rows)
    return [(sa_corpus / path, label) for path, label, _ in rows[:n]]


def drive(msgs: list[tuple[Path, str]], env: dict[str, str], cwd: Path) -> tuple[list, list]:
    """The TREC protocol; returns the scores and the gold labels (1 = spam)."""
    assert _run([str(TREC / "initialize")], env, cwd) == ""
    state = Path(env["NNSPAM_TREC_DIR"])
    scores, gold = [], []
    for path, label in msgs:
        before = (state / "CURRENT").read_text()
        out = _run([str(TREC / "classify"), str(path)], env, cwd)
        m = LINE.match(out)
        assert m, f"bad classify output {out!r}"
        verdict, score = m.group(1), float(m.group(2))
        assert repr(score) == m.group(2)  # full precision: the text reads back as the float
        assert verdict == ("spam" if score >= 0 else "ham")
        assert (state / "CURRENT").read_text() == before, "classify must not change the state"
        assert _run([str(TREC / "train"), label, str(path), verdict, "-"], env, cwd) == ""
        assert (state / "CURRENT").read_text() != before, "train must save a new state"
        scores.append(score)
        gold.append(1 if label == "spam" else 0)
    assert _run([str(TREC / "finalize")], env, cwd) == ""
    return scores, gold


@pytest.mark.slow
@needs_corpora
def test_trec_protocol_untrained_learns(sa_corpus, tmp_path):
    """100 messages from an untrained network: the second half is ranked well
    (a learner that does not learn scores every message alike: AUC 0.5) and
    misclassifies fewer messages than calling everything ham would."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = _env(tmp_path)
    # n = 2000 instead of the default 8000 keeps 200 processes quick (a quarter
    # of the state to load and save); it also exercises NNSPAM_TREC_CONFIG.
    cfg = tmp_path / "config.yaml"
    cfg.write_text("online:\n  inputs: 2000\n")
    env["NNSPAM_TREC_CONFIG"] = str(cfg)
    scores, gold = drive(_stream(sa_corpus, 100), env, cwd)
    from nnspam.services.runs.online import OnlineFilter

    assert OnlineFilter.load(env["NNSPAM_TREC_DIR"]).model.network.n_inputs == 2000
    y, s = np.array(gold), np.array(scores)
    assert 10 < y[50:].sum() < 40  # both classes in the second half
    assert roc_auc(y[50:], s[50:]) >= 0.9
    errors = (s >= 0) != (y == 1)
    assert errors[50:].sum() < y[50:].sum()
    assert errors[50:].sum() < errors[:50].sum()


@pytest.mark.slow
@needs_corpora
def test_trec_protocol_from_default_model(sa_corpus, tmp_path):
    """NNSPAM_TREC_MODEL=default: the shipped model is right from the start."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    scores, gold = drive(_stream(sa_corpus, 20), _env(tmp_path, "default"), cwd)
    y, s = np.array(gold), np.array(scores)
    assert 3 <= y.sum() <= 17
    assert int(((s >= 0) != (y == 1)).sum()) <= 1
    assert roc_auc(y, s) >= 0.98


def test_trec_usage_errors(tmp_path):
    env = _env(tmp_path)
    # Before initialize there is no state: a clear error, not a traceback.
    msg = tmp_path / "m.eml"
    msg.write_bytes(b"From: a@example.org\nSubject: hi\n\nhello\n")
    p = subprocess.run([str(TREC / "classify"), str(msg)], env=env, capture_output=True,
                       text=True)
    assert p.returncode == 2 and "initialize" in p.stderr and "Traceback" not in p.stderr
    _run([str(TREC / "initialize")], env, tmp_path)
    for cmd in (["classify"], ["train", "spam", str(msg)], ["classify", str(tmp_path / "nope")],
                ["train", "junk", str(msg), "ham", "-"]):
        p = subprocess.run([str(TREC / cmd[0]), *cmd[1:]], env=env, capture_output=True,
                           text=True)
        assert p.returncode == 2, cmd
        assert p.stderr.startswith("nnspam-trec: ") and "Traceback" not in p.stderr


def test_trec_scripts_load_no_heavy_modules(tmp_path):
    """A classify process imports neither scikit-learn, SciPy nor YAML."""
    env = _env(tmp_path)
    _run([str(TREC / "initialize")], env, tmp_path)
    msg = tmp_path / "m.eml"
    msg.write_bytes(b"From: a@example.org\nSubject: hi\n\nhello\n")
    code = (
        "import sys, runpy; sys.argv = [sys.argv[1], sys.argv[2]]\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy', 'yaml')]\n"
        "print('HEAVY', bad)\n"
    )
    out = _run([sys.executable, "-c", code, str(TREC / "classify"), str(msg)], env, tmp_path)
    assert LINE.match(out.splitlines(keepends=True)[0])
    assert out.splitlines()[-1] == "HEAVY []"


def test_trec_classify_prints_the_logit_in_full(tmp_path):
    """score= is the spamicity's logit, printed so that it reads back as the very float the
    filter computed (the ranking is kept where spamicities round to 0 or 1)."""
    from nnspam.services.runs.online import OnlineFilter

    env = _env(tmp_path, "default")
    _run([str(TREC / "initialize")], env, tmp_path)
    f = OnlineFilter.load(env["NNSPAM_TREC_DIR"])
    for i, (subject, body) in enumerate([
            ("cheap pills", "buy cheap viagra pills now, best price, click here"),
            ("meeting notes", "hi bob, the notes from the project meeting, thanks alice")]):
        msg = tmp_path / f"m{i}.eml"
        msg.write_bytes(f"From: a@example.org\nSubject: {subject}\n\n{body}\n".encode())
        out = _run([str(TREC / "classify"), str(msg)], env, tmp_path)
        m = LINE.match(out)
        assert m, out
        sp, z = f.model.judge_tokens([f.tokens(msg.read_bytes())])
        assert float(m.group(2)) == float(z[0]) and repr(float(z[0])) == m.group(2)
        assert m.group(1) == ("spam" if f.is_spam(float(sp[0])) else "ham")


@pytest.mark.parametrize("kind", ["sms"])
def test_trec_untrained_sms(tmp_path, kind):
    env = _env(tmp_path)
    env["NNSPAM_TREC_KIND"] = kind
    _run([str(TREC / "initialize")], env, tmp_path)
    msg = tmp_path / "sms.txt"
    msg.write_bytes(b"WINNER!! Call 09061701461 to claim your prize. Txt STOP to 87121")
    out = _run([str(TREC / "classify"), str(msg)], env, tmp_path)
    assert LINE.match(out)
    _run([str(TREC / "train"), "spam", str(msg), "ham", "-"], env, tmp_path)
    from nnspam.services.runs.online import OnlineFilter

    assert OnlineFilter.load(env["NNSPAM_TREC_DIR"]).kind == "sms"


def test_trec_reexecs_with_a_python_that_has_nnspam(tmp_path):
    """Started by a python3 without NumPy/nnspam, a command re-runs itself
    with $NNSPAM_PYTHON."""
    bare = "/usr/bin/python3"
    probe = subprocess.run([bare, "-c", "import numpy"], capture_output=True) if os.path.exists(
        bare) else None
    if probe is None or probe.returncode == 0:
        pytest.skip(f"needs a {bare} without NumPy")
    env = _env(tmp_path)
    env["NNSPAM_PYTHON"] = sys.executable
    env["PATH"] = "/usr/bin:/bin"
    _run([str(TREC / "initialize")], env, tmp_path)
    msg = tmp_path / "m.eml"
    msg.write_bytes(b"From: a@example.org\nSubject: hi\n\nhello\n")
    out = _run([bare, str(TREC / "classify"), str(msg)], env, tmp_path)
    assert LINE.match(out)
