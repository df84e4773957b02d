"""Typed, frozen settings: the loaded config (:mod:`nnspam.config`) read once into the
objects the library's constructors take.

:mod:`nnspam.config` owns what a setting *is*: its default (``DEFAULTS``, the documented
``config.yaml``), its type and range (``SCHEMA``) and the one check of a file. This module
owns how code *receives* settings: a frozen dataclass per consumer whose every field
names the dotted setting it comes from (:func:`setting`), built from a checked config by
:func:`from_config`. A field has no default of its own: :func:`defaults` builds the object
from ``DEFAULTS``, so a default is written in one place and library code never restates
it (``tests/test_settings.py`` checks that every field names a setting of the schema).

Why dataclasses and not pydantic: the schema already checks every value with messages
that name the file and the setting (:func:`nnspam.config.validate`); what was missing is
a typed, read-only view of the checked values, which the standard library gives without
a dependency on the filter's start-up path.

A consumer changes a setting for one use with :func:`dataclasses.replace` (the objects
are frozen: the config is read once and never changed behind a reader's back).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["setting", "section", "from_config", "defaults", "keys_of", "lookup",
           "OperatingPoint", "SorterSettings", "WordlistSettings", "FeatureSettings",
           "NetworkSettings", "DeepSettings", "EmbeddingSettings", "ArchSettings",
           "TrainingSettings", "ALL"]

T = TypeVar("T")


def _same(v: Any) -> Any:
    return v


def setting(key: str, convert: Callable[[Any], Any] = _same) -> Any:
    """A field read from the dotted setting ``key`` (e.g. ``"daemon.junk"``), passed
    through ``convert`` (the type the consumer works in: ``float`` for a number a YAML
    file may give as ``1``)."""
    return field(metadata={"key": key, "convert": convert})


def section(cls: type) -> Any:
    """A field that is itself a settings object, built from the same config."""
    return field(metadata={"section": cls})


def lookup(cfg: Mapping[str, Any], key: str) -> Any:
    """The value of the dotted setting ``key`` in ``cfg``; KeyError naming it when absent
    (a config that did not come through :func:`nnspam.config.load_config`)."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(f"setting {key} missing from the config")
        node = node[part]
    return node


def from_config(cls: type[T], cfg: Mapping[str, Any]) -> T:
    """The settings object ``cls`` read from a loaded (checked, defaults-merged) config."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if "section" in f.metadata:
            values[f.name] = from_config(f.metadata["section"], cfg)
        elif "key" in f.metadata:
            values[f.name] = f.metadata["convert"](lookup(cfg, f.metadata["key"]))
    return cls(**values)


def defaults(cls: type[T]) -> T:
    """``cls`` on the built-in defaults (:data:`nnspam.config.DEFAULTS`)."""
    from nnspam.config import DEFAULTS

    return from_config(cls, DEFAULTS)


def keys_of(cls: type) -> list[str]:
    """Every dotted setting ``cls`` reads, its sections' included (for the test that
    each one is a setting of the schema)."""
    out: list[str] = []
    for f in dataclasses.fields(cls):
        if "section" in f.metadata:
            out += keys_of(f.metadata["section"])
        elif "key" in f.metadata:
            out.append(f.metadata["key"])
        else:
            raise TypeError(f"{cls.__name__}.{f.name} names no setting")
    return out


def _band(v: Any) -> tuple[float, float] | None:
    return (float(v[0]), float(v[1])) if v else None


def _optional_str(v: Any) -> str | None:
    return None if v is None else str(v)


@dataclass(frozen=True)
class OperatingPoint:
    """The verdict's settings: the ham bias (``spamicity = s*o_spam / (s*o_spam +
    h*o_ham)``), the threshold and the unsure band (``filter.unsure``; None: none).
    The config's, not the values a model stores, as every front scores by them."""

    ham_factor: float = setting("ham_factor", float)
    spam_factor: float = setting("spam_factor", float)
    threshold: float = setting("threshold", float)
    unsure: tuple[float, float] | None = setting("filter.unsure", _band)


@dataclass(frozen=True)
class SorterSettings:
    """What :class:`nnspam.services.delivery.sorter.Sorter` files and learns by (the
    maildir daemon, the SMS store, the IMAP filer): the operating point, the
    ``daemon:`` filing settings and the ``adaptive:`` ones the sorter acts on."""

    point: OperatingPoint = section(OperatingPoint)
    junk: str = setting("daemon.junk", str)  # the Maildir++ folder spam goes to
    unsure_folder: str | None = setting("daemon.unsure_folder", _optional_str)
    max_message_bytes: int = setting("daemon.max_message_bytes", int)  # bigger: not scored
    learn_from_corrections: bool = setting("daemon.learn_from_corrections", bool)
    checkpoint_every: int = setting("daemon.checkpoint_every", int)  # learned updates a save
    adaptive: bool = setting("adaptive.enabled", bool)  # replace input words as mail flows
    learn_on_confident: bool = setting("adaptive.learn_on_confident", bool)
    confident_margin: float = setting("adaptive.confident_margin", float)


def _optional_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _widths(v: Any) -> tuple[int, ...]:
    return tuple(int(h) for h in v)


# -- training (nnspam.services.runs.training.Recipe) ----------------------------------
#
# Read from the *training view* of a config: the top-level ``wordlist:``, ``features:``
# and ``network:`` sections as :func:`nnspam.config.email_training` gives them, or as
# :func:`nnspam.config.sms_training` gives them for an SMS model (the ``sms:`` overlay
# merged in), with ``--faithful`` and the command line's options over them
# (:meth:`nnspam.services.runs.training.Recipe.from_config` builds that view).


@dataclass(frozen=True)
class WordlistSettings:
    """How the input words are chosen from the training messages."""

    method: str = setting("wordlist.method", str)  # freq | ig | chi2
    size: int = setting("wordlist.size", int)  # input words
    min_df: int = setting("wordlist.min_df", int)  # ig/chi2: in at least this many messages


@dataclass(frozen=True)
class FeatureSettings:
    """How a message becomes an input vector, and the training copies made of it."""

    scaling: str = setting("features.scaling", str)
    augment: str = setting("features.augment", str)  # none | text-only (email training)


@dataclass(frozen=True)
class NetworkSettings:
    """The ``network:`` section: the network's shape and training, and the training
    procedures around it (``refit``, ``members``). The field names are the section's
    keys, so :meth:`as_dict` is the section as
    :func:`nnspam.learning.network.network_from_settings` takes it."""

    hidden: int | None = setting("network.hidden", _optional_int)  # None: as many as inputs
    hidden_activation: str = setting("network.hidden_activation", str)
    output: str = setting("network.output", str)
    loss: str = setting("network.loss", str)
    optimizer: str = setting("network.optimizer", str)
    learning_rate: float = setting("network.learning_rate", float)
    momentum: float = setting("network.momentum", float)
    l2: float = setting("network.l2", float)
    dropout: float = setting("network.dropout", float)
    input_dropout: float = setting("network.input_dropout", float)
    batch_size: int = setting("network.batch_size", int)
    max_epochs: int = setting("network.max_epochs", int)
    patience: int = setting("network.patience", int)
    validation_fraction: float = setting("network.validation_fraction", float)
    seed: int = setting("network.seed", int)
    refit: str = setting("network.refit")  # none | swa (checked by the recipe)
    members: int = setting("network.members")  # >= 1 (checked by the recipe, not rounded)

    def as_dict(self) -> dict[str, Any]:
        """The section as a dict (``network_from_settings``, a model's provenance)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DeepSettings:
    """``arch.deep``: tf-idf word n-grams into several ReLU layers."""

    ngram: int = setting("arch.deep.ngram", int)
    size: int = setting("arch.deep.size", int)
    layers: tuple[int, ...] = setting("arch.deep.layers", _widths)
    dropout: float = setting("arch.deep.dropout", float)
    l2: float = setting("arch.deep.l2", float)


@dataclass(frozen=True)
class EmbeddingSettings:
    """``arch.sms_embedding``: word indices, an embedding and dense layers."""

    vocabulary: int = setting("arch.sms_embedding.vocabulary", int)
    length_sms: int = setting("arch.sms_embedding.length_sms", int)
    length_email: int = setting("arch.sms_embedding.length_email", int)
    embedding: int = setting("arch.sms_embedding.embedding", int)
    layers: tuple[int, ...] = setting("arch.sms_embedding.layers", _widths)
    dropout: float = setting("arch.sms_embedding.dropout", float)
    l2: float = setting("arch.sms_embedding.l2", float)


@dataclass(frozen=True)
class ArchSettings:
    """The ``arch:`` section: the architectures other than nnspam's own network."""

    deep: DeepSettings = section(DeepSettings)
    sms_embedding: EmbeddingSettings = section(EmbeddingSettings)


@dataclass(frozen=True)
class TrainingSettings:
    """Every setting a batch training reads, from the training view of a config: the
    word list, features and network, the other architectures, the operating point the
    model stores and the MIME part cut of its tokenizer."""

    wordlist: WordlistSettings = section(WordlistSettings)
    features: FeatureSettings = section(FeatureSettings)
    network: NetworkSettings = section(NetworkSettings)
    architectures: ArchSettings = section(ArchSettings)
    point: OperatingPoint = section(OperatingPoint)
    max_part_bytes: int = setting("max_part_bytes", int)


#: Every settings class (the test checks each against the schema).
ALL: tuple[type, ...] = (OperatingPoint, SorterSettings, WordlistSettings, FeatureSettings,
                         NetworkSettings, DeepSettings, EmbeddingSettings, ArchSettings,
                         TrainingSettings)
