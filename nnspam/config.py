"""Settings: built-in defaults, overlaid by a YAML config file, overlaid by
command-line options.

The built-in defaults below are the documented ``config.yaml`` at the top of
the repository (a test checks that the two agree). A config file only needs
the settings it changes.

Search order for the config file: ``-c FILE``, then ``$NNSPAM_CONFIG``, then
``~/.config/nnspam/config.yaml``; none of them is required.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

__all__ = ["DEFAULTS", "ConfigError", "load_config", "merge", "email_training", "sms_training"]


class ConfigError(Exception):
    """A config file that cannot be read or has a bad value."""


DEFAULTS: dict[str, Any] = {
    # Model used by classify/test/learn when -m is not given: a model
    # directory, or "default" for the email model shipped in the package.
    "model": "default",
    # Spamicity = s*o_spam / (s*o_spam + h*o_ham): the original ham bias.
    "ham_factor": 0.9,
    "spam_factor": 0.1,
    "threshold": 0.5,
    # Each decoded MIME part is cut to this many bytes before tokenizing.
    "max_part_bytes": 262144,
    "wordlist": {
        "method": "ig",  # freq (original: spam-only top n) | ig | chi2
        "size": 8000,  # n: input neurons
        "min_df": 2,  # ig/chi2: a word must occur in at least this many messages
    },
    "features": {
        "scaling": "binary",  # count | log | binary | lognorm
        "augment": "none",  # email training: none | text-only (a text-only copy of each too)
    },
    "network": {
        "hidden": 128,  # hidden units; null = as many as inputs (the original design)
        "hidden_activation": "relu",  # relu | tanh | sigmoid
        "output": "softmax",  # softmax | sigmoid
        "loss": "xent",  # xent | mse
        "optimizer": "adam",  # adam | sgd
        "learning_rate": 0.001,
        "momentum": 0.9,  # sgd only
        "l2": 0.00001,
        "dropout": 0.5,  # on the hidden layer while training
        "input_dropout": 0.4,  # on the inputs while training
        "batch_size": 32,
        "max_epochs": 60,
        "patience": 8,  # early stopping: epochs without a better validation loss
        "validation_fraction": 0.1,  # held back from the training data
        "seed": 1,
        # After early stopping: none, or swa = retrain on all the training data
        # for twice the best epoch count and average the weights of the second
        # half (helps small corpora such as SMS; see training.refit_swa).
        "refit": "none",
        # Networks trained (seeds seed, seed+1, ...) and merged into one whose
        # outputs are their mean logits (training.fit_members).
        "members": 3,
    },
    # Adaptive input words (nnspam/adaptive.py): rarely activated input words
    # are replaced by words that became frequent in the mail stream.
    "adaptive": {
        "enabled": True,
        "policy": "lfu-ig",  # lfu | lfu-ig
        "init": "class",  # new input's weights: zero | class (from inputs of its class)
        "half_life": 500,  # aging of all counts, in messages
        "candidates": 20000,  # candidate table size (bounded at twice this)
        "cadence": 100,  # a replacement step every this many messages
        "max_replacements": 20,  # at most this many inputs replaced per step
        "margin": 2.0,  # candidate score must exceed margin * activity + min_count
        "min_count": 3.0,
        "pseudo_label_confidence": 0.9,  # lfu-ig: verdicts this sure count per class
        "log_size": 200,  # replacements kept in the model's log
        "learn_on_confident": False,  # daemon: also learn from confident verdicts
        "confident_margin": 0.45,  # ... spamicity >= threshold+m or <= threshold-m
    },
    # The architectures other than nnspam's own n-h-2 network (nnspam train
    # --arch deep|sms-embedding; README "Architectures and the Keras backend").
    # Learning rate, batch size, epochs, patience, validation part and seed
    # come from network: above.
    "arch": {
        "deep": {
            "ngram": 2,  # inputs: words and runs of up to this many adjacent tokens
            "size": 8000,  # inputs, chosen by information gain (min_df as wordlist)
            "layers": [256, 128, 64],  # ReLU layers, each followed by dropout
            "dropout": 0.5,
            "l2": 0.00001,
        },
        "sms_embedding": {
            "vocabulary": 5000,  # most frequent training tokens that get an index
            "length_sms": 50,  # tokens per message (first ones kept, padded after)
            "length_email": 300,
            "embedding": 24,  # numbers per word
            "layers": [500, 200, 100],  # ReLU layers; dropout only after the last
            "dropout": 0.5,
            "l2": 0.0,
        },
    },
    # Settings for SMS models (nnspam train --sms): these override the ones
    # above for SMS, where messages are short and the vocabulary small.
    "sms": {
        "model": "default-sms",
        "wordlist": {"method": "ig", "size": 2000, "min_df": 2},
        "features": {"scaling": "binary"},
        "network": {"refit": "swa", "input_dropout": 0.0, "members": 1},
        # SMS from Twilio (nnspam sms serve / nnspam sms poll; README "SMS").
        "maildir": "~/SMS",  # SMS maildir; spam is filed into its daemon.junk folder
        "state": "~/.local/state/nnspam/sms.sqlite3",  # decisions and SMS list (SQLite)
        "public_url": None,  # webhook URL as Twilio calls it (TLS proxy); null = request URL
        "env_file": "~/.config/nnspam/twilio.env",  # TWILIO_AUTH_TOKEN / TWILIO_ACCOUNT_SID
        "to": None,  # the Twilio number whose inbound SMS the poller lists (+E.164)
        "poll_interval": 60,  # seconds between polls; doubled on errors, up to 3600
        "cursor": "~/.local/state/nnspam/sms-poll.cursor",  # poller: date_sent_after
        # The dashboard (GET / of nnspam sms serve): closed (403) without a password hash.
        "dashboard": {"password_hash": None, "page_size": 25},
    },
    # The pipe filter (nnspam filter).
    "filter": {
        "max_size": 524288,  # bytes; bigger messages pass through unclassified
        "unsure": None,  # null, or [low, high]: --verdict-exit 2 for low <= spamicity < high
        # A running nnspam serve to classify through (no NumPy start per message):
        # null, a Unix socket path, or HOST:PORT; comma-separated to fail over.
        "server": None,
        "server_timeout": 5,  # seconds for the whole exchange; then classify in-process
    },
    # The maildir daemon (nnspam daemon; README "Maildir daemon").
    # How a correction is learned: one rule for nnspam learn, the daemon, the server's
    # TELL, the SMS dashboard, nnspam stream and the TREC scripts (nnspam/correct.py).
    "learn": {
        "optimizer": "sgd",  # network steps: sgd (plain, no state) | adam (the network's own)
        "learning_rate": 0.003,  # network step size; null = the network's learning_rate
        "passes": 0,  # network passes per correction (nnspam learn --epochs replaces it)
        "max_passes": 0,  # more network passes while short of the margin, up to this
        "margin": 4.0,  # a corrected spam ends this far above the threshold (logits)
        "ham_margin": 16.0,  # a corrected ham ends this far below it
        "confirm_margin": 1.0,  # a message learned on its right side: pushed this far
        "wide": True,  # teach the wide path (hashed tokens -> logit; nnspam/wide.py)
        "wide_max": 20.0,  # the most one correction moves the wide path's content part
    },
    "daemon": {
        "maildirs": [],  # inbox maildirs to watch (--maildir DIR replaces the list)
        "junk": ".Junk",  # Maildir++ folder spam is moved to (created if missing)
        "state": "~/.local/state/nnspam/daemon.sqlite3",  # decisions (SQLite)
        "checkpoint_every": 10,  # save the model after this many learned updates
        "learn_from_corrections": True,  # learn moves into / out of Junk
        "max_message_bytes": 10485760,  # bigger messages are left unclassified
        "rescan_interval": 3600,  # seconds between safety rescans; 0 = only at start
    },
    # The SPAMC/SPAMD scoring server (nnspam serve; README "Scoring server").
    "serve": {
        "socket": None,  # Unix socket path, e.g. /run/nnspam/nnspam.sock; null = none
        "listen": "127.0.0.1:783",  # TCP HOST:PORT (spamd's port); null = no TCP
        "allowed": ["127.0.0.1/32", "::1/128"],  # TCP client networks (loopback always)
        "max_size": 524288,  # bytes; bigger messages come back unchanged, unclassified
        "timeout": 30,  # seconds a client may stay silent before it is disconnected
        "score_scale": 10,  # spamc score = scale * spamicity, threshold = scale * threshold
        "workers": None,  # worker processes; null/0 = one per CPU core
        "max_connections": 32,  # requests served at once per worker; more wait in the backlog
        "user_model": None,  # per-user model path pattern (%u, %l, %d, ~); null = site model
        "user_cache": 16,  # per-user models kept loaded per worker (least recently used go)
        "spamassassin_headers": False,  # PROCESS/HEADERS also add X-Spam-Flag/X-Spam-Status
    },
    # Online learning, the TREC protocol (nnspam/online.py, scripts/trec/):
    # every message is classified, then learned with its true label.
    "online": {
        "inputs": None,  # n of an untrained network; null = wordlist.size (sms: sms.wordlist.size)
        "epochs": 1,  # partial_fit passes per learned message
        "learning_rate": 0.001,  # Adam step size of online updates from an untrained start
        "dropout": 0.5,  # hidden-layer dropout during online updates
        "input_dropout": 0.0,  # input dropout during online updates from an untrained start
        "admit_min": 2,  # untrained start: a token gets a free input once seen this often
    },
}

# The original NNSpam design, selectable with --faithful: spam-only top-n
# word list, raw counts, sigmoid units trained by plain backpropagation.
FAITHFUL: dict[str, Any] = {
    "wordlist": {"method": "freq", "size": 200},
    "features": {"scaling": "count"},
    "network": {
        "hidden": None,
        "hidden_activation": "sigmoid",
        "output": "sigmoid",
        "loss": "mse",
        "optimizer": "sgd",
        "learning_rate": 0.05,
        "momentum": 0.9,
        "l2": 0.0,
        "dropout": 0.0,
        "input_dropout": 0.0,
        "refit": "none",
        "members": 1,
    },
}


# Settings that moved; a config that still has them gets told where.
_MOVED = {"daemon.learn_epochs": "learn.passes", "serve.learn_epochs": "learn.passes",
          "online.learning_rate_trained": "learn.learning_rate"}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: ``override`` wins; a new dict is returned."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _check(cfg: dict[str, Any], defaults: dict[str, Any], where: str, path: str = "") -> None:
    for key, value in cfg.items():
        name = f"{path}{key}"
        if key not in defaults:
            if name in _MOVED:
                raise ConfigError(f"{where}: {name!r} is now {_MOVED[name]!r} (one rule for "
                                  "every correction path)")
            raise ConfigError(f"{where}: unknown setting {name!r}")
        if isinstance(defaults[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {name!r} must be a mapping")
            _check(value, defaults[key] or value, where, name + ".")


def config_path(explicit: str | None = None) -> Path | None:
    """The config file to read, or None when there is none."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("NNSPAM_CONFIG")
    if env:
        return Path(env)
    home = Path(os.path.expanduser("~/.config/nnspam/config.yaml"))
    return home if home.is_file() else None


def load_config(explicit: str | None = None) -> dict[str, Any]:
    """Defaults overlaid by the config file (if any)."""
    path = config_path(explicit)
    if path is None:
        return copy.deepcopy(DEFAULTS)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    import yaml  # only when a file is actually read: keeps the filter path lean

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")
    _check(data, DEFAULTS, str(path))
    return merge(DEFAULTS, data)


def email_training(cfg: dict[str, Any]) -> dict[str, Any]:
    """The wordlist/features/network settings for an email model."""
    return {k: copy.deepcopy(cfg[k]) for k in ("wordlist", "features", "network")}


def sms_training(cfg: dict[str, Any]) -> dict[str, Any]:
    """The settings for an SMS model: email settings overlaid by ``sms:``."""
    base = email_training(cfg)
    return merge(base, {k: cfg["sms"].get(k, {}) for k in ("wordlist", "features", "network")})
