"""Word lists: the original frequency procedure, information-based selection, the file format."""

from __future__ import annotations

import pytest

from nnspam.learning.wordlist import (
    WordListError,
    build,
    is_noise,
    read_wordlist,
    select_frequent,
    write_wordlist,
)

SPAM = [
    ["viagra", "the", "cheap", "viagra", "pills", "example.com", "url:example.com", "12345"],
    ["viagra", "cheap", "und", "offer", "les", "from:domain:spam.biz"],
    ["cheap", "offer", "viagra", "meeting"],
]
HAM = [
    ["meeting", "tomorrow", "the", "agenda"],
    ["meeting", "agenda", "notes", "offer"],
    ["tomorrow", "agenda", "meeting"],
]


def test_frequency_list_is_the_original_procedure():
    got = select_frequent(SPAM, 10)
    assert got[0] == (4, "viagra")
    assert got[1] == (3, "cheap")
    words = [w for _, w in got]
    # stop words (en, de, fr), domain names, numbers and prefixed tokens are dropped
    for dropped in ("the", "und", "les", "example.com", "12345", "url:example.com"):
        assert dropped not in words
    assert words == ["viagra", "cheap", "offer", "meeting", "pills"]


def test_noise_rules():
    assert is_noise("www.example.co.uk")
    assert is_noise("1,000")
    assert is_noise("subject:free")
    assert not is_noise("free")
    assert not is_noise("v1.2")  # a version number is a word, not a domain


def test_information_gain_picks_words_of_both_classes():
    got = [w for _, w in build(SPAM, HAM, 4, "ig", min_df=2)]
    assert "viagra" in got and "agenda" in got
    assert "offer" not in got[:2]  # in both classes: little information
    chi = [w for _, w in build(SPAM, HAM, 4, "chi2", min_df=2)]
    assert "viagra" in chi and "agenda" in chi


def test_min_df_and_method_errors():
    got = [w for _, w in build(SPAM, HAM, 50, "ig", min_df=3)]
    assert "pills" not in got  # one message only
    with pytest.raises(WordListError, match="needs ham"):
        build(SPAM, None, 5, "ig")
    with pytest.raises(WordListError, match="unknown selection"):
        build(SPAM, HAM, 5, "magic")
    with pytest.raises(WordListError, match="at least 1"):
        build(SPAM, HAM, 0, "freq")


def test_file_round_trip_and_hand_edits(tmp_path):
    f = tmp_path / "words"
    write_wordlist(f, [(4, "viagra"), (3, "cheap"), (1, "skip:x 30")], comment="test list")
    text = f.read_text()
    assert text.startswith("# test list\n4\tviagra\n")
    assert read_wordlist(f) == [(4, "viagra"), (3, "cheap"), (1, "skip:x 30")]
    f.write_text(text + "\nbareword\n3\tcheap\n")  # hand edit: bare word, duplicate
    assert read_wordlist(f)[-1] == (0, "bareword")
    assert len(read_wordlist(f)) == 4


def test_bad_wordlist_files(tmp_path):
    f = tmp_path / "words"
    f.write_text("# only a comment\n")
    with pytest.raises(WordListError, match="no words"):
        read_wordlist(f)
    f.write_text("lots\tviagra\n")
    with pytest.raises(WordListError, match="words:1"):
        read_wordlist(f)
    with pytest.raises(WordListError, match="missing"):
        read_wordlist(tmp_path / "missing")
