"""The first day (issue 25): ``nnspam init MAILDIR -m DIR`` learns the mail a mailbox
already holds into a new model, the inbox and its folders as ham and Junk as spam, in
delivery order, leaving Trash, Drafts, Sent and Unsure out."""

from __future__ import annotations

import random

import pytest

from nnspam.front import cli
from nnspam.mail import maildir as md
from nnspam.model.core import Model
from nnspam.services.runs.first_day import FirstDayError, delivered_at, mailbox_items

from conftest import make_message

HAM_WORDS = "budget meeting minutes project schedule report review team quarter".split()
SPAM_WORDS = "viagra casino winner prize loan pills offer cheap bitcoin".split()


def _msg(rng: random.Random, words: list[str], i: int, sender: str) -> bytes:
    return make_message(" ".join(rng.sample(words, 3)) + f" {i}",
                        " ".join(rng.choices(words, k=40)), sender=sender)


@pytest.fixture
def mailbox(tmp_path):
    rng = random.Random(7)
    box = md.ensure_maildir(tmp_path / "Maildir")
    for i in range(40):
        md.deliver(box, _msg(rng, HAM_WORDS, i, f"colleague{i % 5}@corp.example"))
        md.deliver(md.ensure_folder(box, ".Junk"),
                   _msg(rng, SPAM_WORDS, i, f"promo{i}@spam{i % 9}.example"))
    for i in range(10):
        md.deliver(md.ensure_folder(box, ".Work"), _msg(rng, HAM_WORDS, 100 + i,
                                                         "boss@corp.example"))
        # deleted and sent mail is not learned: spam words in them must not become ham
        md.deliver(md.ensure_folder(box, ".Trash"), _msg(rng, SPAM_WORDS, 200 + i,
                                                          "x@spam.example"))
        md.deliver(md.ensure_folder(box, ".Sent"), _msg(rng, SPAM_WORDS, 300 + i,
                                                         "me@corp.example"))
    return box


def test_mailbox_items_takes_the_right_folders_in_delivery_order(mailbox):
    items, counts = mailbox_items(mailbox)
    assert counts == {"INBOX": 40, "Junk": 40, "Work": 10}
    assert sum(lab == "spam" for lab, _ in items) == 40 and len(items) == 90
    times = [delivered_at(p) for _, p in items]
    assert times == sorted(times)
    assert all(".Trash" not in str(p) and ".Sent" not in str(p) for _, p in items)
    items2, counts2 = mailbox_items(mailbox, skip=["Work"])
    assert "Work" not in counts2 and len(items2) == 80


def test_init_writes_a_model_that_knows_the_mailbox(mailbox, tmp_path, capsys):
    dest = tmp_path / "model"
    assert cli.main(["init", "-m", str(dest), str(mailbox), "--tokenizers", "0"]) == 0
    err = capsys.readouterr().err
    assert "learning 90 messages (50 ham, 40 spam)" in err and "unsure" in err
    model = Model.load(dest)
    assert model.summary["learned"] == {"ham": 50, "spam": 40}
    rng = random.Random(99)
    ham = model.tokens(_msg(rng, HAM_WORDS, 999, "colleague1@corp.example"))
    spam = model.tokens(_msg(rng, SPAM_WORDS, 998, "promo998@spam3.example"))
    sp = model.judge_tokens([ham, spam])[0]
    assert sp[0] < 0.5 <= sp[1], sp
    # never over an existing model
    assert cli.main(["init", "-m", str(dest), str(mailbox)]) == 2


def test_init_refuses_a_mailbox_without_spam(tmp_path, capsys):
    box = md.ensure_maildir(tmp_path / "M")
    md.deliver(box, make_message("hi", "hello"))
    with pytest.raises(FirstDayError):
        mailbox_items(box)
    assert cli.main(["init", "-m", str(tmp_path / "m"), str(box)]) == 1
    assert "no spam to learn from" in capsys.readouterr().err
    assert cli.main(["init", "-m", str(tmp_path / "m"), str(tmp_path / "nope")]) == 2
