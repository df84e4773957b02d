"""How each architecture's network is kept in a model directory: the table
:data:`CODECS`, one :class:`ArchCodec` per name of :data:`nnspam.learning.arch.ARCHS`
(``tests/test_model_codec.py`` checks that the two agree).

A codec says, for its architecture,

* which arrays of ``weights.npz`` hold the network (:meth:`ArchCodec.saved_arrays` for
  :meth:`nnspam.model.core.Model.save`, :meth:`ArchCodec.plan` for the loader: their names
  follow from ``model.json``'s ``network`` object and ``scaling``),
* how the network is built from that object and those arrays (:meth:`ArchCodec.network`),
* which feature scalings its inputs may have and what turns token lists into them
  (:meth:`ArchCodec.vectorizer`),
* whether the correction journal can record what a correction changed in the network
  (:attr:`ArchCodec.journal_network`).

``nnspam`` is the n-h-2 network of :mod:`nnspam.learning.network` (``W1, b1, W2, b2``);
``deep`` and ``sms-embedding`` are :class:`nnspam.learning.arch.MLP`, whose arrays are its
``param_shapes()`` plus ``idf`` with tf-idf inputs; ``sms-embedding`` alone reads word
indices (scaling ``index``, :class:`nnspam.learning.arch.SequenceEncoder`).

What does not fit is a :class:`CodecError` whose message leaves out the file: the loader
(:meth:`nnspam.model.core.Model.load`) names ``model.json`` or ``weights.npz`` in front of
it, as its :class:`~nnspam.model.core.ModelError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnspam.learning.arch import ARCHS, MLP, SequenceEncoder
from nnspam.learning.features import SCALINGS, Vectorizer
from nnspam.learning.network import Network

__all__ = ["CODECS", "ArchCodec", "CodecError", "NETWORK_WEIGHTS", "Plan", "codec_of"]

#: The arrays of an ``nnspam`` network, in the order weights.npz holds them.
NETWORK_WEIGHTS = ("W1", "b1", "W2", "b2")


class CodecError(ValueError):
    """A network description or weights that do not fit the architecture; the message
    says what, and the caller says which file."""


@dataclass(frozen=True)
class Plan:
    """What the loader reads for a network: the arrays of weights.npz (``names``; ``idf``
    among them for tf-idf inputs of an MLP) and the network built from model.json before
    they are read (None where it is built with them)."""

    names: tuple[str, ...]
    network: Network | MLP | None = None


@dataclass(frozen=True)
class ArchCodec(ABC):
    """One architecture's way into and out of a model directory (see the module
    docstring). ``scalings``: the feature scalings its model.json may name.
    ``sequence``: its inputs are word indices (:class:`SequenceEncoder`), not scaled word
    counts. ``journal_network``: its network's change by a correction is
    what the journal records (``W1`` rows of the message's inputs, ``b1``, ``W2``,
    ``b2``: :mod:`nnspam.model.journal`), so a correction with network passes can be
    forgotten."""

    name: str
    scalings: tuple[str, ...] = SCALINGS
    sequence: bool = False
    journal_network: bool = False

    def allows(self, scaling: str) -> bool:
        """Whether a model of this architecture may name ``scaling``."""
        return scaling in self.scalings

    # -- saving ---------------------------------------------------------------------
    @abstractmethod
    def saved_arrays(self, network: Network | MLP) -> dict[str, np.ndarray]:
        """The network's arrays as weights.npz holds them (float32), in that order."""

    # -- loading --------------------------------------------------------------------
    @abstractmethod
    def plan(self, net_cfg: Any, n_inputs: int, scaling: str) -> Plan:
        """The arrays to read for model.json's ``network`` object ``net_cfg`` over
        ``n_inputs`` inputs with ``scaling`` (CodecError: a description that does not
        fit, a fault of model.json)."""

    @abstractmethod
    def network(self, plan: Plan, net_cfg: Any, n_inputs: int,
                weights: dict[str, np.ndarray]) -> Network | MLP:
        """The network of :meth:`plan` with the arrays read (``idf`` taken out of them);
        the arrays are the network's own from then on (CodecError: arrays that do not
        fit, a fault of weights.npz)."""

    # -- inputs ---------------------------------------------------------------------
    def vectorizer(self, words: Sequence[str], network: Network | MLP, scaling: str,
                   ngram: int, idf: np.ndarray | None) -> Vectorizer | SequenceEncoder:
        """What turns token lists into the network's inputs (ValueError if the network
        cannot take them)."""
        if self.sequence:
            if not isinstance(network, MLP) or network.length is None:
                raise ValueError(f"an {self.name} model needs an MLP with an embedding")
            return SequenceEncoder(words, network.length)
        return Vectorizer(words, scaling, ngram, idf)


@dataclass(frozen=True)
class _NetworkCodec(ArchCodec):
    """``nnspam``: :class:`nnspam.learning.network.Network`, built once its arrays are read
    so that it adopts them without a copy."""

    def saved_arrays(self, network: Network | MLP) -> dict[str, np.ndarray]:
        weights = network.get_weights()
        return {k: np.asarray(weights[k], dtype=np.float32) for k in NETWORK_WEIGHTS}

    def plan(self, net_cfg: Any, n_inputs: int, scaling: str) -> Plan:
        return Plan(NETWORK_WEIGHTS)

    def network(self, plan: Plan, net_cfg: Any, n_inputs: int,
                weights: dict[str, np.ndarray]) -> Network | MLP:
        if weights["W1"].ndim != 2 or weights["W1"].shape[0] != n_inputs:
            raise CodecError(f"W1 has shape {weights['W1'].shape}, but model.json lists "
                             f"{n_inputs} words")
        try:
            cfg = dict(net_cfg)
            cfg["n_inputs"] = n_inputs
            net = Network(**cfg)
            # the arrays were just read for this network alone: no second copy
            net.set_weights(weights, copy=False)
        except (TypeError, ValueError) as exc:
            raise CodecError(f"does not fit the network in model.json ({exc})") from None
        return net


@dataclass(frozen=True)
class _MLPCodec(ArchCodec):
    """``deep`` and ``sms-embedding``: :class:`nnspam.learning.arch.MLP`, built from
    model.json first, since its arrays' names follow from its layers."""

    def saved_arrays(self, network: Network | MLP) -> dict[str, np.ndarray]:
        weights = network.get_weights()
        return {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}

    def plan(self, net_cfg: Any, n_inputs: int, scaling: str) -> Plan:
        try:
            mlp = MLP(**{**dict(net_cfg), "n_inputs": n_inputs})
        except (TypeError, ValueError) as exc:
            raise CodecError(f"bad network for arch {self.name} ({exc})") from None
        names = tuple(mlp.param_shapes()) + (("idf",) if scaling == "tfidf" else ())
        return Plan(names, mlp)

    def network(self, plan: Plan, net_cfg: Any, n_inputs: int,
                weights: dict[str, np.ndarray]) -> Network | MLP:
        mlp = plan.network
        assert isinstance(mlp, MLP)  # made by plan()
        try:
            mlp.set_weights(weights)
        except ValueError as exc:
            raise CodecError(f"does not fit the {self.name} network ({exc})") from None
        return mlp


#: Architecture name -> its codec; the names are :data:`nnspam.learning.arch.ARCHS`, in order.
CODECS: Mapping[str, ArchCodec] = {
    "nnspam": _NetworkCodec("nnspam", journal_network=True),
    "deep": _MLPCodec("deep"),
    # (the word-count scalings too: the loader always let them through)
    "sms-embedding": _MLPCodec("sms-embedding", scalings=(*SCALINGS, "index"), sequence=True),
}


def codec_of(arch: str) -> ArchCodec:
    """The codec of architecture ``arch`` (ValueError naming :data:`ARCHS` if unknown)."""
    codec = CODECS.get(arch)
    if codec is None:
        raise ValueError(f"unknown architecture {arch!r} (use one of {ARCHS})")
    return codec
