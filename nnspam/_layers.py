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
  ``config`` (settings and their one check) and this table.
* ``services.verdict`` (the one rule, spamicity -> spam/unsure/ham, and a model's
  score plus that rule) is standard library only, so every service and front imports
  it cheaply; the model layer answers with spamicities and leaves the verdict to it.
* ``services.training`` (the batch trainer, corpus -> fitted model) and
  ``services.evaluate`` (the figures of a test run) are the "train/test runs": the
  trainer reads corpora and builds a :class:`~nnspam.model.core.Model`. ``learning``
  is the networks and their inputs alone (``fit``, ``partial_fit``,
  ``predict_proba``; no I/O).
* ``mail.corpus`` (reading maildirs, mbox files, the SMS collection, split files) is
  ``mail``, as in the sketch.

A new module goes into the folder of its layer; a name ending in ``.*`` is a package
and every module below it.
"""

from __future__ import annotations

__all__ = ["LAYERS", "layer_of"]

#: (layer, what belongs there, module names), lowest layer first.
LAYERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("base", "usable by every layer: the package (__version__), settings, this table",
     ("nnspam", "nnspam._layers", "nnspam.config")),
    ("mail", "bytes, MIME, tokens, headers, maildir, atomic writes, corpora",
     ("nnspam.mail.*",)),
    ("learning", "word lists, features, networks and their optimisers, the Keras backend",
     ("nnspam.learning.*",)),
    ("model", "the model and its files, the one writer of a model directory, adaptive "
              "inputs, the wide path, the one correction routine",
     ("nnspam.model.*",)),
    ("services", "the verdict rule, sorter, daemon, pipe filter, spamc client, server, "
                 "online and stream learners, train/test runs, their state and system helpers",
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
