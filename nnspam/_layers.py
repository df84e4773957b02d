"""The package's layers, low to high: which module may import which.

A module imports only modules of its own layer or of a layer below it, and no two
modules import each other, directly or round a longer loop; an import inside a
function, or under ``if TYPE_CHECKING:``, counts like one at the top of the file.
``tests/test_layers.py`` parses every module and fails on a module missing from this
table, an import of a higher layer, or an import cycle, naming the file and line.

The layers follow ``../shared/DESIGN.md`` (front > services > model > learning >
mail); each will become a folder of the package. Where the table differs from the
sketch, the code taught otherwise:

* ``base`` holds what every layer may use: the package itself (``__version__``),
  ``config`` (settings) and this table.
* ``verdict`` (the one rule, spamicity -> spam/ham) is in ``model``, not
  ``services``: the model answers with it (:meth:`nnspam.model.Model.is_spam`), and
  :func:`nnspam.verdict.score_tokens` is a model's spamicity plus that rule. It is
  standard library only, so every service and front still imports it cheaply.
* ``training`` (the batch trainer, corpus -> fitted model) and ``evaluate`` (the
  figures of a test run) are the "train/test runs" of ``services``: the trainer
  builds a :class:`~nnspam.model.Model`, and the figures use the verdict rule.
  ``learning`` is the networks and their inputs alone (``fit``, ``partial_fit``,
  ``predict_proba``; no I/O).
* ``corpus`` (reading maildirs, mbox files, the SMS collection, split files) is
  ``mail``, as in the sketch.

A new module needs a line here; a name ending in ``.*`` is a package and every module
below it.
"""

from __future__ import annotations

__all__ = ["LAYERS", "layer_of"]

#: (layer, what belongs there, module names), lowest layer first.
LAYERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("base", "usable by every layer: the package (__version__), settings, this table",
     ("nnspam", "nnspam._layers", "nnspam.config")),
    ("mail", "bytes, MIME, tokens, headers, maildir, atomic writes, corpora",
     ("nnspam.message", "nnspam.tokens", "nnspam.headers", "nnspam.maildir",
      "nnspam.atomic", "nnspam.corpus")),
    ("learning", "word lists, features, networks and their optimisers, the Keras backend",
     ("nnspam.features", "nnspam.wordlist", "nnspam.network", "nnspam.arch",
      "nnspam.keras_backend")),
    ("model", "the model and its files, the one writer of a model directory, adaptive "
              "inputs, the wide path, the one correction routine, the verdict rule",
     ("nnspam.model", "nnspam.writer", "nnspam.wide", "nnspam.adaptive", "nnspam.correct",
      "nnspam.verdict")),
    ("services", "sorter, daemon, pipe filter, spamc client, server, online and stream "
                 "learners, train/test runs, their state and system helpers",
     ("nnspam.sorter", "nnspam.state", "nnspam.daemon", "nnspam.pipefilter",
      "nnspam.spamc", "nnspam.online", "nnspam.stream", "nnspam.server",
      "nnspam.systemd", "nnspam.blas", "nnspam.training", "nnspam.evaluate")),
    ("front", "the command line and the SMS webhook, poller and dashboard",
     ("nnspam.cli", "nnspam.__main__", "nnspam.sms.*")),
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
