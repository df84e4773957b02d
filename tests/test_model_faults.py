"""Faults of a model directory a hostile test found (issue 22, faults 6, 8 and 9), each
checked the way a user meets it, on a writable copy of the shipped SMS model:

* 6: a truncated or garbage ``journal.npz`` stopped every correction with a
  ``zipfile.BadZipFile`` traceback (``nnspam learn``, ``learn --forget``, ``inspect
  --journal``; the server's TELL answered 74) until someone deleted the file. An
  unreadable journal is now logged in one line naming the file and started afresh.
* 8: ``nnspam learn`` on a full file system ended in an ``OSError: [Errno 28]``
  traceback. It is now one line naming the model directory and the reason, exit 74
  (EX_IOERR), and nothing is left beside the model.
* 9: a save killed midway (SIGKILL) left its temporary directory (a whole model) beside
  the model for good. The next save of that model removes it.
"""

from __future__ import annotations

import builtins
import errno
import io
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nnspam.front.cli import main
from nnspam.model import core
from nnspam.model.core import Model
from nnspam.model.journal import FILE, Journal, JournalError

from conftest import ROOT
from helpers import HAM_SMS, SPAM_SMS, learned, run_nnspam


def _files(directory: Path) -> dict[str, bytes]:
    """A model directory's files and their bytes."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture
def msgs(tmp_path: Path) -> dict[str, Path]:
    """Two SMS messages as files, in a folder apart from the model's parent (where only
    the model, its lock file and what saves leave are expected)."""
    d = tmp_path / "msgs"
    d.mkdir()
    out = {"spam": d / "spam.txt", "ham": d / "ham.txt"}
    out["spam"].write_text(SPAM_SMS[0] + "\n")
    out["ham"].write_text(HAM_SMS[0] + "\n")
    return out


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    """An empty config: the defaults, whatever the user running the tests has set."""
    path = tmp_path / "config.yaml"
    path.write_text("")
    return path


def _learn(cfg: Path, model: Path, *args: str) -> int:
    """``nnspam learn`` in this process (so a test can patch what it calls)."""
    return main(["learn", "-c", str(cfg), "-m", str(model), *args])


# -- 6: an unreadable correction journal --------------------------------------------------

def test_a_truncated_journal_is_logged_and_started_afresh_on_the_command_line(
        sms_model, msgs, cfg):
    """``head -c 100 journal.npz``: learn, forget and inspect --journal each log it in one
    line naming the file, none ends in a traceback, and learning goes on."""
    r = run_nnspam("learn", "-m", str(sms_model), "--spam", str(msgs["spam"]), cfg=cfg)
    assert r.returncode == 0, r.stderr
    journal = sms_model / FILE
    journal.write_bytes(journal.read_bytes()[:100])

    def one_line_about_the_journal(stderr: str) -> None:
        assert "Traceback" not in stderr
        said = [line for line in stderr.splitlines() if "journal.npz" in line]
        assert said == [f"{journal}: unreadable journal (BadZipFile: File is not a zip "
                        "file); starting a new journal"], stderr

    r = run_nnspam("inspect", "-m", str(sms_model), "--journal", cfg=cfg)
    assert r.returncode == 0, r.stderr
    one_line_about_the_journal(r.stderr)
    assert "Correction journal: 0 of at most 500 kept" in r.stdout
    assert len(journal.read_bytes()) == 100  # inspect writes nothing
    # the lesson's record went with the journal: nothing to forget (exit 1), no traceback
    r = run_nnspam("learn", "-m", str(sms_model), "--forget", str(msgs["spam"]), cfg=cfg)
    assert r.returncode == 1, r.stderr
    one_line_about_the_journal(r.stderr)
    assert "forgot 0 of 1 message(s)" in r.stderr
    r = run_nnspam("learn", "-m", str(sms_model), "--ham", str(msgs["ham"]), cfg=cfg)
    assert r.returncode == 0, r.stderr
    one_line_about_the_journal(r.stderr)
    # the model kept both lessons and a new journal holds the one since
    model = Model.load(sms_model)
    assert learned(model) == {"spam": 1, "ham": 1}
    assert [e.label for e in Journal.read(journal).entries] == ["ham"]
    r = run_nnspam("learn", "-m", str(sms_model), "--forget", str(msgs["ham"]), cfg=cfg)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "journal.npz" not in r.stderr


def _damaged(data: bytes, seed: int = 22) -> list[bytes]:
    """Damaged copies of a journal's bytes: truncated everywhere, bytes changed at
    random, garbage, empty."""
    rnd = random.Random(seed)
    out = [data[:n] for n in range(0, len(data), 23)]
    for _ in range(600):
        b = bytearray(data)
        for _ in range(rnd.randint(1, 4)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        out.append(bytes(b))
    out += [rnd.randbytes(n) for n in (1, 22, 100, 4096)]
    out.append(b"PK\x03\x04" + rnd.randbytes(200))  # a zip's start, then garbage
    return out


def test_a_damaged_journal_is_one_journal_error_and_an_empty_journal_for_the_model(
        sms_model, caplog):
    """Whatever is wrong with the file, reading it raises JournalError (one line, naming
    the file) and nothing else, and the model starts an empty journal beside intact
    weights."""
    from nnspam.model.correct import correct

    model = Model.load(sms_model)
    for text, label in ((SPAM_SMS[1], "spam"), (HAM_SMS[1], "ham")):
        correct(model, [model.tokens(text)], label)
    model.save(sms_model)
    data = (sms_model / FILE).read_bytes()
    learnt = Model.load(sms_model).score(SPAM_SMS + HAM_SMS)
    path = sms_model / FILE
    damaged = _damaged(data)
    failed = 0
    for bad in damaged:
        path.write_bytes(bad)
        try:
            Journal.read(path)  # a change the zip does not check may leave it readable
        except JournalError as exc:
            failed += 1
            assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
            if failed % 20 != 1:  # a model load for some of them: the model's side
                continue
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="nnspam.model"):
                m = Model.load(sms_model)
                assert len(m.journal) == 0
            assert [r.getMessage() for r in caplog.records] == [
                f"{exc}; starting a new journal"]
            assert (m.score(SPAM_SMS + HAM_SMS) == learnt).all()
    assert failed > 0.8 * len(damaged)
    Journal.read(io.BytesIO(data))  # the intact bytes still read


# -- 8: a full file system ----------------------------------------------------------------

class _FullDisk:
    """A file being written on a full file system: half of the first write lands, then
    ENOSPC (as ``write`` or ``fsync`` reports it)."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()

    def write(self, data: bytes) -> int:
        self.fh.write(data[:len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)


def _fill_the_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file Model.save writes meets a full file system (reads work)."""
    def full_open(file: Any, mode: str = "r", *args: Any, **kw: Any) -> Any:
        fh = builtins.open(file, mode, *args, **kw)
        return _FullDisk(fh) if "w" in mode else fh

    monkeypatch.setattr(core, "open", full_open, raising=False)


@pytest.mark.parametrize("how", ["--spam", "--forget"])
def test_learn_on_a_full_disk_says_so_in_one_line_and_exits_74(
        sms_model, msgs, cfg, monkeypatch, capsys, how):
    """``nnspam learn`` (and ``--forget``) whose save meets ENOSPC: ``nnspam: cannot save
    the model DIR: No space left on device``, exit 74, the model as it was, and no
    temporary directory or file left beside it."""
    assert _learn(cfg, sms_model, "--spam", str(msgs["spam"])) == 0
    before = _files(sms_model)
    beside = sorted(p.name for p in sms_model.parent.iterdir())
    capsys.readouterr()
    _fill_the_disk(monkeypatch)
    assert _learn(cfg, sms_model, how, str(msgs["spam"] if how == "--forget"
                                           else msgs["ham"])) == 74
    err = capsys.readouterr().err
    assert err == f"nnspam: cannot save the model {sms_model}: No space left on device\n"
    assert _files(sms_model) == before
    assert sorted(p.name for p in sms_model.parent.iterdir()) == beside
    monkeypatch.undo()
    assert learned(Model.load(sms_model)) == {"spam": 1, "ham": 0}


def test_a_save_that_fails_after_moving_the_model_away_puts_it_back(sms_model, monkeypatch):
    """The rename of the new directory into place fails (the old one already renamed
    away): the old model is renamed back, nothing else is left."""
    before = _files(sms_model)
    model = Model.load(sms_model)
    real = os.rename

    def rename(src: Any, dst: Any) -> None:
        if Path(dst) == sms_model and ".old-" not in str(src):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(src, dst)

    monkeypatch.setattr(core.os, "rename", rename)
    with pytest.raises(OSError):
        model.save(sms_model)
    monkeypatch.undo()
    assert _files(sms_model) == before
    assert sorted(p.name for p in sms_model.parent.iterdir()) == ["sms-model"]


def _mount_tmpfs(where: Path, size: int) -> bool:
    """Mount a tmpfs of ``size`` bytes at ``where`` (root only); False if not allowed."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                       capture_output=True)
    return r.returncode == 0


def test_learn_on_a_really_full_tmpfs(tmp_path, sms_model, msgs, cfg):
    """The same on a real full file system: a tmpfs with room for the model and not for a
    second copy (root only; skipped elsewhere)."""
    room = sum(-(-p.stat().st_size // 4096) * 4096 for p in sms_model.iterdir()) + 128 * 1024
    mnt = tmp_path / "tmpfs"
    if not _mount_tmpfs(mnt, room):
        pytest.skip("needs root and mount -t tmpfs")
    try:
        model = mnt / "m"
        shutil.copytree(sms_model, model)
        before = _files(model)
        r = run_nnspam("learn", "-m", str(model), "--spam", str(msgs["spam"]), cfg=cfg)
        assert r.returncode == 74, r.stderr
        assert r.stderr == f"nnspam: cannot save the model {model}: No space left on device\n"
        assert _files(model) == before
        assert sorted(p.name for p in mnt.iterdir()) == ["m", "m.lock"]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# -- 9: leftovers of a killed save --------------------------------------------------------

def _leftover(parent: Path, name: str, model: Path, age: float = 0.0) -> Path:
    """A directory as a killed save leaves it: a copy of the model's files, last changed
    ``age`` seconds ago (copytree would copy the model directory's own time)."""
    d = parent / name
    shutil.copytree(model, d)
    t = time.time() - age
    os.utime(d, (t, t))
    return d


def test_a_save_under_the_lock_removes_the_leftovers_of_killed_saves(sms_model, msgs, cfg):
    """``nnspam learn`` (a save under the writer lock) removes every leftover of this
    model's saves, and nothing that is not clearly one."""
    parent = sms_model.parent
    ours = [_leftover(parent, ".sms-model.k2_9qz0x", sms_model),  # killed before the rename
            _leftover(parent, ".sms-model.old-4242-1700000000000000000", sms_model)]
    (ours[0] / "model.json").unlink()
    (ours[0] / "weights.npz").write_bytes(b"half")  # killed while writing
    kept = [_leftover(parent, ".sms-model.notes123", sms_model),  # with a file of a person's
            _leftover(parent, ".sms-model.tooLong12", sms_model),  # not mkdtemp's name
            _leftover(parent, ".other.abcdefgh", sms_model),  # another model's
            _leftover(parent, "sms-model.abcdefgh", sms_model)]  # not hidden
    (kept[0] / "notes.txt").write_text("mine\n")
    (parent / ".sms-model.symlink1").symlink_to(kept[3])
    kept.append(parent / ".sms-model.symlink1")
    assert _learn(cfg, sms_model, "--spam", str(msgs["spam"])) == 0
    assert not any(p.exists() for p in ours)
    assert all(p.exists() for p in kept)
    assert (parent / "sms-model.abcdefgh" / "model.json").is_file()  # not followed
    assert learned(Model.load(sms_model)) == {"spam": 1, "ham": 0}


def test_a_save_without_the_lock_removes_only_old_leftovers(sms_model):
    """A save that does not hold the writer lock (``Model.save`` called directly) leaves
    a fresh temporary directory alone: another process may be writing it right now."""
    parent = sms_model.parent
    fresh = _leftover(parent, ".sms-model.fresh123", sms_model)
    old = _leftover(parent, ".sms-model.old_1234", sms_model, age=24 * 3600.0)
    Model.load(sms_model).save(sms_model)
    assert fresh.exists() and not old.exists()
    Model.load(sms_model)


def test_a_save_killed_by_sigkill_leaves_a_directory_the_next_save_removes(
        sms_model, msgs, cfg):
    """A real ``nnspam learn``-like writer killed by SIGKILL once its new directory is
    written (it stops there: the first fsync of the directory) leaves that directory;
    the next ``nnspam learn`` removes it and the model loads."""
    script = (
        "import sys, time\n"
        "from nnspam.model import core\n"
        "from nnspam.model.writer import ModelWriter\n"
        "def stop(path):\n"
        "    print('written', flush=True)\n"
        "    time.sleep(600)\n"
        "core.fsync_dir = stop\n"
        "ModelWriter.open(sys.argv[1]).learn_payloads([sys.argv[2]], 'spam')\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(sms_model), SPAM_SMS[1]],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "written\n"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    left = [p for p in sms_model.parent.iterdir() if p.name.startswith(".sms-model.")]
    assert len(left) == 1 and sorted(q.name for q in left[0].iterdir()) == [
        FILE, "model.json", "weights.npz"]
    assert learned(Model.load(sms_model)) == {"spam": 0, "ham": 0}  # the save never landed
    assert _learn(cfg, sms_model, "--spam", str(msgs["spam"])) == 0
    assert not left[0].exists()
    assert [p.name for p in sms_model.parent.iterdir() if p.name.startswith(".")] == []
    assert learned(Model.load(sms_model)) == {"spam": 1, "ham": 0}


def test_a_damaged_journal_in_a_stores_files_is_started_afresh(caplog):
    """The fleet reads a model from its files' bytes (nnspam.model.delta.model_from_files):
    a damaged journal there is logged and started afresh too, not a JournalError that
    stops the fleet's learner."""
    import logging

    from nnspam.model.core import resolve_model_path
    from nnspam.model.delta import model_from_files

    d = resolve_model_path("default")
    files = {f: (d / f).read_bytes() for f in ("model.json", "weights.npz")}
    files["journal.npz"] = b"PK\x03\x04" + b"\x00" * 40  # a truncated zip
    with caplog.at_level(logging.WARNING):
        model = model_from_files(files, journal=True)
    assert len(model.journal) == 0
    assert "journal" in caplog.text
