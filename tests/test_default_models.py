"""The shipped models on the test parts of the shared splits (never trained on them).

Guards the figures the README reports: a change that makes the shipped model
worse fails here. Limits are the measured figures with a little slack for
BLAS rounding differences between machines.
"""

from __future__ import annotations

import numpy as np

from nnspam.mail.corpus import load_split_samples
from nnspam.model.core import Model
from nnspam.services.runs.evaluate import evaluate
from nnspam.services.runs.training import labels_of, tokenize_samples

from conftest import SA_SPLIT, SA_TAR, SMS_FILE, SMS_SPLIT, needs_corpora


def _evaluate(model: Model, samples):
    toks = tokenize_samples([s.payload for s in samples], model.kind, model.max_part_bytes)
    sp = model.spamicity_of_tokens(toks)
    return evaluate(labels_of(samples), sp, 0.5, 0.9, 0.1)


@needs_corpora
def test_default_email_model_on_spamassassin_test_split():
    model = Model.load("default")
    assert "train part" in model.summary["provenance"]["trained_on"]
    ev = _evaluate(model, load_split_samples(str(SA_SPLIT), str(SA_TAR), "test"))
    assert (ev.n_ham, ev.n_spam) == (1288, 567)
    assert ev.false_positives <= 1  # target; measured: 1
    # target is 8 (1.5%), not met; measured: 10 (1.76%); the seed figures to beat
    # (issue 8, DBB-RDNN-ReL-style) are 0.93% ham lost and 3.4% (19) spam missed
    assert ev.false_negatives <= 12
    assert ev.roc_auc >= 0.9996  # target; measured: 0.99989


@needs_corpora
def test_default_sms_model_on_sms_test_split():
    model = Model.load("default-sms")
    ev = _evaluate(model, load_split_samples(str(SMS_SPLIT), part="test",
                                             sms_file=str(SMS_FILE)))
    assert (ev.n_ham, ev.n_spam) == (1481, 213)
    assert ev.false_positives <= 2  # target <= 0.2%; measured: 0
    assert ev.spam_caught >= 0.93  # target; measured: 94.4% (201 of 213)
    assert ev.accuracy >= 0.989  # target; measured: 99.29%
    assert np.isfinite(ev.roc_auc) and ev.roc_auc >= 0.994  # measured: 0.9959
