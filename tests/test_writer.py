"""One model writer (nnspam.model.writer): every front that saves a learned model does so
under the model directory's lock, on top of the directory's latest save, so that no
correction is lost when two of them learn into one model at the same time.

The end-to-end test runs the maildir daemon (``nnspam daemon``, saving after every
correction) and the scoring server (``nnspam serve``, two workers) as real processes
on ONE model directory and sends 100 interleaved corrections: 50 messages put into
Junk (seen by the daemon) and 50 TELLs (to the server). All 100 are in the model
afterwards. Before the writer, the daemon's checkpoints saved its own model over what
the server had learned: 50 of 100 were left (the daemon's; every TELL lost), and the
unlocked saves raced (a save renaming away a directory another was replacing), so some
TELLs were answered 74 EX_IOERR and some daemon corrections logged as errors.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nnspam.mail import maildir as md
from nnspam.model.core import Model, resolve_model_path

from conftest import ROOT, Server, need
from helpers import HAM_SMS, SPAM_SMS, Daemon, learned, sorter_settings, spamd_request, wait_until

# -- the writer, in one process ----------------------------------------------------------

def test_two_writers_on_one_directory_keep_both_lessons(sms_model):
    from nnspam.model.writer import ModelWriter

    a = ModelWriter.open(sms_model)
    b = ModelWriter.open(sms_model)  # both loaded from the same save
    a.learn_payloads([SPAM_SMS[0]], "spam")
    b.learn_payloads([HAM_SMS[0]], "ham")  # re-reads a's save first, then learns
    a.learn_payloads([SPAM_SMS[1]], "spam")  # and a re-reads b's
    final = Model.load(sms_model)
    assert learned(final) == {"spam": 2, "ham": 1}
    assert final.summary["learned_messages"] == 3
    # Each lesson is in the saved model: every corrected message is on its side.
    assert (final.score(SPAM_SMS[:2]) >= final.threshold).all()
    assert final.score([HAM_SMS[0]])[0] < final.threshold


def test_unsaved_lessons_are_learned_again_on_a_newer_save(sms_model):
    """The daemon's way: learn several corrections, save every N. Another writer's
    save in between is re-read and the unsaved lessons replayed onto it."""
    from nnspam.model.writer import ModelWriter

    a = ModelWriter.open(sms_model)
    a.learn_payloads([SPAM_SMS[0]], "spam", save=False)
    a.learn_payloads([SPAM_SMS[1]], "spam", save=False)
    assert len(a.pending) == 2
    b = ModelWriter.open(sms_model)
    b.learn_payloads([HAM_SMS[0]], "ham")
    b.learn_payloads([HAM_SMS[1]], "ham")
    a.learn_payloads([SPAM_SMS[2]], "spam", save=False)  # re-reads b's save, replays 2
    assert learned(a.model) == {"spam": 3, "ham": 2}
    assert a.save() and a.pending == []
    assert learned(Model.load(sms_model)) == {"spam": 3, "ham": 2}


def test_a_save_with_nothing_to_add_rereads_and_does_not_overwrite(sms_model):
    from nnspam.model.writer import ModelWriter, model_stamp

    a = ModelWriter.open(sms_model)
    b = ModelWriter.open(sms_model)
    b.learn_payloads([SPAM_SMS[0]], "spam")
    stamp = model_stamp(sms_model)
    assert not a.save()  # only in-memory counts of its own: the newer save is kept
    assert model_stamp(sms_model) == stamp
    assert learned(a.model) == {"spam": 1, "ham": 0}


def test_every_save_changes_the_stamp_and_a_stat_tells(sms_model):
    from nnspam.model.writer import ModelWriter, model_stamp

    w = ModelWriter.open(sms_model)
    seen = {model_stamp(sms_model)}
    for text in SPAM_SMS:
        w.learn_payloads([text], "spam")
        assert not w.changed()
        seen.add(model_stamp(sms_model))
    assert len(seen) == 4
    Model.load(sms_model).save(sms_model)  # a save by someone else
    assert w.changed()


def test_the_shipped_model_is_never_written():
    from nnspam.model.writer import ModelWriter, ReadOnlyModelError

    path = resolve_model_path("default-sms")
    before = (path / "weights.npz").stat()
    w = ModelWriter.open("default-sms")
    with pytest.raises(ReadOnlyModelError):
        w.learn_payloads([SPAM_SMS[0]], "spam")
    with pytest.raises(ReadOnlyModelError):
        w.save()
    after = (path / "weights.npz").stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert not Path(f"{path}.lock").exists()


def test_the_lock_is_the_servers_lock_file_and_excludes_other_processes(sms_model):
    """The flock is on ``<model dir>.lock`` beside the directory, the file ``nnspam
    serve`` has always locked for TELL: a process holding it (here a child that locks
    it as the old server did) keeps every writer waiting."""
    from nnspam.model.writer import ModelWriter, lock_path, model_lock

    assert lock_path(sms_model) == Path(f"{sms_model}.lock")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         f"fd = os.open({str(sms_model) + '.lock'!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(1.5)\n"],
        stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        w = ModelWriter.open(sms_model)
        t0 = time.monotonic()
        w.learn_payloads([SPAM_SMS[0]], "spam")
        assert time.monotonic() - t0 > 0.5  # waited for the other process
    finally:
        holder.wait(10)
    # Re-entrant within a thread, exclusive between threads.
    order = []
    with model_lock(sms_model):
        with model_lock(sms_model):
            def other() -> None:
                with model_lock(sms_model):
                    order.append("other")

            t = threading.Thread(target=other)
            t.start()
            time.sleep(0.2)
            order.append("first")
    t.join(5)
    assert order == ["first", "other"]


def test_replace_model_writes_the_directory_as_named_under_the_lock(tmp_path, sms_model,
                                                                    monkeypatch):
    """``nnspam train -m DIR`` and ``nnspam stream --save DIR`` replace a whole model
    under the same lock; a relative name is a directory, never the shipped model."""
    from nnspam.model.writer import model_lock, replace_model

    shipped = resolve_model_path("default-sms") / "weights.npz"
    before = shipped.stat().st_mtime_ns
    monkeypatch.chdir(tmp_path)
    m = Model.load(sms_model)
    done = threading.Event()
    with model_lock(tmp_path / "default-sms"):
        t = threading.Thread(target=lambda: (replace_model(m, "default-sms"), done.set()))
        t.start()
        assert not done.wait(0.3)  # waits for the lock
    t.join(30)
    assert done.is_set() and Model.load(tmp_path / "default-sms").words == m.words
    assert shipped.stat().st_mtime_ns == before


def test_sorters_of_two_processes_keep_all_corrections(tmp_path, sms_model):
    """The Sorter (daemon, SMS store) learns through the writer: a checkpoint every
    N corrections re-reads another writer's save and keeps both sides' corrections."""
    from nnspam.model.writer import ModelWriter, load_with_stamp
    from nnspam.services.delivery.sorter import Sorter
    from nnspam.services.delivery.state import State

    model, stamp = load_with_stamp(sms_model)
    sorter = Sorter(model, State(tmp_path / "s.sqlite3"), sorter_settings(checkpoint_every=2),
                    model_path=str(sms_model), stamp=stamp)
    other = ModelWriter.open(sms_model)
    sorter.learn([SPAM_SMS[0]], "spam")  # kept in memory
    other.learn_payloads([HAM_SMS[0]], "ham")  # saved
    sorter.learn([SPAM_SMS[1]], "spam")  # re-read, replayed, checkpointed
    assert sorter.pending_updates == 0
    other.learn_payloads([HAM_SMS[1]], "ham")
    assert learned(Model.load(sms_model)) == {"spam": 2, "ham": 2}
    sorter.learn([SPAM_SMS[2]], "spam")
    assert sorter.checkpoint()
    assert learned(Model.load(sms_model)) == {"spam": 3, "ham": 2}
    assert learned(sorter.model) == {"spam": 3, "ham": 2}


def test_nnspam_learn_keeps_what_a_writer_holding_the_lock_saved(tmp_path, sms_model):
    """``nnspam learn`` takes the lock and learns on top of the latest save."""
    from nnspam.model.writer import ModelWriter, model_lock

    msgs = tmp_path / "msgs"
    msgs.mkdir()
    (msgs / "1.txt").write_text("Subject: x\n\n" + SPAM_SMS[2] + "\n")
    w = ModelWriter.open(sms_model)
    with model_lock(sms_model):
        proc = subprocess.Popen([sys.executable, "-m", "nnspam", "learn", "--spam", "-m",
                                 str(sms_model), str(msgs)], cwd=ROOT,
                                stderr=subprocess.PIPE)
        time.sleep(1.0)
        assert proc.poll() is None  # waiting for the lock
        w.learn_payloads([HAM_SMS[2]], "ham")  # saved while nnspam learn waits
    assert proc.wait(60) == 0, proc.stderr.read()
    assert learned(Model.load(sms_model)) == {"spam": 1, "ham": 1}


def test_nnspam_learn_under_flock_1_on_the_lock_file_does_not_wait_for_itself(tmp_path,
                                                                              sms_model):
    """filters/nnspam-learn runs ``flock MODEL.lock nnspam learn``: the lock it holds
    through the inherited descriptor is nnspam learn's own, not one to wait for."""
    msg = tmp_path / "msg"
    msg.write_text("Subject: x\n\n" + SPAM_SMS[0] + "\n")
    r = subprocess.run([need("flock"), "-w", "30", f"{sms_model}.lock", sys.executable, "-m",
                        "nnspam", "learn", "-m", str(sms_model), "--spam", str(msg)],
                       cwd=ROOT, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert learned(Model.load(sms_model)) == {"spam": 1, "ham": 0}


# -- the daemon and the server on one model, as real processes ---------------------------

def test_daemon_and_server_on_one_model_keep_all_100_corrections(tmp_path, sa_corpus):
    model = tmp_path / "model"
    shutil.copytree(resolve_model_path("default"), model)
    box = md.ensure_maildir(tmp_path / "Maildir")
    md.ensure_folder(box, ".Junk")

    def files(d: str, n: int) -> list[bytes]:
        return [p.read_bytes() for p in sorted((sa_corpus / d).iterdir())
                if p.name != "cmds"][:n]

    to_junk = files("spam_2", 50)  # put into Junk by "the user": the daemon learns spam
    tells = [m for pair in zip(files("easy_ham", 25), files("spam", 25), strict=True)
             for m in pair]  # TELLed to the server: ham, spam, ham, ...
    before = learned(Model.load(model))

    # The daemon saves after every correction, so its saves and the server's interleave.
    d = Daemon(tmp_path, box, model, extra="  checkpoint_every: 1\n").start()
    srv = None
    refused = []
    try:
        srv = Server(tmp_path, str(model), args=("--workers", "2"))
        for i, (junk_msg, tell) in enumerate(zip(to_junk, tells, strict=True)):
            md.deliver(box / ".Junk", junk_msg)
            label = "ham" if i % 2 == 0 else "spam"
            resp = srv.request(spamd_request("TELL", tell, Message_class=label, Set="local"))
            if not resp.startswith(b"SPAMD/1.5 0 "):
                refused.append(resp.split(b"\r\n")[0].decode(errors="replace"))
        # A correction is logged after its checkpoint (Sorter.learn saves first); one
        # whose save failed is logged as an error instead.
        wait_until(lambda: d.text().count("put in Junk by the user, learned as spam")
                   + d.text().count("ERROR error file=") >= 50,
                   120, "50 corrections by the daemon", d)
    finally:
        if srv is not None:
            assert srv.stop() == 0
        assert d.stop() == 0
    after = learned(Model.load(model))
    got = {k: after[k] - before[k] for k in after}
    errors = [x for x in d.text().splitlines() if x.startswith("ERROR")]
    assert (got, refused, errors) == ({"spam": 50 + 25, "ham": 25}, [], []), (
        f"{sum(got.values())} of 100 corrections in the model: {got}; "
        f"{len(refused)} TELL(s) failed: {sorted(set(refused))}; "
        f"{len(errors)} daemon error(s): {errors[:2]}")
