"""The architecture codecs (nnspam/model/codec.py), the sparse arrays the wide path and the
grams part share (nnspam/model/slots.py SpreadSlots), and the model's free input slots."""

from __future__ import annotations

import dataclasses
import json
import zipfile

import numpy as np
import pytest

from nnspam.learning.arch import ARCHS, MLP, SequenceEncoder
from nnspam.learning.features import SCALINGS, Vectorizer
from nnspam.learning.network import Network
from nnspam.model import adaptive
from nnspam.model.codec import CODECS, NETWORK_WEIGHTS, codec_of
from nnspam.model.core import FREE_PREFIX, Model, ModelError
from nnspam.model.correct import admit_free_inputs, free_inputs
from nnspam.model.grams import Grams
from nnspam.model.wide import Wide

WORDS = [f"w{i}" for i in range(12)]


def _model(arch: str) -> Model:
    """A small model of ``arch`` with seeded weights (no training)."""
    n = len(WORDS)
    if arch == "nnspam":
        return Model(words=list(WORDS), network=Network(n, n_hidden=5).initialize())
    if arch == "deep":
        mlp = MLP(n, layers=[6, 4])
        mlp.set_weights(mlp.initial_weights())
        return Model(words=list(WORDS), network=mlp, arch="deep", scaling="tfidf", ngram=1,
                     idf=np.linspace(1.0, 2.0, n).astype(np.float32))
    mlp = MLP(n, layers=[6], output="sigmoid", embedding=3, length=5)
    mlp.set_weights(mlp.initial_weights())
    return Model(words=list(WORDS), network=mlp, kind="sms", arch="sms-embedding",
                 scaling="index")


def _npz_names(path) -> list[str]:
    with zipfile.ZipFile(path / "weights.npz") as zf:
        return [i.filename.removesuffix(".npy") for i in zf.infolist()]


def test_the_table_has_a_codec_for_every_architecture_in_order():
    assert tuple(CODECS) == ARCHS
    assert all(codec.name == name for name, codec in CODECS.items())
    with pytest.raises(ValueError, match="unknown architecture 'wide' \\(use one of"):
        codec_of("wide")


def test_scalings_and_vectorizers_per_architecture():
    assert CODECS["nnspam"].scalings == CODECS["deep"].scalings == SCALINGS
    assert not CODECS["nnspam"].allows("index") and not CODECS["deep"].allows("index")
    assert CODECS["sms-embedding"].allows("index") and CODECS["sms-embedding"].allows("log")
    assert isinstance(_model("sms-embedding").vectorizer, SequenceEncoder)
    assert isinstance(_model("deep").vectorizer, Vectorizer)
    with pytest.raises(ValueError, match="an sms-embedding model needs an MLP with an embedding"):
        Model(words=list(WORDS), network=Network(len(WORDS)), arch="sms-embedding",
              scaling="index")
    with pytest.raises(ValueError, match="unknown architecture"):
        Model(words=list(WORDS), network=Network(len(WORDS)), arch="nope")


def test_only_the_nnspam_network_journals_its_changes():
    assert [n for n, c in CODECS.items() if c.journal_network] == ["nnspam"]


@pytest.mark.parametrize("arch", ARCHS)
def test_save_and_load_every_architecture(tmp_path, arch):
    model = _model(arch)
    model.save(tmp_path / "m")
    names = _npz_names(tmp_path / "m")
    if arch == "nnspam":
        assert names == list(NETWORK_WEIGHTS)
    else:
        want = list(model.network.param_shapes()) + (["idf"] if arch == "deep" else [])
        assert names == want
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["arch"] == arch and list(meta["weights_crc32"]) == names
    back = Model.load(tmp_path / "m")
    assert back.arch == arch and type(back.network) is type(model.network)
    got, want_w = back.network.get_weights(), model.network.get_weights()
    assert list(got) == list(want_w)
    for k in want_w:
        np.testing.assert_array_equal(got[k], want_w[k].astype(np.float32))
    toks = [["w1", "w3", "w3", "x"], ["w0"]]
    np.testing.assert_array_equal(back.spamicity_of_tokens(toks), model.spamicity_of_tokens(toks))


def _edit_json(path, **changes):
    meta = json.loads((path / "model.json").read_text())
    meta.update(changes)
    (path / "model.json").write_text(json.dumps(meta))


def test_load_errors_name_the_file(tmp_path):
    for arch in ARCHS:
        _model(arch).save(tmp_path / arch)
    _edit_json(tmp_path / "nnspam", scaling="index")
    with pytest.raises(ModelError, match=r"model\.json: unknown scaling 'index'"):
        Model.load(tmp_path / "nnspam")
    _edit_json(tmp_path / "deep", network={"layers": [], "n_inputs": 3})
    with pytest.raises(ModelError, match=r"model\.json: bad network for arch deep \("):
        Model.load(tmp_path / "deep")
    meta = json.loads((tmp_path / "sms-embedding" / "model.json").read_text())
    _edit_json(tmp_path / "sms-embedding", network={**meta["network"], "embedding": 4},
               weights_crc32=None)
    with pytest.raises(ModelError,
                       match=r"weights\.npz: does not fit the sms-embedding network \("):
        Model.load(tmp_path / "sms-embedding")
    m = _model("nnspam")
    m.save(tmp_path / "n2")
    _edit_json(tmp_path / "n2", words=WORDS[:5], weights_crc32=None, weights_sha256=None)
    with pytest.raises(ModelError, match=r"weights\.npz: W1 has shape \(12, 5\), but model\.json "
                                         r"lists 5 words"):
        Model.load(tmp_path / "n2")
    m.save(tmp_path / "n3")
    meta = json.loads((tmp_path / "n3" / "model.json").read_text())
    _edit_json(tmp_path / "n3", network={**meta["network"], "n_hidden": 7})
    with pytest.raises(ModelError, match=r"weights\.npz: does not fit the network in model\.json"):
        Model.load(tmp_path / "n3")


# -- the sparse arrays of the wide path and the grams part ------------------------------------

def test_saved_array_names_are_as_before():
    assert Wide.saved_names() == ("wide_index", "wide_value", "wide_df_index", "wide_df")
    assert Grams.saved_names() == ("grams_index", "grams_value", "grams_sig_index", "grams_sig")
    assert (Wide.PART, Grams.PART) == ("wide", "grams")


def test_parts_spread_their_arrays_on_first_use_only():
    toks = ["from:addr:a@b", "cheap", "pills", "now"]
    wide, grams = Wide(bits=12), Grams(bits=12)
    wide.observe([toks])
    wide.step(toks, 2.0)
    grams.learn(toks, "spam")
    w2 = Wide.from_arrays(wide.meta(), wide.arrays())
    g2 = Grams.from_arrays(grams.meta(), grams.arrays())
    assert w2._w is None and w2._df is None and g2._w is None and g2._sig is None
    np.testing.assert_array_equal(w2.logit([toks]), wide.logit([toks]))
    assert w2._w is not None and w2._saved is None
    np.testing.assert_array_equal(w2.df, wide.df)
    np.testing.assert_array_equal(g2.margins([toks]), grams.margins([toks]))
    np.testing.assert_array_equal(g2.sig, grams.sig)
    assert g2.sig.dtype == np.float32 and float(g2.sig.max()) == 1.0
    arrays = dict(wide.arrays())
    arrays["wide_df_index"] = arrays["wide_df_index"][:-1]
    with pytest.raises(ValueError, match="wide_df_index and wide_df differ in shape"):
        Wide.from_arrays(wide.meta(), arrays)
    arrays = dict(grams.arrays())
    arrays["grams_index"] = arrays["grams_index"] + (1 << 12)
    with pytest.raises(ValueError, match="grams_index out of range"):
        Grams.from_arrays(grams.meta(), arrays)


# -- free input slots ------------------------------------------------------------------------

def _free_model(n: int = 6) -> Model:
    words = ["known"] + [f"{FREE_PREFIX}{i}" for i in range(1, n)]
    model = Model(words=words, network=Network(n, n_hidden=3).initialize())
    adaptive.ensure_state(model)
    return model


def test_free_slots_are_a_declared_field_of_the_model():
    field = {f.name: f for f in dataclasses.fields(Model)}["_free_slots"]
    assert not field.init and not field.compare
    model = _free_model()
    assert free_inputs(model) == [1, 2, 3, 4, 5] and model._free_slots is None
    assert not model.handing_out_free_slots()
    assert admit_free_inputs(model, [["a", "b"]], admit_min=1.0) == 2
    assert model.words[:3] == ["known", "a", "b"] and model.vectorizer.index["b"] == 2
    assert model.handing_out_free_slots() and model._free_slots == [5, 4, 3]
    # a copy is another model: its own stack, from its own words
    assert dataclasses.replace(model)._free_slots is None


def test_a_slot_taken_meanwhile_costs_that_token_its_turn():
    model = _free_model()
    assert admit_free_inputs(model, [["a"]], admit_min=1.0) == 1
    model.replace_input(2, "r")  # as an adaptive replacement would
    assert admit_free_inputs(model, [["b", "c", "d", "e", "f"]], admit_min=1.0) == 3
    assert model.words == ["known", "a", "r", "c", "d", "e"]
    assert not model.free_slot_left()
    assert admit_free_inputs(model, [["g"]], admit_min=1.0) == 0
    assert free_inputs(model) == []
