"""The package's layers, low to high: which module may import which.

The folders are the layers (``../shared/DESIGN.md``: front > services > model >
learning > mail). A module imports only modules of its own layer or of a layer below
it, and no two modules import each other, directly or round a longer loop; an import
inside a function, or under ``if TYPE_CHECKING:``, counts like one at the top of the
file. ``tests/test_layers.py`` parses every module and fails on a module missing from
this table, an import of a higher layer, or an import cycle, naming the file and line.
A folder's ``__init__.py`` imports nothing, so importing one module of a layer never
loads the rest of it.

Where the table differs from the sketch, the code taught otherwise:

* ``base`` holds what every layer may use: the package itself (``__version__``),
  ``config`` (settings and their one check), ``settings`` (the typed, frozen objects
  constructors take, read from the config) and this table.
* ``services.verdict`` (the one rule, spamicity -> spam/unsure/ham, and a model's
  score plus that rule) is standard library only, so every service and front imports
  it cheaply; the model layer answers with spamicities and leaves the verdict to it.
* ``services.runs.training`` (the batch trainer, corpus -> fitted model) and
  ``services.runs.evaluate`` (the figures of a test run) are the "train/test runs": the
  trainer reads corpora and builds a :class:`~nnspam.model.core.Model`. ``learning``
  is the networks and their inputs alone (``fit``, ``partial_fit``,
  ``predict_proba``; no I/O).
* ``mail.corpus`` (reading maildirs, mbox files, the SMS collection, split files) is
  ``mail``, as in the sketch.

A new module goes into the folder of its layer; a name ending in ``.*`` is a package
and every module below it.

Inside ``services`` the sub-packages are ranked the same way (:data:`SERVICES`): the
shared modules at the top of ``services/`` (the verdict rule, the scoring every front
shares, the errors, metrics, explanations, systemd and BLAS helpers) rank lowest, then
``models`` (where served models come from: one host or a Redis fleet), then the three
siblings ``delivery``, ``spamd`` and ``runs``. A module imports only its own
sub-package or a lower one; siblings never import each other (the daemon and the
server meet in ``models`` and the shared modules, never directly).
:func:`services_rule` is that rule for one import, and ``tests/test_layers.py`` applies
it to every import of the package, naming the file and line.
"""

from __future__ import annotations

__all__ = ["LAYERS", "SERVICES", "layer_of", "services_rule", "sublayer_of"]

#: (layer, what belongs there, module names), lowest layer first.
LAYERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("base", "usable by every layer: the package (__version__), settings, this table",
     ("nnspam", "nnspam._layers", "nnspam.config", "nnspam.settings")),
    ("mail", "bytes, MIME, tokens, headers, maildir, atomic writes, corpora",
     ("nnspam.mail.*",)),
    ("learning", "word lists, features, networks and their optimisers, the Keras backend",
     ("nnspam.learning.*",)),
    ("model", "the model and its files, the one writer of a model directory, adaptive "
              "inputs, the wide path, the one correction routine",
     ("nnspam.model.*",)),
    ("services", "the verdict rule, sorter, daemon, pipe filter, spamc client, server, "
                 "online and stream learners, train/test runs, their state and system helpers "
                 "(ranked inside by SERVICES)",
     ("nnspam.services.*",)),
    ("front", "the command line and the SMS webhook, poller and dashboard",
     ("nnspam.front.*", "nnspam.__main__")),
)


def layer_of(module: str) -> tuple[int, str] | None:
    """(rank, name) of the layer of a dotted module name (0 is the lowest), or None
    when the table does not place it."""
    for rank, (name, _, modules) in enumerate(LAYERS):
        for entry in modules:
            if module == entry or (entry.endswith(".*") and (
                    module == entry[:-2] or module.startswith(entry[:-1]))):
                return rank, name
    return None


#: The sub-layers of ``services``: (rank, room, what belongs there, module names),
#: lowest first. Rooms of the same rank are siblings: neither imports the other.
SERVICES: tuple[tuple[int, str, str, tuple[str, ...]], ...] = (
    (0, "shared", "what every room uses: the verdict rule, scoring, errors, metrics, "
                  "explanations, systemd and BLAS helpers",
     ("nnspam.services", "nnspam.services.blas", "nnspam.services.errors",
      "nnspam.services.explanation", "nnspam.services.metrics", "nnspam.services.scoring",
      "nnspam.services.systemd", "nnspam.services.verdict")),
    (1, "models", "where served models come from: one host's registry or a Redis fleet, "
                  "and the server's settings that say which",
     ("nnspam.services.models.*",)),
    (2, "delivery", "the sorter, daemon, pipe filter, spamc client, IMAP and their state",
     ("nnspam.services.delivery.*",)),
    (2, "spamd", "the scoring server: protocol, listeners, workers",
     ("nnspam.services.spamd.*",)),
    (2, "runs", "batch and distributed training, online and stream learners, test runs",
     ("nnspam.services.runs.*",)),
)


def _places(module: str, entry: str) -> bool:
    return module == entry or (entry.endswith(".*") and (
        module == entry[:-2] or module.startswith(entry[:-1])))


def sublayer_of(module: str) -> tuple[int, str] | None:
    """(rank, room) of a module of ``services`` in :data:`SERVICES` (0 is the lowest),
    or None for a module outside ``services`` or one the table does not place."""
    for rank, room, _, modules in SERVICES:
        if any(_places(module, entry) for entry in modules):
            return rank, room
    return None


def services_rule(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported`` inside ``services`` (an import of a
    higher room, or of a sibling room), or None when it may. Imports that leave
    ``services`` are :data:`LAYERS`' business, not this rule's."""
    mine, theirs = sublayer_of(importer), sublayer_of(imported)
    if mine is None or theirs is None or mine[1] == theirs[1]:
        return None
    if theirs[0] > mine[0]:
        return (f"services.{mine[1]} (rank {mine[0]}) imports the higher "
                f"services.{theirs[1]} (rank {theirs[0]})")
    if theirs[0] == mine[0]:
        return (f"services.{mine[1]} imports its sibling services.{theirs[1]}; share the "
                "piece through a lower room (models or the shared services modules)")
    return None
