"""The hashed slots shared by the wide path and the grams part (nnspam/model/slots.py):
the fast paths give exactly what the plain ones gave."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from nnspam.model.slots import sorted_unique, token_hash, word_hashes, words_of


@pytest.mark.parametrize("size", [0, 1, 2, 7, 600, 5000])
def test_sorted_unique_is_np_unique(size):
    rng = np.random.default_rng(size)
    for high in (3, 1 << 20):
        a = rng.integers(0, high, size=size, dtype=np.int64)
        got = sorted_unique(a)
        assert got.dtype == a.dtype and np.array_equal(got, np.unique(a))


def test_words_and_hashes_of_a_message():
    toks = ["subject:win", "cash", "cash", "\x00head:Received: x", "caf\udce9", "from:addr:a@b"]
    words = words_of(toks)
    assert sorted(words) == sorted({"subject:win", "cash", "caf\udce9", "from:addr:a@b"})
    crcs = word_hashes(toks)
    assert crcs.tolist() == [zlib.crc32(w.encode("utf-8", "surrogateescape")) for w in words]
    assert crcs.tolist() == [token_hash(w) for w in words]
    other = list(toks)  # an equal list is another message: hashed afresh, not from the memo
    other[1] = "prize"
    assert "prize" in words_of(other) and "prize" not in words_of(toks)
