"""The grams part (nnspam/model/grams.py): byte 4-grams of a message's head and its
tokens, learned by AROW from the user's own mail, beside the network and the wide path.

What is promised: a model that never learned scores as before (the shipped model's
figures do not move); the head token reaches the grams part and nothing else (not the
wide path, the adaptive inputs or the journal's name of a message), with nnspam's own
verdict headers taken out; a ham taught once is never again scored with certainty, however
much spam that shares its words is learned after it; a correction sticks on the whole
score; the part survives save/load, the journal (forget) and a fleet delta.
"""

from __future__ import annotations

import math

import numpy as np

from nnspam.mail.tokens import HEAD_MARK, head_token
from nnspam.model import grams as G
from nnspam.model.core import Model
from nnspam.model.correct import Rule, correct, forget, rule_from_config
from nnspam.model.delta import apply_delta, make_delta
from nnspam.model.journal import Journal, message_key

from conftest import make_message

#: A spamicity that prints as 1.000000 (``nnspam stream``'s 6 decimals): certainty.
CERTAIN = math.log(0.9999995 / 0.0000005)


def fresh(shipped: Model) -> Model:
    from nnspam.model.delta import private_copy

    return private_copy(shipped)


def ham_message(i: int = 0) -> bytes:
    return make_message(f"Minutes of the budget meeting {i}",
                        "Dear team, attached are the minutes of Tuesday's budget meeting. "
                        "Please review the quarterly figures before Friday. Regards, Bob",
                        sender="bob@corp.example")


def spam_message(i: int) -> bytes:
    # shares the ham's words (budget, meeting, minutes, figures, review...) and adds spam
    return make_message(f"Cheap pills budget meeting {i}",
                        "Dear team, minutes of the budget meeting: review the quarterly "
                        f"figures. Buy cheap viagra now, best price {i}, click here "
                        "http://pills.example/buy casino winner",
                        sender=f"promo{i}@spam{i % 7}.example")


def test_untaught_model_scores_as_before(shipped: Model) -> None:
    m = fresh(shipped)
    toks = [m.tokens(ham_message()), m.tokens(spam_message(1))]
    assert m.grams is None and m.grams_margins(toks) is None
    sp, z = m.judge_tokens(toks)
    out = m.outputs(toks)
    from nnspam.model.core import network_logit

    assert np.array_equal(z, network_logit(out, m.ham_factor, m.spam_factor))
    assert np.array_equal(G.combine(z, None, -2.0), z)


def test_head_token_reaches_only_the_grams_part(shipped: Model) -> None:
    raw = (b"Received: from relay.example ([192.0.2.7])\nX-NNSpam-Status: Spam, 0.99\n"
           b"X-Spam-Flag: YES\nFrom: bob@corp.example\nSubject: hello\n\nhi there\n")
    toks = shipped.tokens(raw)
    assert toks[-1].startswith(HEAD_MARK)
    assert "X-NNSpam" not in toks[-1] and "X-Spam-Flag" not in toks[-1]
    assert "Received: from relay.example" in toks[-1]
    assert toks[-1] == head_token(raw)
    # the journal's name of a message and the wide path's slots ignore it
    assert message_key(toks) == message_key(toks[:-1])
    m = fresh(shipped)
    w = m.ensure_wide()
    assert np.array_equal(w.indices(toks), w.indices(toks[:-1]))
    # only the grams part sees the relay: two messages that differ in it alone
    other = shipped.tokens(raw.replace(b"192.0.2.7", b"198.51.100.9"))
    g = m.ensure_grams()
    assert not np.array_equal(g.slots(toks), g.slots(other))
    assert np.array_equal(w.indices(toks), w.indices(other))


def test_a_ham_taught_once_is_never_again_certain(shipped: Model) -> None:
    """Full feedback (every message learned, the untrained rule's pushes to the margins):
    a ham taught once stays a ham however much spam that shares its words is learned after
    it, and no message, however long and however full of spam's words, is scored with
    certainty (the TREC stream's worst ham was a long one at logit 27). The network and
    wide path alone reach certainty on it: without the bound the test fails."""
    import random

    rng = random.Random(1)
    spam_words = [f"spw{i}x" for i in range(2000)]
    ham_words = [f"hmw{i}y" for i in range(2000)]

    def msg(words: list[str], k: int, i: int, sender: str) -> bytes:
        return make_message(f"note {i}", " ".join(rng.sample(words, k)), sender=sender)

    m = fresh(shipped)
    rule = rule_from_config({}, untrained=True).with_(journal=0)
    ham = m.tokens(ham_message())
    correct(m, [ham], "ham", rule)
    for i in range(400):
        if i % 3 == 0:
            correct(m, [m.tokens(msg(ham_words, 80, i, f"h{i}@corp.example"))], "ham", rule)
        correct(m, [m.tokens(msg(spam_words, 80, i, f"s{i}@spam{i}.example"))], "spam", rule)
        correct(m, [m.tokens(spam_message(i))], "spam", rule)
    assert float(m.judge_tokens([ham])[1][0]) < 0
    long = m.tokens(msg(spam_words, 1800, 999, "newsletter@corp.example"))
    z = float(m.judge_tokens([long])[1][0])
    assert z <= G.max_logit(math.log(m.spam_factor / m.ham_factor)) + 1e-9 < CERTAIN
    net, wide = m.logits([long])
    assert float(net[0] + wide[0]) > CERTAIN, "the scenario no longer makes the old score certain"


def test_a_correction_sticks_on_the_whole_score(shipped: Model) -> None:
    m = fresh(shipped)
    rule = rule_from_config({})
    spams = [m.tokens(spam_message(i)) for i in range(5)]
    ham = m.tokens(ham_message(3))
    for t in spams:
        correct(m, [t], "spam", rule)
    # the grams part now leans to spam on these words; a ham that shares them, corrected
    z0 = float(m.judge_tokens([ham])[1][0])
    correct(m, [ham], "ham", rule)
    z1 = float(m.judge_tokens([ham])[1][0])
    assert z1 <= -rule.margin + 1e-6 or z1 < min(z0, 0.0), (z0, z1)
    assert z1 < 0
    for t in spams:
        correct(m, [t], "spam", rule)
        assert float(m.judge_tokens([t])[1][0]) > 0


def test_save_load_journal_forget_and_delta(shipped: Model, tmp_path) -> None:
    m = fresh(shipped)
    rule = Rule()
    held = [m.tokens(spam_message(100 + i)) for i in range(3)] + [m.tokens(ham_message(9))]
    before = m.judge_tokens(held)[1]
    raw = ham_message(5).replace(b"\n\n", b"\nX-Bin: a\x00b\n\n", 1)  # a NUL in the head
    t = m.tokens(raw)
    correct(m, [t], "spam", rule)
    correct(m, [m.tokens(spam_message(7))], "spam", rule)
    assert m.grams is not None and m.grams.active
    # the journal keeps the head token whole (NULs included) and the grams deltas
    j = Journal.read(__import__("io").BytesIO(m.journal.to_bytes()))
    assert j.entries[0].token_list == t
    assert j.entries[0].grams is not None and j.entries[0].grams[1] > 0
    # save and load: the same scores
    m.save(tmp_path / "m")
    back = Model.load(tmp_path / "m")
    assert np.allclose(back.judge_tokens(held)[1], m.judge_tokens(held)[1])
    # a fleet delta on the shipped model gives the same model
    user = apply_delta(shipped, make_delta(shipped, m))
    assert np.allclose(user.judge_tokens(held)[1], m.judge_tokens(held)[1])
    # forgetting both lessons leaves the grams part as it was: untouched slots, no steps
    forget(back, [back.tokens(spam_message(7)), back.tokens(raw)], rule)
    assert back.grams is not None and back.grams.updates == 0
    assert np.allclose(back.grams.w, 0.0, atol=1e-6) and np.allclose(back.grams.sig, 1.0,
                                                                       atol=1e-6)
    after = back.judge_tokens(held)[1]
    assert np.allclose(after, before, atol=1e-4), (after, before)
