"""The maildir daemon under two faults of the hostile test (issue 22):

* fault 11: a file in ``new/`` whose name is not UTF-8 made every rescan fail
  (``UnicodeEncodeError`` from the SQLite state) and was never filed; now it is filed
  like any other, its name kept byte for byte (nnspam/services/delivery/state.py), and a file
  that fails is logged once, not at every rescan (nnspam/services/delivery/daemon.py);
* fault 12: a spam deleted from Junk and delivered again within ``MOVE_WINDOW`` was taken
  as the user's "Not junk" move and learned as ham; now a file written into ``new/``
  after the first copy was decided is a delivery (nnspam/services/delivery/sorter.py,
  ``Sorter._moved_back`` rule 4), while real moves are still learned.

Driven as tests/test_daemon.py drives the daemon: the Sorter and the daemon's rescan in
process with a stand-in model, and a real ``nnspam daemon`` process.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

import pytest

from nnspam.config import DEFAULTS
from nnspam.mail import maildir as md
from nnspam.model.core import Model
from nnspam.services.delivery.daemon import Daemon as D
from nnspam.services.delivery.daemon import settings_from_config
from nnspam.services.delivery.sorter import MOVE_WINDOW, Sorter
from nnspam.services.delivery.state import State

from helpers import (
    Daemon,
    FixedModel,
    build_mail,
    csrf_of,
    file_then_delete,
    logged_in,
    make_app,
    pick,
    post,
    rows_of,
    sorter_settings,
    wait_until,
)

BAD = b"\xff\xfe.host"  # a unique name that is not UTF-8


def put_bytes_name(folder: Path, name: bytes, data: bytes) -> Path:
    """Write a message file whose name is bytes (os.open on a bytes path); the path
    as Python lists it (surrogate escapes)."""
    fd = os.open(os.fsencode(folder) + b"/" + name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return folder / os.fsdecode(name)


def in_process(tmp_path: Path, box: Path, sp: float) -> tuple[D, Sorter, State]:
    """The daemon's handling code without its watcher: its rescan, on a Sorter with a
    stand-in model that scores everything ``sp``."""
    st = State(tmp_path / "s.sqlite3")
    sorter = Sorter(FixedModel(sp), st, sorter_settings(adaptive=False))
    d = D(settings_from_config(DEFAULTS, [str(box)]))
    d.sorter, d.state = sorter, st
    return d, sorter, st


# -- fault 11: a name that is not UTF-8 ----------------------------------------------------

@pytest.mark.parametrize("sp, place", [(0.99, "junk"), (0.01, "inbox")])
def test_a_name_that_is_not_utf8_is_filed_and_kept_byte_for_byte(tmp_path, box, sp, place,
                                                                  caplog):
    d, sorter, st = in_process(tmp_path, box, sp)
    data = b"Subject: offer\n\nbuy now\n"
    p = put_bytes_name(box / "new", BAD, data)
    ok = md.deliver(box, b"Subject: next\n\nanother\n")
    with caplog.at_level(logging.INFO, logger="nnspam"):
        d.rescan(box)
        d.rescan(box)  # the next rescan finds it known: nothing to do, no error
    assert d.errors == 0, caplog.text
    folder = box / ".Junk" / "new" if place == "junk" else box / "new"
    assert BAD in os.listdir(os.fsencode(folder))  # the name on disk, byte for byte
    assert (folder / p.name).read_bytes() == data
    rec = st.get(sorter.key(box), p.name)
    assert rec is not None and rec.uniq == p.name and rec.place == place
    assert st.get(sorter.key(box), ok.name) is not None  # the other message filed too
    assert caplog.text.count(f"decision file={p}") == 1
    # In the state file it is the name's bytes (a BLOB), other names stay text.
    db = sqlite3.connect(st.path)
    kinds = dict(db.execute("SELECT uniq, typeof(uniq) FROM messages").fetchall())
    db.close()
    assert kinds == {BAD: "blob", ok.name: "text"}
    st.close()


def test_a_correction_of_a_name_that_is_not_utf8_is_recorded(tmp_path, box):
    """The user moves it out of Junk (a rename, the name kept): learned as ham, and
    the correction's path read back as the name on disk."""
    d, sorter, st = in_process(tmp_path, box, 0.99)
    p = put_bytes_name(box / "new", BAD, b"Subject: offer\n\nbuy now\n")
    assert sorter.handle_new(box, p) == "spam"
    back = box / "cur" / (p.name + ":2,S")
    os.rename(box / ".Junk" / "new" / p.name, back)
    assert sorter.handle_inbox_cur(box, back) == "corrected"
    assert st.corrections(sorter.key(box)) == [(p.name, "ham", str(back))]
    st.close()


def test_a_file_that_fails_is_logged_once_and_the_rest_goes_on(tmp_path, box, caplog):
    class Unreadable(FixedModel):
        def tokens(self, payload):
            if b"poison" in payload:
                raise ValueError("cannot tokenize this one")
            return ["w"]

    d, sorter, st = in_process(tmp_path, box, 0.01)
    sorter._model = Unreadable(0.01)
    bad = md.deliver(box, b"Subject: x\n\npoison\n")
    with caplog.at_level(logging.INFO, logger="nnspam"):
        for _ in range(3):
            good = md.deliver(box, f"Subject: y\n\nfine {time.time()}\n".encode())
            d.rescan(box)
            assert st.get(sorter.key(box), good.name) is not None
    assert d.errors == 3 and bad.exists()  # counted each time, left where it is
    assert caplog.text.count(f"error file={bad}") == 1
    st.close()


def test_the_daemon_files_a_name_that_is_not_utf8(tmp_path, box):
    """A real nnspam daemon: the message is filed at start, a restart's rescan finds it
    known, and no error is logged."""
    model = tmp_path / "model"
    Model.load("default").save(model)
    p = put_bytes_name(box / "new", BAD, b"Subject: lunch\n\nSee you at noon tomorrow.\n")
    d = Daemon(tmp_path, box, model).start()
    try:
        wait_until(lambda: d.settled(1), 30, "the message filed", d)
        later = md.deliver(box, b"Subject: next\n\nand another\n")
        wait_until(lambda: d.settled(2), 30, "the next one filed", d)
    finally:
        assert d.stop() == 0, d.tail()
    d.start()  # the rescan at start: both known
    try:
        wait_until(lambda: d.text().count(" done in ") == 2, 30, "the second rescan", d)
    finally:
        assert d.stop() == 0, d.tail()
    text = d.text()
    assert "ERROR" not in text and " 0 errors" in text and "known 2" in text, text
    assert text.count("decision file=") == 2 and f"decision file={later} " in text
    names = {r[0] for r in d.rows()}  # as stored: the bad name as its bytes
    assert names == {BAD, later.name} and os.fsdecode(BAD) == p.name
    assert BAD in os.listdir(os.fsencode(box / "new")) + os.listdir(
        os.fsencode(box / ".Junk" / "new"))


def test_the_email_dashboard_lists_shows_and_moves_a_name_that_is_not_utf8(tmp_path,
                                                                           sa_corpus):
    """Filed, the message is on the dashboard's email pages, whose links and forms are
    UTF-8 text: listed, viewed and moved into Junk by its button (nnspam/front/dashboard/
    email_side.py: web_name, disk_name)."""
    pytest.importorskip("flask")
    mail = build_mail(tmp_path, sa_corpus, n_ham=1, n_spam=1)
    st = State(mail.state)
    sorter = Sorter.from_config(mail.cfg, Model.load(mail.model), st, model_name=mail.model)
    p = put_bytes_name(mail.maildir / "new", BAD, b"Subject: lunch\n\nSee you at noon.\n")
    assert sorter.handle_new(mail.maildir, p) == "ham"
    st.close()
    app, side = make_app(mail)
    try:
        c = logged_in(app)
        r = c.get("/email/")
        assert r.status_code == 200
        web = "bytes:" + BAD.hex()
        assert web in rows_of(r.get_data(as_text=True))
        r = c.get(f"/email/message?box=0&uniq={web}")
        assert r.status_code == 200 and "new/\\xff\\xfe.host" in r.get_data(as_text=True)
        token = csrf_of(r.get_data(as_text=True))
        assert post(c, "/email/move", token, box="0", uniq=web, to="junk").status_code == 302
        junk = mail.maildir / ".Junk" / "new"
        assert BAD in os.listdir(os.fsencode(junk))
        assert mail.corrections() == [(p.name, "spam", str(junk / p.name))]
    finally:
        side.close()


# -- fault 12: deleted from Junk, delivered again within the window ------------------------

def filed(sorter: Sorter, box: Path, n: int) -> tuple[Path, bytes]:
    data = f"Subject: offer {n}\n\nbuy now {n}\n".encode()
    p = md.deliver(box, data)
    assert sorter.handle_new(box, p) == "spam"
    return box / ".Junk" / "new" / p.name, data


def test_a_spam_delivered_again_within_the_window_is_scored_not_learned(tmp_path, box):
    st = State(tmp_path / "s.sqlite3")
    sorter = Sorter(FixedModel(0.99), st, sorter_settings(adaptive=False))
    key, junk = sorter.key(box), box / ".Junk"
    # Deleted (the going seen live), delivered again at once: scored, filed into Junk.
    j, data = filed(sorter, box, 1)
    os.unlink(j)
    assert sorter.handle_junk_gone(box, j) == "gone"
    again = md.deliver(box, data)
    assert sorter.handle_new(box, again) == "spam" and (junk / "new" / again.name).exists()
    # Deleted, and delivered again before the going was seen, the MDA's link (procmail)
    # or rename (Dovecot's LDA): scored too.
    for how in ("link", "rename"):
        j, data = filed(sorter, box, 2 if how == "link" else 3)
        os.unlink(j)
        again = md.deliver(box, data, how)
        assert sorter.handle_new(box, again) == "spam", how
    # ... also when a client moved it on to cur/ before the daemon read it.
    j, data = filed(sorter, box, 4)
    os.unlink(j)
    again = md.deliver(box, data)
    seen = box / "cur" / (again.name + ":2,")
    os.rename(again, seen)
    assert sorter.handle_new(box, again) == "spam" and (junk / "cur" / seen.name).exists()
    assert sorter.handle_inbox_cur(box, seen) in ("known", "vanished")
    assert st.corrections(key) == []
    assert [r for r in st.records(key) if r.learned == "ham"] == []
    st.close()


def test_real_moves_out_of_junk_are_still_learned_as_ham(tmp_path, box):
    """Within the window, the moves a user makes: IMAP MOVE of an unread message (the
    Junk file hard-linked into new/), a copy into new/ that kept the message's date
    (Dovecot across filesystems, mutt), a rename under a new name, and a sync tool's
    fresh read copy in cur/."""
    st = State(tmp_path / "s.sqlite3")
    sorter = Sorter(FixedModel(0.99), st, sorter_settings(adaptive=False))
    key = sorter.key(box)
    j, _ = filed(sorter, box, 1)
    linked = box / "new" / md.unique_name()
    os.link(j, linked)
    os.unlink(j)
    assert sorter.handle_new(box, linked) == "corrected"
    j, data = filed(sorter, box, 2)
    mtime = j.stat().st_mtime
    os.unlink(j)
    copy = md.deliver(box, data)
    os.utime(copy, (mtime, mtime))
    assert sorter.handle_new(box, copy) == "corrected"
    j, _ = filed(sorter, box, 3)
    renamed = box / "new" / md.unique_name()
    os.rename(j, renamed)
    assert sorter.handle_new(box, renamed) == "corrected"
    j, data = filed(sorter, box, 4)
    os.unlink(j)
    assert sorter.handle_junk_gone(box, j, at=time.time() - MOVE_WINDOW / 2) == "gone"
    synced = box / "cur" / (md.unique_name() + ":2,S")
    synced.write_bytes(data)
    assert sorter.handle_inbox_cur(box, synced) == "corrected"
    assert [label for _, label, _ in st.corrections(key)] == ["ham"] * 4
    st.close()


def test_the_daemon_scores_a_spam_deleted_and_delivered_again_at_once(tmp_path, box,
                                                                      sa_burst):
    """A real nnspam daemon, as tests/test_daemon.py's mail-admin report but within the
    window: the user deletes the spam from Junk and the same bytes arrive again seconds
    later. Scored and filed into Junk again; no ham learned."""
    model = tmp_path / "model"
    Model.load("default").save(model)
    spam, = pick(sa_burst, Model.load(model), spam=True)
    junk = box / ".Junk"
    d = Daemon(tmp_path, box, model).start()
    try:
        file_then_delete(d, box, spam)
        again = md.deliver(box, spam)  # delivered again, well within MOVE_WINDOW
        wait_until(lambda: (junk / "new" / again.name).exists() and d.settled(2), 30,
                   "the copy filed into Junk", d)
        assert f"decision file={again} " in d.text()
        assert "moved out of Junk by the user" not in d.text()
    finally:
        assert d.stop() == 0, d.tail()
    db = sqlite3.connect(d.state)
    assert db.execute("SELECT COUNT(*) FROM corrections").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM messages WHERE learned='ham'").fetchone()[0] == 0
    db.close()
