"""The maildir daemon, run as a real process (``python -m nnspam daemon``) on a
temporary maildir with a writable copy of the shipped model.

Loss-free under load and faults: a burst of 2,000 real messages (link() and
rename() deliveries) ends up classified exactly once, each in exactly one
place, byte for byte unchanged, also across a SIGKILL and restart; vanished,
empty, binary and 20 MB files do not stop it. Corrections are learned;
SIGTERM checkpoints and exits 0; the systemd notify protocol is spoken; the
shipped units pass ``systemd-analyze verify``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nnspam.mail import maildir as md
from nnspam.model.core import Model, resolve_model_path

from conftest import ROOT, need
from helpers import BURST, Daemon, FixedModel, file_then_delete, pick, sorter_settings, wait_until


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def model(tmp_path) -> Path:
    """A writable copy of the shipped model (the shipped one is read-only)."""
    dest = tmp_path / "model"
    shutil.copytree(resolve_model_path("default"), dest)
    return dest


def deliver_all(box: Path, msgs: list[bytes], start: int = 0) -> dict[str, str]:
    """Deliver like procmail (link) and Dovecot (rename) in turn; name -> sha256."""
    out = {}
    for i, data in enumerate(msgs, start):
        p = md.deliver(box, data, "link" if i % 2 else "rename", fsync=False)
        out[p.name] = sha(data)
    return out


def check_places(d: Daemon, sent: dict[str, str]) -> None:
    """Every message in exactly one place, unchanged, and the state agrees."""
    box = d.box
    inbox = {md.base_name(p.name): p for p in md.list_messages(box)}
    junk = {md.base_name(p.name): p for p in md.list_messages(box / ".Junk")}
    assert not set(inbox) & set(junk), "a message is in two places"
    assert set(inbox) | set(junk) == set(sent), "a message is lost or appeared from nowhere"
    for name, p in {**inbox, **junk}.items():
        assert sha(p.read_bytes()) == sent[name], f"{p} changed"
    assert os.listdir(box / ".Junk" / "tmp") == [] and os.listdir(box / "tmp") == []
    rows = {r[0]: r for r in d.rows()}
    assert set(rows) == set(sent)
    for name, (_, verdict, place, _, _) in rows.items():
        assert place == ("junk" if name in junk else "inbox"), name
        assert verdict == ("spam" if name in junk else "ham"), name
    assert len(junk) > BURST // 4 and len(inbox) > BURST // 4  # both kinds were sorted


def decisions(d: Daemon) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in d.text().splitlines():
        if "INFO decision file=" in line:  # after the time, when not under journald
            name = md.base_name(Path(line.split("INFO decision file=", 1)[1].split()[0]).name)
            out[name] = out.get(name, 0) + 1
    return out


@pytest.mark.slow
def test_burst_of_2000_is_filed_exactly_once_unchanged(tmp_path, box, model, sa_burst):
    d = Daemon(tmp_path, box, model).start()
    try:
        sent = deliver_all(box, sa_burst)
        wait_until(lambda: d.settled(BURST), 120, "2,000 decisions", d)
    finally:
        rc = d.stop()
    assert rc == 0, d.tail()
    check_places(d, sent)
    dec = decisions(d)
    assert set(dec) == set(sent) and set(dec.values()) == {1}, "not classified exactly once"
    assert "ERROR" not in d.text()


@pytest.mark.slow
def test_burst_survives_sigkill_and_restart(tmp_path, box, model, sa_burst):
    d = Daemon(tmp_path, box, model).start()
    half = BURST // 2
    sent = deliver_all(box, sa_burst[:half])
    wait_until(lambda: len(d.rows()) >= half // 2, 60, "half of the first part", d)
    assert d.stop(signal.SIGKILL) == -signal.SIGKILL
    done_before = len(d.rows())
    assert done_before < half, "the kill came too late to test anything"
    sent.update(deliver_all(box, sa_burst[half:], half))  # delivered while it is down
    d.start()
    try:
        wait_until(lambda: d.settled(BURST), 120, "2,000 decisions after the restart", d)
    finally:
        rc = d.stop()
    assert rc == 0, d.tail()
    check_places(d, sent)
    dec = decisions(d)
    # A decision logged before the kill is never made again after the restart
    # (a kill between the commit and the log line may leave one unlogged).
    assert set(dec.values()) == {1}, "a message was classified twice"
    assert len(dec) >= BURST - 2
    assert "rescan of" in d.text()


def test_vanished_empty_binary_and_huge_files_do_not_stop_it(tmp_path, box, model, sa_burst):
    d = Daemon(tmp_path, box, model).start()
    try:
        deliver_all(box, sa_burst[:300])  # keeps the worker busy ...
        gone = md.deliver(box, sa_burst[300], fsync=False)
        os.unlink(gone)  # ... so this one is removed between the event and the read
        empty = md.deliver(box, b"", "link", fsync=False)
        binary = md.deliver(box, os.urandom(200_000), fsync=False)
        huge = md.deliver(box, b"Subject: big\n\n" + b"A" * (20 << 20), "link", fsync=False)
        last_ham = md.deliver(box, sa_burst[1], fsync=False)
        last_spam = md.deliver(box, sa_burst[0], fsync=False)
        wait_until(lambda: d.settled(305), 60, "all messages decided", d)
        text = d.text()
        assert f"skipped file={gone}: removed before it was read" in text
        for p in (empty, binary, last_ham):
            assert f"decision file={p} " in text, p
        assert f"decision file={huge} " in text and "skipped-size(20971534>" in text
        assert huge.exists() and huge.stat().st_size == 20971534  # left alone, unchanged
        assert not last_spam.exists() and (box / ".Junk" / "new" / last_spam.name).exists()
        assert d.proc.poll() is None
    finally:
        rc = d.stop()
    assert rc == 0


def test_corrections_are_learned(tmp_path, box, model, sa_burst):
    before = Model.load(model)
    ham, = pick(sa_burst, before, spam=False)
    spam1, spam2 = pick(sa_burst, before, spam=True, n=2)
    d = Daemon(tmp_path, box, model, extra="  checkpoint_every: 1\n").start()
    try:
        h = md.deliver(box, ham)
        s1 = md.deliver(box, spam1)
        s2 = md.deliver(box, spam2)
        wait_until(lambda: d.settled(3), 30, "three decisions", d)
        weights = (model / "weights.npz").read_bytes()
        junk = box / ".Junk"
        assert h.exists() and (junk / "new" / s1.name).exists()

        # The user moves a ham the daemon kept into Junk: learned as spam.
        os.rename(h, junk / "cur" / (h.name + ":2,S"))
        wait_until(lambda: "put in Junk by the user, learned as spam" in d.text(), 30,
                   "the spam correction", d)
        rows = {r[0]: r for r in d.rows()}
        assert rows[h.name][2:4] == ("junk", "spam")
        wait_until(lambda: (model / "weights.npz").read_bytes() != weights, 30,
                   "the checkpoint", d)
        after = Model.load(model)
        assert after.score([ham])[0] > before.score([ham])[0]

        # The user moves a spam the daemon put in Junk back: learned as ham,
        # also when the mail store gives the file a new name (Dovecot).
        os.rename(junk / "new" / s1.name, box / "cur" / (s1.name + ":2,S"))
        os.rename(junk / "new" / s2.name, box / "cur" / (md.unique_name() + ":2,S"))
        wait_until(lambda: d.text().count("moved out of Junk by the user, learned as ham") == 2,
                   30, "two ham corrections", d)
        rows = {r[0]: r for r in d.rows()}
        assert rows[s1.name][2:4] == ("inbox", "ham")
        assert rows[s2.name][2:4] == ("inbox", "ham")
        # Nothing was moved back to Junk: corrections are never re-scored.
        assert not list((junk / "new").iterdir()) and len(os.listdir(box / "cur")) == 2
    finally:
        rc = d.stop()
    assert rc == 0
    final = Model.load(model)
    assert final.score([spam1])[0] < before.score([spam1])[0]
    db = sqlite3.connect(d.state)
    labels = [r[0] for r in db.execute("SELECT label FROM corrections ORDER BY id")]
    assert labels == ["spam", "ham", "ham"]


def an_hour_passes(state: Path) -> None:
    """Move every time in the daemon's state an hour back, as if an hour had passed
    (the daemon keeps running; its state file is shared in WAL mode)."""
    db = sqlite3.connect(state, timeout=30)
    try:
        with db:
            db.execute("UPDATE messages SET decided_at=decided_at-3600, "
                       "updated_at=updated_at-3600")
    finally:
        db.close()


def test_a_spam_deleted_from_junk_and_delivered_again_is_scored_not_learned_as_ham(
        tmp_path, box, model, sa_burst):
    """The mail admin's report: a spam is filed into .Junk, the user deletes it there,
    and later the same bytes are delivered again into the inbox's new/. That is a new
    delivery, not a "Not junk" move: scored, filed into Junk again, nothing learned."""
    spam, ham = sa_burst[0], sa_burst[1]
    junk = box / ".Junk"
    d = Daemon(tmp_path, box, model).start()
    try:
        file_then_delete(d, box, spam)
        # The daemon takes events in order: once a message delivered after the
        # deletion is decided, the deletion has been seen too.
        later = md.deliver(box, ham)
        wait_until(lambda: f"decision file={later} " in d.text(), 30, "the next decision", d)
        an_hour_passes(d.state)
        again = md.deliver(box, spam)  # the same bytes, a new delivery (a new name)
        wait_until(lambda: f" file={again} " in d.text(), 30, "the copy handled", d)
        text = d.text()
        assert f"decision file={again} " in text, "the copy was not scored:\n" + d.tail()
        wait_until(lambda: (junk / "new" / again.name).exists(), 30, "the copy in Junk", d)
        assert not again.exists()
        rows = {r[0]: r for r in d.rows()}
        assert rows[again.name][1:] == ("spam", "junk", None, "daemon")
        assert "moved out of Junk by the user" not in text and "as ham" not in text
    finally:
        rc = d.stop()
    assert rc == 0, d.tail()
    db = sqlite3.connect(d.state)
    assert db.execute("SELECT label, uniq FROM corrections").fetchall() == []
    assert db.execute("SELECT COUNT(*) FROM messages WHERE learned='ham'").fetchone()[0] == 0
    db.close()


def test_not_junk_moves_under_new_names_are_still_learned_as_ham(tmp_path, box, model,
                                                                 sa_burst):
    """The genuine "Not junk" moves of a mail store that renames: Dovecot's IMAP MOVE of
    an unread message (hard link into the inbox's new/ under a new name, no flags, then
    the Junk file expunged) and a sync tool that removes the Junk file first and writes
    a read copy into cur/ a moment later. Both learned as ham, neither scored again."""
    spam1, spam2 = pick(sa_burst, Model.load(model), spam=True, n=2)
    junk = box / ".Junk"
    d = Daemon(tmp_path, box, model).start()
    try:
        s1, s2 = md.deliver(box, spam1), md.deliver(box, spam2)
        wait_until(lambda: d.settled(2) and len(os.listdir(junk / "new")) == 2, 30,
                   "two spams filed into Junk", d)
        # IMAP MOVE (Dovecot): COPY by link() into the inbox, then EXPUNGE.
        copy1 = md.unique_name()
        os.link(junk / "new" / s1.name, box / "tmp" / copy1)
        os.rename(box / "tmp" / copy1, box / "new" / copy1)
        os.unlink(junk / "new" / s1.name)
        # mbsync-like: the Junk file removed first, the copy written a second later.
        os.unlink(junk / "new" / s2.name)
        time.sleep(1)
        copy2 = md.unique_name()
        (box / "tmp" / copy2).write_bytes(spam2)
        os.rename(box / "tmp" / copy2, box / "cur" / (copy2 + ":2,S"))
        wait_until(lambda: d.text().count("moved out of Junk by the user, learned as ham") == 2,
                   30, "two ham corrections", d)
        rows = {r[0]: r for r in d.rows()}
        assert rows[s1.name][2:4] == ("inbox", "ham") and rows[s2.name][2:4] == ("inbox", "ham")
        assert rows[copy1][1:3] == ("spam", "inbox") and rows[copy2][1:3] == ("spam", "inbox")
        assert (box / "new" / copy1).exists() and (box / "cur" / (copy2 + ":2,S")).exists()
        assert os.listdir(junk / "new") == [] and os.listdir(junk / "cur") == []
        assert f"decision file={box / 'new' / copy1} " not in d.text()  # not scored again
    finally:
        rc = d.stop()
    assert rc == 0, d.tail()
    db = sqlite3.connect(d.state)
    assert [r[0] for r in db.execute("SELECT label FROM corrections ORDER BY id")] == ["ham"] * 2
    db.close()


def test_the_sorter_files_by_the_one_verdict_rule(tmp_path, box):
    """Sorter.handle_new decides through nnspam.services.verdict: exactly at the threshold is spam
    (moved to Junk), as the X-NNSpam headers say; a NaN spamicity is ham and stays in the
    inbox, as the pipe filter never files mail on one (the Sorter once moved it to Junk)."""
    from nnspam.services.delivery.sorter import Sorter
    from nnspam.services.delivery.state import State

    st = State(tmp_path / "s.sqlite3")
    for sp, want in ((0.6, "spam"), (0.59999, "ham"), (float("nan"), "ham")):
        sorter = Sorter(FixedModel(sp), st, sorter_settings(threshold=0.6, adaptive=False))
        p = md.deliver(box, f"Subject: {sp}\n\nbody\n".encode())
        assert sorter.handle_new(box, p) == want
        assert p.exists() == (want == "ham")
    st.close()


def test_the_not_junk_rule_in_time(tmp_path, box):
    """Sorter._moved_back, in process with a stand-in model: bytes of a message that left
    Junk are a "Not junk" move only near the time it left (MOVE_WINDOW); a going not seen
    live is taken as now, or, for an arrival from before (a rescan after the daemon was
    down), as a move only if the arrival kept the message's date, as IMAP copies do."""
    from nnspam.services.delivery.sorter import MOVE_WINDOW, Sorter
    from nnspam.services.delivery.state import State

    st = State(tmp_path / "s.sqlite3")
    sorter = Sorter(FixedModel(0.99), st, sorter_settings(adaptive=False))
    key, junk = sorter.key(box), box / ".Junk"

    def filed(n: int) -> tuple[Path, bytes]:
        data = f"Subject: offer {n}\n\nbuy now {n}\n".encode()
        p = md.deliver(box, data)
        assert sorter.handle_new(box, p) == "spam"
        return junk / "new" / p.name, data

    # Deleted (seen live), delivered again an hour later: a new message, scored.
    j, data = filed(1)
    os.unlink(j)
    assert sorter.handle_junk_gone(box, j, at=time.time() - 3600) == "gone"
    assert st.get(key, j.name).place == "gone"
    again = md.deliver(box, data)
    assert sorter.handle_new(box, again) == "spam" and (junk / "new" / again.name).exists()
    # Moved out within the window (the going seen live; the inbox copy is the Junk file
    # hard-linked under a new name, as Dovecot's IMAP MOVE makes it): moved back. (The
    # same bytes *delivered* again are scored: tests/test_daemon_faults.py.)
    j, data = filed(2)
    back = box / "new" / md.unique_name()
    os.link(j, back)
    os.unlink(j)
    assert sorter.handle_junk_gone(box, j, at=time.time() - MOVE_WINDOW / 2) == "gone"
    assert sorter.handle_new(box, back) == "corrected" and back.exists()
    assert (st.get(key, j.name).place, st.get(key, j.name).learned) == ("inbox", "ham")
    # Still in Junk (the same bytes delivered twice): a new message, scored.
    j, data = filed(3)
    twice = md.deliver(box, data)
    assert sorter.handle_new(box, twice) == "spam" and j.exists()
    # new/ -> cur/ inside Junk is not a going.
    os.rename(j, junk / "cur" / (j.name + ":2,S"))
    assert sorter.handle_junk_gone(box, j) == "ignored"
    # Gone unseen: just now (IMAP MOVE copies, then expunges), a move ...
    j, data = filed(4)
    moved = box / "new" / md.unique_name()
    os.link(j, moved)
    os.unlink(j)
    assert sorter.handle_new(box, moved) == "corrected"
    # ... but found an hour later (the rescan after a restart): a new delivery, written
    # after the Junk message was decided, is scored; a copy that kept its date is a move.
    sorter.clock = lambda: time.time() + 3600
    j, data = filed(5)
    os.unlink(j)
    late = md.deliver(box, data)
    assert sorter.handle_new(box, late) == "spam"
    j, data = filed(6)
    os.unlink(j)
    kept = md.deliver(box, data)
    os.utime(kept, (st.get(key, j.name).decided_at - 5,) * 2)
    assert sorter.handle_new(box, kept) == "corrected"
    # The rescan's sweep records what left unseen (5 and 7), as of now.
    j, data = filed(7)
    os.unlink(j)
    assert sorter.sweep_junk(box) == 2 and st.get(key, j.name).place == "gone"
    assert sorter.sweep_junk(box) == 0
    labels = [r[1] for r in st.corrections(key)]
    assert labels == ["ham", "ham", "ham"]
    st.close()


class NotifyListener:
    """A test stand-in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self.done = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def lines(self) -> list[str]:
        return [x for m in list(self.messages) for x in m.splitlines()]

    def close(self) -> None:
        self.done = True
        self.thread.join()
        self.sock.close()


def test_sd_notify_reload_and_sigterm_checkpoint(tmp_path, box, model, sa_burst):
    sockpath = tmp_path / "notify.sock"
    listener = NotifyListener(sockpath)
    d = Daemon(tmp_path, box, model, extra="  checkpoint_every: 1000\n",
               env={"NOTIFY_SOCKET": str(sockpath), "WATCHDOG_USEC": "400000"})
    try:
        d.start()
        wait_until(lambda: "READY=1" in listener.lines(), 10, "READY=1", d)
        wait_until(lambda: "WATCHDOG=1" in listener.lines(), 10, "WATCHDOG=1", d)
        assert any(x.startswith("STATUS=watching 1 maildir") for x in listener.lines())
        first = md.deliver(box, sa_burst[1])  # scored before the reload
        wait_until(lambda: f"decision file={first} " in d.text(), 20, "the first decision", d)
        # SIGHUP re-reads the config: at this threshold and spam factor (a threshold
        # above 1, which once did the same, is now refused) nothing is spam any more.
        d.config.write_text(d.config.read_text()
                            + "threshold: 0.999999\nspam_factor: 1.0e-9\n")
        d.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: listener.lines().count("READY=1") == 2, 20, "READY=1 after reload", d)
        assert "RELOADING=1" in listener.lines()
        kept = md.deliver(box, sa_burst[0])  # a spam
        wait_until(lambda: f"decision file={kept} " in d.text(), 20, "the decision", d)
        assert kept.exists() and "action=kept" in d.text()
        # A message the daemon never saw, put straight into Junk: learned as spam,
        # but with checkpoint_every 1000 only saved at shutdown.
        weights = (model / "weights.npz").read_bytes()
        md.deliver(box / ".Junk", sa_burst[2])
        wait_until(lambda: "learned as spam" in d.text(), 20, "the correction", d)
        rows = sorted(r[2:5] for r in d.rows())  # the first message, kept, the Junk one
        assert ("inbox", None, "daemon") in rows and ("junk", "spam", "user") in rows
        assert len(rows) == 3 and sum(r[2] == "daemon" for r in rows) == 2
        assert (model / "weights.npz").read_bytes() == weights
        rc = d.stop(signal.SIGTERM)
        assert rc == 0, d.tail()
        assert "STOPPING=1" in listener.lines()
        assert "checkpoint: saved model" in d.text()
        # the stop summary counts from the start, the message before the SIGHUP too
        stopped = [x for x in d.text().splitlines() if "stopped: watching" in x][-1]
        assert int(stopped.split("; ")[1].split()[0]) == 2, stopped
        assert (model / "weights.npz").read_bytes() != weights
        Model.load(model)  # the checkpoint is a complete model
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
        listener.close()


def test_bad_maildir_or_model_is_one_line_exit_2(tmp_path, box):
    r = subprocess.run([sys.executable, "-m", "nnspam", "daemon", "--maildir",
                        str(tmp_path / "nope")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"nnspam: {tmp_path / 'nope'}: not a maildir "
                                             "(needs new/ and cur/)"]
    (tmp_path / "c.yaml").write_text(f"daemon:\n  state: {tmp_path / 's.sqlite3'}\n")
    r = subprocess.run([sys.executable, "-m", "nnspam", "daemon", "--maildir", str(box),
                        "-m", str(tmp_path / "nomodel")], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "NNSPAM_CONFIG": str(tmp_path / "c.yaml")},
                       timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith(f"nnspam: {tmp_path / 'nomodel'}: ")


def test_system_unit_passes_systemd_analyze_verify(tmp_path):
    exe = need("systemd-analyze")
    text = (ROOT / "scripts" / "nnspam-daemon.service").read_text()
    for key in ("Type=notify", "ProtectSystem=strict", "ReadWritePaths=", "NoNewPrivileges=yes",
                "WatchdogSec=", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert key in text
    # verify checks that ExecStart= exists: point it at this checkout's nnspam.
    nnspam = Path(sys.executable).with_name("nnspam")
    unit = tmp_path / "nnspam-daemon.service"
    unit.write_text(text.replace("/opt/nnspam/bin/nnspam", str(nnspam)))
    r = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def test_user_unit_passes_systemd_analyze_verify(tmp_path):
    exe = need("systemd-analyze")
    text = (ROOT / "scripts" / "nnspam-daemon.user.service").read_text()
    assert "Type=notify" in text and "WantedBy=default.target" in text
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "nnspam").symlink_to(Path(sys.executable).with_name("nnspam"))
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    unit = tmp_path / "nnspam-daemon.service"
    unit.write_text(text)
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    r = subprocess.run([exe, "--user", "verify", str(unit)], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def test_a_move_cut_short_by_a_crash_is_finished_without_scoring_again(tmp_path, box):
    """The state says 'moving' (written before the rename) but the file is still
    in the inbox: the restart finishes the move and does not score it again."""
    from nnspam.services.delivery.sorter import Sorter
    from nnspam.services.delivery.state import Record, State

    class NoModel:  # scoring would fail loudly
        def tokens(self, payload):
            raise AssertionError("scored again")

    st = State(tmp_path / "s.sqlite3")
    sorter = Sorter(NoModel(), st)
    p = md.deliver(box, b"Subject: x\n\nspam\n")
    key = sorter.key(box)
    st.put(Record(key, p.name, None, 1, "00", 0.99, "spam", "moving", "daemon", None, 1, 1))
    assert sorter.handle_new(box, p) == "resumed"
    assert (box / ".Junk" / "new" / p.name).exists() and not p.exists()
    assert st.get(key, p.name).place == "junk"
    assert sorter.handle_junk(box, box / ".Junk" / "new" / p.name) == "known"
    # Cut short after the link into Junk and before the unlink (cross-filesystem
    # move): the same bytes are in both places; the inbox copy is removed.
    r = md.deliver(box, b"Subject: z\n\nspam too\n")
    shutil.copy2(r, box / ".Junk" / "new" / r.name)
    st.put(Record(key, r.name, None, 1, "22", 0.99, "spam", "moving", "daemon", None, 1, 1))
    assert sorter.handle_new(box, r) == "resumed"
    assert not r.exists() and (box / ".Junk" / "new" / r.name).read_bytes().endswith(b"too\n")
    assert st.get(key, r.name).place == "junk"
    # A message already decided is not scored again either.
    q = md.deliver(box, b"Subject: y\n\nham\n")
    st.put(Record(key, q.name, None, 1, "11", 0.01, "ham", "inbox", "daemon", None, 1, 1))
    assert sorter.handle_new(box, q) == "known" and q.exists()
    st.close()


def test_inotify_overflow_queues_a_rescan(tmp_path, box):
    import logging

    from nnspam.config import DEFAULTS
    from nnspam.services.delivery.daemon import Daemon as D
    from nnspam.services.delivery.daemon import settings_from_config

    d = D(settings_from_config(DEFAULTS, [str(box)]))
    wd_log = logging.getLogger("watchdog")
    wd_log.addHandler(d._overflow)
    try:
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost")
    finally:
        wd_log.removeHandler(d._overflow)
    assert d.queue.get_nowait() == ("rescan", box.resolve(), None)


def test_learn_files_trains_and_checkpoints(tmp_path, model, sa_burst):
    """The by-hand path (nnspam learn) through the same Sorter.learn."""
    from nnspam.services.delivery.sorter import Sorter
    from nnspam.services.delivery.state import State

    m = Model.load(model)
    ham, = pick(sa_burst, m, spam=False)
    f = tmp_path / "msg.eml"
    f.write_bytes(ham)
    before = m.score([ham])[0]
    sorter = Sorter(m, State(tmp_path / "s.sqlite3"), sorter_settings(checkpoint_every=1),
                    model_path=str(model))
    assert sorter.learn_files([f, tmp_path / "gone.eml"], "spam") == 1
    assert sorter.pending_updates == 0  # checkpointed after one learned message
    assert Model.load(model).score([ham])[0] > before
    read_only = Sorter(Model.load(model), State(tmp_path / "t.sqlite3"), model_path=None)
    assert read_only.learn([ham], "spam") is False  # the shipped model is never written


def test_state_file_in_a_missing_directory_is_refused_and_nothing_is_created(tmp_path, box,
                                                                            model):
    d = Daemon(tmp_path, box, model)
    missing = tmp_path / "missing" / "dir"
    d.config.write_text(f"daemon:\n  maildirs: [{box}]\n  state: {missing / 's.sqlite3'}\n")
    log = tmp_path / "refused.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "nnspam", "daemon", "-c", str(d.config),
                                 "-m", str(model)], stdin=subprocess.DEVNULL, stderr=fh, cwd=ROOT)
        try:
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                assert "INFO watching " not in log.read_text(), "started: " + log.read_text()
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    assert proc.returncode == 2, log.read_text()
    assert log.read_text().strip().splitlines()[-1] == (
        f"nnspam: {missing / 's.sqlite3'}: the directory {missing} does not exist "
        "(create it first)")
    assert not (tmp_path / "missing").exists()


def test_default_state_directory_is_still_created(tmp_path, box, model):
    home = tmp_path / "home"
    home.mkdir()
    d = Daemon(tmp_path, box, model, env={"HOME": str(home)})
    d.config.write_text(f"daemon:\n  maildirs: [{box}]\n  rescan_interval: 0\n")
    d.start()
    assert d.stop() == 0
    assert (home / ".local/state/nnspam/daemon.sqlite3").is_file()
