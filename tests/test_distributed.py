"""Archive training on a Dask cluster (nnspam/services/runs/distributed.py): a LocalCluster of
two worker processes gives the word list and the model of one process.

The word list comes from counts summed over shards (nnspam.learning.wordlist.DocCounts), so
it is the same list exactly; the members train on the workers with their own seeds, and the
merged network scores the test messages as the one-process network does (measured: the
same spamicities to the last bit, the same errors).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from nnspam import config as C
from nnspam.learning import wordlist as wl
from nnspam.services.runs.distributed import DistributedError, parse_address

from conftest import SA_SPLIT, SA_TAR, needs_corpora

pytestmark = needs_corpora


@pytest.fixture(scope="module")
def parts(sa_corpus):
    from nnspam.mail.corpus import load_split_samples

    train = load_split_samples(SA_SPLIT, sa_corpus, part="train")
    test = load_split_samples(SA_SPLIT, sa_corpus, part="test")
    return train[::3], test[::2]  # every third training message: a quick, mixed sample


def small_recipe():
    from nnspam.services.runs.training import Recipe

    return Recipe.from_config(C.DEFAULTS, "email", overrides={
        "wordlist": {"size": 1000},
        "network": {"hidden": 32, "max_epochs": 5, "members": 2}})


def test_counts_of_shards_add_up_to_the_word_list_of_one_pass(parts):
    from nnspam.services.runs.training import labels_of, tokenize_samples

    train, _ = parts
    toks = tokenize_samples([s.payload for s in train])
    y = labels_of(train)
    spam = [t for t, c in zip(toks, y, strict=True) if c]
    ham = [t for t, c in zip(toks, y, strict=True) if not c]
    shards = [wl.count_docs([t for t, c in zip(toks[i::4], y[i::4], strict=True) if c],
                            [t for t, c in zip(toks[i::4], y[i::4], strict=True) if not c])
              for i in range(4)]
    total = shards[0] + shards[1] + shards[2] + shards[3]
    for method in ("ig", "chi2", "freq"):
        assert wl.from_counts(total, 1500, method, 2) == wl.build(spam, ham, 1500, method, 2)


@pytest.mark.parametrize("spec, want", [("local", ("local", None)), ("local:3", ("local", 3)),
                                        ("tcp://10.0.0.5:8786", ("tcp://10.0.0.5:8786", None))])
def test_addresses(spec, want):
    assert parse_address(spec) == want


@pytest.mark.parametrize("spec", ["local:0", "local:x", "nowhere"])
def test_bad_addresses_are_one_line_errors(spec):
    with pytest.raises(DistributedError):
        parse_address(spec)


@pytest.mark.slow
def test_a_local_cluster_of_two_trains_the_model_of_one_process(parts):
    from nnspam.services.runs.distributed import cluster, train_on_cluster
    from nnspam.services.runs.training import tokenize_samples, train_model

    train, test = parts
    recipe = small_recipe()
    alone = train_model(train, recipe)
    with cluster("local:2") as client:
        assert len(client.scheduler_info()["workers"]) == 2
        spread = train_on_cluster(client, train, recipe, shard=300)
        # read as a stream in another order (a tar's), put back in the given order
        shuffled = [train[i] for i in np.random.default_rng(7).permutation(len(train))]
        streamed = train_on_cluster(client, iter(shuffled), recipe, shard=300,
                                    order=[x.name for x in train])
    assert streamed.words == spread.words
    probe = tokenize_samples([s.payload for s in test])
    assert np.array_equal(streamed.spamicity_of_tokens(probe), spread.spamicity_of_tokens(probe))
    assert np.array_equal(streamed.wide.df, spread.wide.df)
    assert spread.words == alone.words
    assert spread.summary["wordlist"] == alone.summary["wordlist"]
    assert [m["seed"] for m in spread.summary["members"]] == [1, 2]
    toks = tokenize_samples([s.payload for s in test])
    a, b = alone.spamicity_of_tokens(toks), spread.spamicity_of_tokens(toks)
    # the tolerance allowed; measured: 0.0 (the members' sums do not depend on the worker)
    assert np.abs(a - b).max() <= 1e-4
    assert ((a >= 0.5) == (b >= 0.5)).all()
    # the wide path's counts, summed over the shards on the cluster, are the same counts
    assert spread.wide.docs == alone.wide.docs == len(train)
    assert np.array_equal(spread.wide.df, alone.wide.df)
    # and a correction (taught through the wide path by default) moves both alike
    from nnspam.config import DEFAULTS
    from nnspam.model.correct import correct, rule_from_config

    rule = rule_from_config(DEFAULTS)
    for m in (alone, spread):
        correct(m, [toks[0]], "spam" if a[0] < 0.5 else "ham", rule)
    assert np.abs(alone.spamicity_of_tokens(toks) - spread.spamicity_of_tokens(toks)).max() <= 1e-4


def test_the_train_part_streamed_from_the_archive_is_the_split_s_train_part(sa_corpus):
    from nnspam.mail.corpus import iter_split_samples, load_split_samples

    whole = {s.name: s for s in load_split_samples(SA_SPLIT, SA_TAR, part="train")}
    seen = 0
    for s in iter_split_samples(SA_SPLIT, SA_TAR):
        assert whole[s.name].payload == s.payload and whole[s.name].label == s.label
        seen += 1
    assert seen == len(whole)
    streamed = [s.name for s in iter_split_samples(SA_SPLIT, str(sa_corpus))]  # a directory
    assert streamed == list(whole)


@pytest.mark.slow
def test_nnspam_train_dask_on_the_command_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("wordlist:\n  size: 500\nnetwork:\n  hidden: 16\n  max_epochs: 3\n"
                   "  members: 2\n")
    out = tmp_path / "model"
    r = subprocess.run([sys.executable, "-m", "nnspam", "train", "-c", str(cfg), "-m", str(out),
                        "--split", str(SA_SPLIT), "--corpus", str(SA_TAR), "--dask", "local:2"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert (out / "weights.npz").is_file() and "wrote" in r.stderr
    # the archive streamed to the cluster in its own order trains the model of one process
    alone = tmp_path / "alone"
    r = subprocess.run([sys.executable, "-m", "nnspam", "train", "-c", str(cfg), "-m",
                        str(alone), "--split", str(SA_SPLIT), "--corpus", str(SA_TAR)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    from nnspam.mail.corpus import load_split_samples
    from nnspam.model.core import Model

    probe = [x.payload for x in load_split_samples(SA_SPLIT, SA_TAR, part="test")[::10]]
    a, b = Model.load(out), Model.load(alone)
    assert a.words == b.words
    assert np.abs(a.score(probe) - b.score(probe)).max() <= 1e-4
    r = subprocess.run([sys.executable, "-m", "nnspam", "train", "-m", str(out), "--split",
                        str(SA_SPLIT), "--corpus", str(SA_TAR), "--dask", "nowhere"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--dask" in r.stderr
