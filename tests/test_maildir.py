"""Maildir helpers: delivery both ways, Maildir++ folders, moves that keep the
name and never lose the message (also across filesystems), and the state file."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from nnspam.mail import maildir as md
from nnspam.services.delivery.state import Record, State


def test_deliver_rename_and_link_end_in_new_with_the_same_bytes(tmp_path):
    box = md.ensure_maildir(tmp_path / "Maildir")
    a = md.deliver(box, b"Subject: a\n\nbody\n", "rename")
    b = md.deliver(box, b"Subject: b\n\n\x00\xff binary", "link")
    assert a.parent == box / "new" and b.parent == box / "new"
    assert a.read_bytes() == b"Subject: a\n\nbody\n"
    assert b.read_bytes() == b"Subject: b\n\n\x00\xff binary"
    assert os.listdir(box / "tmp") == []
    assert a.name != b.name
    with pytest.raises(ValueError):
        md.deliver(box, b"x", "copy")


def test_base_name_and_listing(tmp_path):
    box = md.ensure_maildir(tmp_path / "M")
    assert md.base_name("123.M1P2Q3.host:2,RS") == "123.M1P2Q3.host"
    assert md.base_name("123.M1P2Q3.host") == "123.M1P2Q3.host"
    p = md.deliver(box, b"x", name="1.a.host")
    os.rename(p, box / "cur" / "2.b.host:2,S")
    md.deliver(box, b"y", name="3.c.host")
    (box / "new" / ".hidden").write_bytes(b"not a message")
    names = [x.name for x in md.list_messages(box)]
    assert names == ["2.b.host:2,S", "3.c.host"]
    assert md.find_message(box, "2.b.host") == box / "cur" / "2.b.host:2,S"
    assert md.find_message(box, "3.c.host") == box / "new" / "3.c.host"
    assert md.find_message(box, "nope") is None


def test_junk_folder_is_maildirplusplus(tmp_path):
    box = md.ensure_maildir(tmp_path / "Maildir")
    junk = md.ensure_folder(box, ".Junk")
    assert junk == box / ".Junk"
    for sub in ("tmp", "new", "cur"):
        assert (junk / sub).is_dir()
    assert (junk / "maildirfolder").is_file()
    assert (junk / "maildirfolder").stat().st_size == 0
    assert md.ensure_folder(box, "Junk") == junk  # the leading dot is added
    with pytest.raises(md.MaildirError):
        md.folder_path(box, "../evil")


def test_move_keeps_name_and_bytes_and_never_overwrites(tmp_path):
    box = md.ensure_maildir(tmp_path / "Maildir")
    junk = md.ensure_folder(box)
    p = md.deliver(box, b"spam spam", name="1.x.host")
    ino = p.stat().st_ino
    dest = md.move(p, junk / "new")
    assert dest == junk / "new" / "1.x.host"
    assert dest.read_bytes() == b"spam spam" and not p.exists()
    assert dest.stat().st_ino == ino  # a rename, not a copy
    q = md.deliver(box, b"other", name="1.x.host")
    with pytest.raises(md.MaildirError):
        md.move(q, junk / "new")
    assert q.read_bytes() == b"other" and dest.read_bytes() == b"spam spam"


def test_move_across_filesystems_copies_fsyncs_links_then_unlinks(tmp_path, monkeypatch):
    box = md.ensure_maildir(tmp_path / "Maildir")
    junk = md.ensure_folder(box)
    data = os.urandom(3 << 20)
    p = md.deliver(box, data, name="2.y.host:2,S")
    real_rename = os.rename
    calls = []

    def no_cross_rename(src, dst, *a, **k):
        if Path(src) == p:  # what rename(2) says across filesystems
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(src, dst, *a, **k)

    real_link, real_unlink = os.link, os.unlink
    monkeypatch.setattr(os, "rename", no_cross_rename)
    monkeypatch.setattr(os, "link", lambda s, d: (calls.append(("link", Path(d))),
                                                  real_link(s, d))[1])
    monkeypatch.setattr(os, "unlink", lambda s: (calls.append(("unlink", Path(s))),
                                                 real_unlink(s))[1])
    dest = md.move(p, junk / "cur")
    assert dest == junk / "cur" / "2.y.host:2,S"
    assert hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert not p.exists()
    assert os.listdir(junk / "tmp") == []
    kinds = [k for k, _ in calls]
    # the link into place comes before the source is unlinked
    assert kinds.index("link") < [i for i, (k, x) in enumerate(calls) if x == p][0]


@pytest.mark.skipif(not os.path.isdir("/dev/shm") or not os.access("/dev/shm", os.W_OK),
                    reason="no writable /dev/shm (another filesystem) here")
def test_move_to_a_real_other_filesystem(tmp_path):
    import tempfile

    box = md.ensure_maildir(tmp_path / "Maildir")
    p = md.deliver(box, b"hello across", name="3.z.host")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        if os.stat(other).st_dev == os.stat(box).st_dev:
            pytest.skip("/dev/shm is on the same filesystem here")
        far = md.ensure_folder(md.ensure_maildir(Path(other) / "M"))
        dest = md.move(p, far / "new")
        assert dest.read_bytes() == b"hello across" and not p.exists()


def test_state_records_survive_reopen(tmp_path):
    db = tmp_path / "s.sqlite3"
    st = State(db)
    st.put(Record("/m", "1.a", "<a@b>", 10, "ff", 0.9, "spam", "moving", "daemon", None, 1, 1))
    st.set_place("/m", "1.a", "junk")
    st.add_correction("/m", "1.a", "spam", "/m/.Junk/cur/1.a")
    st.close()
    st = State(db)
    rec = st.get("/m", "1.a")
    assert rec is not None and rec.place == "junk" and rec.verdict == "spam"
    assert [r.uniq for r in st.by_sha("/m", "ff", "junk")] == ["1.a"]
    assert st.corrections("/m") == [("1.a", "spam", "/m/.Junk/cur/1.a")]
    with pytest.raises(ValueError):
        st.set_place("/m", "1.a", "elsewhere")
    st.close()
