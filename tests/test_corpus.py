"""Reading mail from every kind of source the commands accept."""

from __future__ import annotations

import io
import mailbox
import sys
import tarfile

import pytest

from nnspam.mail.corpus import (
    CorpusError,
    convert_mbox,
    iter_messages,
    load_split_samples,
    read_sms,
    read_split,
)

MSG1 = b"From: a@example.org\nSubject: one\n\nfirst body\n"
MSG2 = b"From: b@example.org\nSubject: two\n\nsecond body\n"


def make_maildir(root, msgs):
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    (root / "new" / "1.a.host").write_bytes(msgs[0])
    (root / "cur" / "2.b.host:2,S").write_bytes(msgs[1])
    (root / "tmp" / "3.c.host").write_bytes(b"partial delivery")
    junk = root / ".Junk"
    (junk / "new").mkdir(parents=True)
    (junk / "cur").mkdir()
    (junk / "new" / "4.d.host").write_bytes(b"Subject: junk\n\nx\n")
    return root


def test_maildir_reads_new_and_cur_only(tmp_path):
    md = make_maildir(tmp_path / "Maildir", [MSG1, MSG2])
    samples = list(iter_messages([str(md)], "ham"))
    assert sorted(s.payload for s in samples) == sorted([MSG1, MSG2])
    assert all(s.label == "ham" for s in samples)
    rel = [s.name[len(str(md)):] for s in samples]
    assert sorted(rel) == ["/cur/2.b.host:2,S", "/new/1.a.host"]


def test_directory_of_files_recursive_skips_cmds(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "00001.abc").write_bytes(MSG1)
    (tmp_path / "00002.def").write_bytes(MSG2)
    (tmp_path / "cmds").write_bytes(b"mv 1 2\n")
    samples = list(iter_messages([str(tmp_path)]))
    assert [s.payload for s in samples] == [MSG2, MSG1]
    assert samples[1].name.endswith("a/00001.abc")


def test_single_file_and_stdin(tmp_path, monkeypatch):
    f = tmp_path / "msg.eml"
    f.write_bytes(MSG1)
    assert [s.payload for s in iter_messages([str(f)])] == [MSG1]

    class FakeStdin:
        buffer = io.BytesIO(MSG2)

    monkeypatch.setattr(sys, "stdin", FakeStdin)
    (s,) = list(iter_messages(["-"]))
    assert s.name == "-" and s.payload == MSG2


def test_mbox_split_into_messages(tmp_path):
    box = tmp_path / "box"
    box.write_bytes(
        b"From a@example.org Mon Jan  1 00:00:00 2024\n" + MSG1 + b"\n"
        b"From b@example.org Mon Jan  1 00:00:00 2024\n" + MSG2
    )
    samples = list(iter_messages([str(box)]))
    assert len(samples) == 2
    assert samples[0].name == f"{box}#0"
    assert b"first body" in samples[0].payload and b"second body" in samples[1].payload


def test_single_message_with_from_line_is_kept_byte_for_byte(tmp_path):
    raw = b"From x@example.org Mon Jan  1 00:00:00 2024\n" + MSG1
    f = tmp_path / "00001.abc"
    f.write_bytes(raw)
    assert [s.payload for s in iter_messages([str(f)])] == [raw]


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        list(iter_messages([str(tmp_path / "nope")]))


def test_convert_mbox_to_maildir(tmp_path):
    box = tmp_path / "box"
    box.write_bytes(
        b"From a@example.org Mon Jan  1 00:00:00 2024\n" + MSG1 + b"\n"
        b"From b@example.org Mon Jan  1 00:00:00 2024\n" + MSG2
    )
    n = convert_mbox(str(box), str(tmp_path / "md"))
    assert n == 2
    got = sorted(p.read_bytes() for p in (tmp_path / "md" / "new").iterdir())
    assert len(got) == 2 and b"first body" in got[0] + got[1]
    assert list((tmp_path / "md" / "tmp").iterdir()) == []
    # the maildir reads back as the same two messages
    assert len(list(iter_messages([str(tmp_path / "md")]))) == 2
    assert len(mailbox.Maildir(str(tmp_path / "md"), create=False)) == 2


def test_read_sms_and_errors(tmp_path):
    f = tmp_path / "sms"
    f.write_text("ham\tSee you at 5\nspam\tWIN £1000 now! txt 80082\n")
    s = read_sms(str(f))
    assert [(x.name, x.label) for x in s] == [("line:0", "ham"), ("line:1", "spam")]
    assert s[1].payload.startswith("WIN")
    f.write_text("maybe\tfoo\n")
    with pytest.raises(CorpusError, match=":1:"):
        read_sms(str(f))


def test_split_from_directory_and_tarball(tmp_path):
    root = tmp_path / "corpus" / "spamassassin"
    (root / "ham").mkdir(parents=True)
    (root / "spam").mkdir()
    (root / "ham" / "h1").write_bytes(MSG1)
    (root / "spam" / "s1").write_bytes(MSG2)
    split = tmp_path / "split.tsv"
    split.write_text("path\tlabel\tsplit\nham/h1\tham\ttrain\nspam/s1\tspam\ttest\n")
    assert read_split(str(split), "test") == [("spam/s1", "spam", "test")]
    got = load_split_samples(str(split), str(root), "train")
    assert [(s.name, s.label, s.payload) for s in got] == [("ham/h1", "ham", MSG1)]
    # the parent of the top directory works too
    assert load_split_samples(str(split), str(tmp_path / "corpus"), "test")[0].payload == MSG2
    tar_path = tmp_path / "c.tar.xz"
    with tarfile.open(tar_path, "w:xz") as tar:
        tar.add(root, arcname="spamassassin")
    both = load_split_samples(str(split), str(tar_path))
    assert [s.payload for s in both] == [MSG1, MSG2]


def test_split_errors(tmp_path):
    split = tmp_path / "split.tsv"
    split.write_text("path\tlabel\tsplit\nham/h1\tgood\ttrain\n")
    with pytest.raises(CorpusError, match="split.tsv:2"):
        read_split(str(split))
    split.write_text("path\tlabel\tsplit\nham/h1\tham\ttrain\n")
    with pytest.raises(CorpusError, match="h1"):
        load_split_samples(str(split), str(tmp_path))
