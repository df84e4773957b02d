"""Settings: built-in defaults, overlaid by a YAML config file, overlaid by
command-line options.

The built-in defaults below are the documented ``config.yaml`` at the top of
the repository (a test checks that the two agree). A config file only needs
the settings it changes.

Search order for the config file: ``-c FILE``, then ``$NNSPAM_CONFIG``, then
``~/.config/nnspam/config.yaml``; none of them is required.

Every setting a file gives is checked when it is loaded, against :data:`SCHEMA` (its
type and range, beside DEFAULTS) and a few rules between settings (:func:`validate`):
a bad value, an unknown setting, a file that is not UTF-8 or not YAML is a one-line
:class:`ConfigError` naming the file and the dotted setting, which the command line
prints before exiting 2.
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEFAULTS", "SCHEMA", "IMAP_ACCOUNT_DEFAULTS", "ConfigError", "Spec", "load_config",
           "merge", "validate", "email_training", "sms_training", "store_url_problem",
           "redact_url"]


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
    # Adaptive input words (nnspam/model/adaptive.py): rarely activated input words
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
    # --arch deep|sms-embedding; docs/lab/architectures.md "Architectures and the Keras backend").
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
        # SMS from Twilio (nnspam sms serve / nnspam sms poll; docs/guides/sms.md "SMS").
        "maildir": "~/SMS",  # SMS maildir; spam is filed into its daemon.junk folder
        "state": "~/.local/state/nnspam/sms.sqlite3",  # decisions and SMS list (SQLite)
        "public_url": None,  # webhook URL as Twilio calls it (TLS proxy); null = request URL
        "env_file": "~/.config/nnspam/twilio.env",  # TWILIO_AUTH_TOKEN / TWILIO_ACCOUNT_SID
        "to": None,  # the Twilio number whose inbound SMS the poller lists (+E.164)
        "poll_interval": 60,  # seconds between polls; doubled on errors, up to 3600
        "cursor": "~/.local/state/nnspam/sms-poll.cursor",  # poller: date_sent_after
        # The dashboard, email and SMS (nnspam sms serve, nnspam dashboard): closed (403)
        # without a password hash.
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
        # SpamAssassin's X-Spam-Flag/-Status/-Level too, for rules written for it
        "spamassassin_headers": False,
        # X-NNSpam-Words with the N words that moved the spamicity most (nnspam explain);
        # 0: off. Also the length of nnspam serve's SYMBOLS/REPORT word list (10 when 0).
        "words": 0,
        # Put this before a spam's Subject, as SpamAssassin's rewrite_header Subject
        # (e.g. "[SPAM] "): for mail clients that sort by Subject; null: left alone
        "rewrite_subject": None,
    },
    # The maildir daemon (nnspam daemon; docs/guides/daemon.md "Maildir daemon").
    # How a correction is learned: one rule for nnspam learn, the daemon, the server's
    # TELL, the dashboard, nnspam stream and the TREC scripts (nnspam/model/correct.py).
    # The web dashboard of email and SMS (nnspam dashboard, nnspam sms serve): login with
    # the password whose hash nnspam hash-password prints. sms.dashboard, where these
    # lived first, is still read when they are unset here.
    "dashboard": {"password_hash": None, "page_size": None},
    # Senders decided before the model (verdict.SenderLists): an address or a domain
    # (example.org or @example.org: it and its subdomains), matched on the From header.
    "lists": {
        "allow": [],  # always ham (allow wins when both match)
        "deny": [],  # always spam
    },
    "learn": {
        "optimizer": "sgd",  # network steps: sgd (plain, no state) | adam (the network's own)
        "learning_rate": 0.003,  # network step size; null = the network's learning_rate
        "passes": 0,  # network passes per correction (nnspam learn --epochs replaces it)
        "max_passes": 0,  # more network passes while short of the margin, up to this
        "margin": 4.0,  # a corrected spam ends this far above the threshold (logits)
        "ham_margin": 16.0,  # a corrected ham ends this far below it
        "confirm_margin": 1.0,  # a message learned on its right side: pushed this far
        "wide": True,  # teach the wide path (hashed tokens -> logit; nnspam/model/wide.py)
        "wide_max": 20.0,  # the most one correction moves the wide path's content part
        "grams": True,  # teach the grams part (byte 4-grams + tokens, AROW; model/grams.py)
        "journal": 500,  # corrections kept to be forgotten (nnspam learn --forget); 0: none
    },
    "daemon": {
        "maildirs": [],  # inbox maildirs to watch (--maildir DIR replaces the list)
        "junk": ".Junk",  # Maildir++ folder spam is moved to (created if missing)
        "state": "~/.local/state/nnspam/daemon.sqlite3",  # decisions (SQLite)
        "checkpoint_every": 10,  # save the model after this many learned updates
        "learn_from_corrections": True,  # learn moves into / out of Junk
        "max_message_bytes": 10485760,  # bigger messages are left unclassified
        "rescan_interval": 3600,  # seconds between safety rescans; 0 = only at start
        # with filter.unsure set: the Maildir++ folder unsure mail is filed into (e.g.
        # .Unsure; moved from there to Junk it is learned as spam, to the inbox as ham);
        # null: unsure mail stays in the inbox
        "unsure_folder": None,
        # with store: set, the per-user model (serve.user_model) the daemon scores with
        # and teaches, for this user; null: the site model
        "user": None,
    },
    # The SPAMC/SPAMD scoring server (nnspam serve; docs/guides/server.md "Scoring server").
    "serve": {
        "socket": None,  # Unix socket path, e.g. /run/nnspam/nnspam.sock; null = none
        "listen": "127.0.0.1:783",  # TCP HOST:PORT (spamd's port); null = no TCP
        "allowed": ["127.0.0.1/32", "::1/128"],  # TCP client networks (loopback always)
        "max_size": 524288,  # bytes; bigger messages come back unchanged, unclassified
        "max_request": 33554432,  # bytes; a bigger message is refused (65) before it is read
        "timeout": 30,  # seconds for a whole request, from connect to answer
        "max_per_client": 32,  # slow connections (still sending after 1 s) per client, worker
        # TELL (spamc -L spam|ham|forget) teaches the models: off unless allowed (spamd's
        # --allow-tell), and then only from these TCP networks (Unix socket: its file mode)
        "allow_tell": False,
        "tell_allowed": ["127.0.0.1/32", "::1/128"],
        "score_scale": 10,  # spamc score = scale * spamicity, threshold = scale * threshold
        # spamicity: points = score_scale * spamicity (0..10); log-odds: the threshold at
        # score_scale * threshold and score_scale / 10 points per logit beyond it (open)
        "score_mode": "spamicity",
        "workers": None,  # worker processes; null/0 = one per CPU core
        "max_connections": 32,  # requests served at once per worker; more wait in the backlog
        "user_model": None,  # per-user model path pattern (%u, %l, %d, ~); null = site model
        "user_cache": 16,  # per-user models kept loaded per worker (least recently used go)
        # per-user allow/deny lists of senders: a YAML file per user (allow: [...], deny:
        # [...], as lists: below), path pattern as user_model; added to lists:. null = none
        "user_lists": None,
        "spamassassin_headers": False,  # PROCESS/HEADERS also add X-Spam-Flag/X-Spam-Status
    },
    # nnspam imap (nnspam/services/delivery/imap.py): filing and learning on IMAP accounts.
    "imap": {
        "accounts": [],  # each a mapping: name, host, user, a secret source, ... (config.yaml)
        "state": "~/.local/state/nnspam/imap.sqlite3",
        "poll_interval": 5.0,  # seconds: other folders checked, IDLE renewed, or a poll
        "timeout": 60.0,  # seconds a command may take before the connection counts as lost
        "move_window": 120.0,  # seconds: left Junk this recently + in the inbox = "not junk"
        "max_backoff": 300.0,  # seconds: the longest wait before a reconnect
    },
    # Prometheus metrics of nnspam serve and nnspam daemon at http://HOST:PORT/metrics
    # (nnspam/services/metrics.py; --metrics HOST:PORT replaces it); null = off.
    "metrics": None,
    # A fleet's model store: redis://HOST:PORT/DB. nnspam serve keeps the site and
    # per-user models there and learns TELLs through one learner; nnspam learn sends
    # its corrections there (nnspam/services/models/fleet.py). null = models on disk.
    "store": None,
    # Online learning, the TREC protocol (nnspam/services/runs/online.py, scripts/trec/):
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

#: An IMAP account's settings that its entry in ``imap.accounts`` leaves out (the list's
#: items have no place in DEFAULTS, which holds the empty list; config.yaml documents
#: them). ``port`` null: 993 with implicit TLS, else 143.
IMAP_ACCOUNT_DEFAULTS: dict[str, Any] = {
    "tls": "implicit", "port": None, "verify": True, "ca_file": None,
    "password_file": None, "password_command": None, "oauth2_token_command": None,
    "oauth2_mechanism": "xoauth2", "inbox": "INBOX", "junk": None, "unsure": None,
    "keywords": True,
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


# -- the schema: what every setting may be -------------------------------------
#
# Every check of a config value is here, beside DEFAULTS, and runs when a file is
# loaded (load_config), so that a bad value is one line naming the file, the
# setting and what it may be -- before any command acts on it -- instead of a
# NumPy traceback later, or a silently wrong filter (threshold: 5 made every
# message ham; daemon.maildirs: /path was read as the list of its characters).
# The modules that use a setting may keep their own checks (correct.py checks
# learn:, models/serve_settings.py serve:, scoring.py filter:) for settings that come from
# elsewhere (the command line, a dict built in code); the loader rejects a bad
# file first, in the same wording: "<file>: learn.optimizer must be sgd or adam,
# not 'rmsprop'".


@dataclass(frozen=True)
class Spec:
    """The values one setting may have.

    ``allowed`` says what they are, as the error message puts it ("a number in
    (0, 1)"); ``test`` says whether a value is one of them; ``choices`` lists the
    words of an enumerated setting (tests check them against the modules that
    act on them); ``explain``, when set, words the whole error for a value the
    test refuses (its text follows the setting's name: "must be ..., not ...: why")."""

    allowed: str
    test: Callable[[Any], bool]
    choices: tuple[str, ...] = ()
    explain: Callable[[Any], str | None] | None = None


def _is_number(v: Any) -> bool:
    # bool is an int subclass: `threshold: true` is not a number. NaN and inf are not
    # numbers a setting can mean (and NaN would slip through every range check).
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _num(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
         hi_open: bool = False, integer: bool = False, null: bool = False) -> Spec:
    """A number (``integer``: a whole number written without a decimal point) in the
    range lo..hi, each end included unless ``*_open``; ``null`` also allows null."""
    kind = "an integer" if integer else "a number"
    if lo is not None and hi is not None:
        rng = f" in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        rng = f" {'>' if lo_open else '>='} {lo:g}"
    else:
        rng = ""

    def test(v: Any) -> bool:
        if v is None:
            return null
        if not _is_number(v) or (integer and not isinstance(v, int)):
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return hi is None or (v < hi if hi_open else v <= hi)

    return Spec(kind + rng + (" or null" if null else ""), test)


# -- the store: URL (nnspam.services.models.store), checked here in the base layer so that every
# command refuses a bad one as a config error, before redis-py would raise on it

_STORE_SHAPE = "must be null or a URL redis://HOST:PORT/DB, rediss://HOST:PORT/DB or unix:///PATH"
_STORE_HOST = re.compile(r"[A-Za-z0-9_.-]+")
# The query parameters redis-py's URL parser and its connection classes take, by the type
# it casts them to ("text": taken as written; "tls": text, rediss:// only). Any other name
# would reach the connection's constructor and fail there with a TypeError.
_STORE_PARAMS: dict[str, str] = {
    "db": "index", "socket_timeout": "seconds", "socket_connect_timeout": "seconds",
    "socket_read_size": "count", "socket_keepalive": "bool", "retry_on_timeout": "bool",
    "max_connections": "count", "health_check_interval": "index", "protocol": "protocol",
    "client_name": "text", "username": "text", "password": "text",
    "ssl_check_hostname": "tls-bool", "ssl_validate_ocsp": "tls-bool",
    "ssl_validate_ocsp_stapled": "tls-bool", "ssl_min_version": "tls-index",
    "ssl_keyfile": "tls", "ssl_certfile": "tls", "ssl_cert_reqs": "tls", "ssl_ca_certs": "tls",
    "ssl_ca_data": "tls", "ssl_ca_path": "tls", "ssl_password": "tls", "ssl_ciphers": "tls",
}
_STORE_BOOLS = {"", "0", "1", "f", "t", "n", "y", "false", "true", "no", "yes"}


def redact_url(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***``, for messages and
    logs; also for a URL too malformed to parse (unlike
    :func:`nnspam.services.models.fleet.redacted`, which needs a valid one)."""
    scheme, sep, rest = url.partition("://")
    at = rest.rfind("@")  # the last: a password may hold an unescaped '/', '#' or '@'
    if not sep or at < 0 or ":" not in rest[:at]:
        return url
    return f"{scheme}://{rest[:at].split(':', 1)[0]}:***{rest[at:]}"


def _store_url_detail(url: str) -> str | None:
    """What redis-py would trip on in ``url`` (a str with one of the three schemes), as
    the end of a sentence, or None."""
    import ipaddress
    from urllib.parse import parse_qs, unquote, urlparse

    try:
        parts = urlparse(url)  # as redis-py's parse_url reads it
        hostname = parts.hostname  # (checks what is between [ ])
    except ValueError as exc:
        return str(exc).replace("Invalid IPv6 URL", "unbalanced [ ] around an IPv6 address")
    if parts.fragment or parts.params:
        return "it has a '#' or ';' part (write '#' in a password as %23, ';' as %3B)"
    hostport = parts.netloc.rpartition("@")[2]
    tls = parts.scheme == "rediss"
    if parts.scheme == "unix":
        if hostport:
            return ("a unix:// URL names a socket path, not a host: unix:///PATH "
                    "(three slashes)")
        if not unquote(parts.path).strip("/"):
            return "no socket path (unix:///run/redis/redis.sock)"
    else:
        port: str | None = None  # the text after the host's ':', as written
        if hostport.startswith("["):
            after = hostport.rpartition("]")[2]
            if after and not after.startswith(":"):
                return f"{after!r} after the IPv6 address's ] (write [ADDRESS]:PORT)"
            port = after[1:] if after else None
            try:
                ipaddress.IPv6Address((hostname or "").partition("%")[0])
            except ValueError:
                return f"{hostname!r} between [ ] is not an IPv6 address"
        else:
            if ":" in hostport:
                port = hostport.partition(":")[2]
            if hostname and not _STORE_HOST.fullmatch(unquote(hostname)):
                return f"the host {unquote(hostname)!r} is not a host name or an IP address"
        if port is not None:
            if not (port.isascii() and port.isdigit()):
                return (f"the port {port!r} is not a number" if port else "no port after ':'"
                        ) + (" (an IPv6 address goes between [ ])" if ":" in port else "")
            if not 1 <= int(port) <= 65535:
                return f"the port {port} is not in 1..65535"
        if not re.fullmatch(r"/?|/[0-9]+/?", unquote(parts.path)):
            return (f"the database {parts.path.strip('/')!r} is not a number "
                    "(redis://HOST:PORT/DB, DB 0, 1, ...)")
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        return f"the query {parts.query!r} is not NAME=VALUE&..."
    for name, values in query.items():
        kind = _STORE_PARAMS.get(name)
        if kind is None:
            return f"unknown parameter {name!r} (known: {', '.join(sorted(_STORE_PARAMS))})"
        if kind.startswith("tls") and not tls:
            return f"the parameter {name!r} needs a rediss:// URL"
        if problem := _store_param_problem(name, kind.removeprefix("tls-"), values[0]):
            return problem
    return None


def _store_param_problem(name: str, kind: str, value: str) -> str | None:
    """What is wrong with one query parameter's value (redis-py takes the first), or None."""
    if kind == "seconds":
        try:
            ok = math.isfinite(float(value)) and float(value) > 0
        except ValueError:
            ok = False
        return None if ok else f"{name} must be a number of seconds > 0, not {value!r}"
    if kind in ("index", "count"):
        if value.isascii() and value.isdigit() and (kind == "index" or int(value) > 0):
            return None
        return f"{name} must be a whole number{' > 0' if kind == 'count' else ''}, not {value!r}"
    if kind == "protocol":
        return None if value in ("2", "3") else f"protocol must be 2 or 3, not {value!r}"
    if kind == "bool":
        return None if value.lower() in _STORE_BOOLS else f"{name} must be yes or no"
    return None


def store_url_problem(url: Any) -> str | None:
    """What is wrong with a ``store`` setting, or None: a ``redis://``, ``rediss://``
    or ``unix://`` URL (``redis://HOST:PORT/DB``) that redis-py can use as it stands.
    Here, in the base layer, for the config's validation; the store applies it too
    (:func:`nnspam.services.models.store.check_url`).

    The answer completes "store ...": "must be null or a URL ..., not 'URL': why"
    (the URL's password redacted). Checked as redis-py's ``from_url`` reads the URL, and
    stricter where it would guess silently (a database path that is no number is taken
    as database 0 there; a ``unix://`` host is dropped)."""
    if not isinstance(url, str):
        return f"{_STORE_SHAPE}, not {url!r}"[:200]
    if not url.lower().startswith(("redis://", "rediss://", "unix://")):
        return f"{_STORE_SHAPE}, not {redact_url(url)!r}"
    problem = _store_url_detail(url)
    if problem is None:
        return None
    return f"{_STORE_SHAPE}, not {redact_url(url)!r}: {problem}"


def _choice(*words: str) -> Spec:
    """One word of a fixed set."""
    allowed = " or ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)
    return Spec(allowed, lambda v: isinstance(v, str) and v in words, words)


def _bool() -> Spec:
    """true or false (YAML also reads yes/no, on/off as booleans); not 0/1 or "true"."""
    return Spec("true or false", lambda v: isinstance(v, bool))


def _text(what: str = "a string", *, null: bool = False) -> Spec:
    """A non-empty string: a path (``~`` is expanded where it is used), a model name,
    a password hash. An empty string is never a usable path or name."""
    return Spec(what + (" or null" if null else ""),
                lambda v: (null and v is None) or (isinstance(v, str) and v.strip() != ""))


def dashboard_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The dashboard's settings: ``dashboard:``, each unset one taken from
    ``sms.dashboard:`` (where they lived before the email dashboard had its own section)."""
    top = cfg.get("dashboard") or {}
    old = (cfg.get("sms") or {}).get("dashboard") or {}
    return {k: top.get(k) if top.get(k) is not None else old.get(k)
            for k in ("password_hash", "page_size")}


def _senders(what: str) -> Spec:
    """A list of senders: addresses (bob@example.org) or domains (example.org,
    @example.org), as verdict.SenderLists reads them."""
    return Spec("a list of addresses or domains, e.g. [bob@example.org, example.com]",
                lambda v: isinstance(v, list) and all(
                    isinstance(x, str) and x.strip() and not any(c.isspace() for c in x.strip())
                    for x in v))


def _paths(what: str) -> Spec:
    """A list of paths (strings). A single string is refused, not guessed at (iterating
    it gave its characters: ``maildirs: /path`` was read as ["/", "p", "a", ...])."""
    return Spec(what, lambda v: isinstance(v, list)
                and all(isinstance(x, str) and x.strip() for x in v))


def _layers() -> Spec:
    """The layer sizes of an architecture: a non-empty list of integers >= 1."""
    return Spec("a non-empty list of integers >= 1, e.g. [256, 128, 64]",
                lambda v: isinstance(v, list) and len(v) > 0
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v))


def _is_ip_network(v: Any) -> bool:
    """An IP network as serve.allowed lists them (host bits may be set, as the server
    reads them: ipaddress.ip_network(strict=False))."""
    import ipaddress

    if not isinstance(v, str):
        return False
    try:
        ipaddress.ip_network(v, strict=False)
    except ValueError:
        return False
    return True


def _is_listen(v: Any) -> bool:
    """IP:PORT as nnspam serve listens on it: an IP address (IPv6 in brackets; empty:
    127.0.0.1) and a port 0..65535 (0: any free port)."""
    import ipaddress

    if not isinstance(v, str):
        return False
    host, sep, port = v.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        return False
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host or "127.0.0.1")
    except ValueError:
        return False
    return True


def _is_unsure(v: Any) -> bool:
    return v is None or (isinstance(v, list) and len(v) == 2 and all(map(_is_number, v))
                         and 0.0 <= v[0] <= v[1] <= 1.0)


def _is_server(v: Any) -> bool:
    # Only the type: a string, or a list of strings. An address that is neither a socket
    # path nor HOST:PORT is deliberately not a config error: nnspam filter runs inside
    # mail delivery, and for a bad filter.server it says so and classifies in-process
    # (spamc.parse_addresses, tests/test_filter_via_server.py), whereas a config error
    # passes mail through unclassified.
    return v is None or isinstance(v, str) or (
        isinstance(v, list) and all(isinstance(x, str) for x in v))


_POSITIVE = _num(0, lo_open=True)
_NONNEG = _num(0)
_FRACTION = _num(0, 1, hi_open=True)  # dropout, validation part: 1 would leave nothing
_COUNT = _num(1, integer=True)  # sizes and counts: a whole number >= 1
_BYTES = _num(0, integer=True)
_PATH = _text("a path (a string)")

_WORDLIST: dict[str, Any] = {
    "method": _choice("freq", "ig", "chi2"),  # wordlist.METHODS
    "size": _COUNT,
    "min_df": _COUNT,
}
_FEATURES: dict[str, Any] = {
    # features.SCALINGS without tfidf: that one needs idf weights, which only the deep
    # architecture computes (it sets it itself).
    "scaling": _choice("count", "log", "binary", "lognorm"),
    "augment": _choice("none", "text-only"),  # training.AUGMENTS
}
_NETWORK: dict[str, Any] = {
    "hidden": _num(1, integer=True, null=True),
    "hidden_activation": _choice("relu", "tanh", "sigmoid"),
    "output": _choice("softmax", "sigmoid"),
    "loss": _choice("xent", "mse"),
    "optimizer": _choice("adam", "sgd"),
    "learning_rate": _POSITIVE,
    "momentum": _FRACTION,
    "l2": _NONNEG,
    "dropout": _FRACTION,
    "input_dropout": _FRACTION,
    "batch_size": _COUNT,
    "max_epochs": _COUNT,
    "patience": _num(0, integer=True),  # 0: no early stopping (Network.fit)
    "validation_fraction": _FRACTION,
    "seed": _num(0, integer=True),  # NumPy seeds are >= 0
    "refit": _choice("none", "swa"),  # training.REFITS
    "members": _COUNT,
}

#: For every setting of DEFAULTS (same nesting), its :class:`Spec`. ``sms.wordlist``,
#: ``sms.features`` and ``sms.network`` take every setting of the top-level sections
#: they override for SMS models (config.yaml says so and sms_training merges them
#: whole); only a few are in DEFAULTS.
SCHEMA: dict[str, Any] = {
    "model": _text("a model directory or default"),
    # spamicity = s*o_spam / (s*o_spam + h*o_ham): a factor of 0 pins it to 0 or 1.
    "ham_factor": _POSITIVE,
    "spam_factor": _POSITIVE,
    # A spamicity is in [0, 1]: a threshold of 0 or below makes everything spam, of 1
    # or above (nearly) everything ham.
    "threshold": _num(0, 1, lo_open=True, hi_open=True),
    "max_part_bytes": _COUNT,
    "wordlist": _WORDLIST,
    "features": _FEATURES,
    "network": _NETWORK,
    "adaptive": {
        "enabled": _bool(),
        "policy": _choice("lfu", "lfu-ig"),  # adaptive.POLICIES
        "init": _choice("zero", "class"),  # adaptive.INITS
        "half_life": _num(1),
        "candidates": _COUNT,
        "cadence": _COUNT,
        "max_replacements": _num(0, integer=True),
        "margin": _NONNEG,
        "min_count": _NONNEG,
        # spam share >= p counts as spam, <= 1 - p as ham: below 0.5 both would hold.
        "pseudo_label_confidence": _num(0.5, 1),
        "log_size": _COUNT,
        "learn_on_confident": _bool(),
        "confident_margin": _num(0, 1),  # a distance between spamicities
    },
    "arch": {
        "deep": {
            "ngram": _COUNT,
            "size": _COUNT,
            "layers": _layers(),
            "dropout": _FRACTION,
            "l2": _NONNEG,
        },
        "sms_embedding": {
            "vocabulary": _COUNT,
            "length_sms": _COUNT,
            "length_email": _COUNT,
            "embedding": _COUNT,
            "layers": _layers(),
            "dropout": _FRACTION,
            "l2": _NONNEG,
        },
    },
    "sms": {
        "model": _text("a model directory or default-sms"),
        "wordlist": _WORDLIST,
        "features": _FEATURES,
        "network": _NETWORK,
        "maildir": _PATH,
        "state": _PATH,
        "public_url": Spec("null or an http:// or https:// URL",
                           lambda v: v is None or (isinstance(v, str)
                                                   and v.startswith(("http://", "https://")))),
        "env_file": _PATH,
        # YAML reads an unquoted +441632960000 as a number.
        "to": Spec('null or a phone number in quotes, e.g. "+441632960000"',
                   lambda v: v is None or (isinstance(v, str) and v.strip() != "")),
        "poll_interval": _POSITIVE,
        "cursor": _PATH,
        "dashboard": {
            "password_hash": _text("a password hash (nnspam sms hash-password)", null=True),
            "page_size": _COUNT,
        },
    },
    "filter": {
        "max_size": _BYTES,
        "unsure": Spec("null or [low, high] with 0 <= low <= high <= 1", _is_unsure),
        "server": Spec("null, a socket path or HOST:PORT (comma-separated for several), "
                       "or a list of them", _is_server),
        "server_timeout": _POSITIVE,
        "spamassassin_headers": _bool(),
        "words": _num(0, 50, integer=True),  # the header stays one line (explanation.py)
        "rewrite_subject": _text("a tag such as '[SPAM] '", null=True),
    },
    "dashboard": {
        "password_hash": _text("a password hash (nnspam hash-password)", null=True),
        "page_size": _num(1, 500, integer=True, null=True),
    },
    "lists": {
        "allow": _senders("allow"),
        "deny": _senders("deny"),
    },
    "learn": {  # correct.rule_from_config applies them (and checks them the same way)
        "optimizer": _choice("sgd", "adam"),
        "learning_rate": _num(0, lo_open=True, null=True),
        "passes": _num(0, integer=True),
        "max_passes": _num(0, integer=True),
        "margin": _NONNEG,
        "ham_margin": _num(0, null=True),
        "confirm_margin": _NONNEG,
        "wide": _bool(),
        "wide_max": _NONNEG,
        "grams": _bool(),
        "journal": _num(0, integer=True),
    },
    "daemon": {
        "maildirs": _paths("a list of maildir paths, e.g. [~/Maildir]"),
        "junk": _text("a maildir folder name, e.g. .Junk"),
        "state": _PATH,
        "checkpoint_every": _COUNT,
        "learn_from_corrections": _bool(),
        "max_message_bytes": _COUNT,
        "rescan_interval": _NONNEG,  # 0: no periodic rescans
        "unsure_folder": _text("a maildir folder name, e.g. .Unsure", null=True),
        "user": _text("a user name, e.g. alice", null=True),
    },
    "serve": {
        "socket": _text("a socket path", null=True),
        "listen": Spec("null or IP:PORT with a port 0..65535, e.g. 127.0.0.1:783",
                       lambda v: v is None or _is_listen(v)),
        "allowed": Spec("a list of IP networks, e.g. [\"127.0.0.1/32\", \"::1/128\"]",
                        lambda v: isinstance(v, list) and all(map(_is_ip_network, v))),
        "max_size": _BYTES,
        "max_request": _BYTES,
        "timeout": _POSITIVE,
        "max_per_client": _COUNT,
        "allow_tell": _bool(),
        "tell_allowed": Spec("a list of IP networks, e.g. [\"127.0.0.1/32\", \"::1/128\"]",
                             lambda v: isinstance(v, list) and all(map(_is_ip_network, v))),
        "score_scale": _POSITIVE,
        "score_mode": _choice("spamicity", "log-odds"),
        "workers": _num(0, integer=True, null=True),  # null or 0: one per CPU core
        "max_connections": _COUNT,
        "user_cache": _num(0, integer=True),
        "user_model": Spec("null or a path pattern with %u, %l or %d",
                           lambda v: v is None or (isinstance(v, str) and any(
                               p in v for p in ("%u", "%l", "%d")))),
        "user_lists": Spec("null or a path pattern with %u, %l or %d",
                           lambda v: v is None or (isinstance(v, str) and any(
                               p in v for p in ("%u", "%l", "%d")))),
        "spamassassin_headers": _bool(),
    },
    # Each account's settings are checked by nnspam.services.delivery.imap.accounts_from_config.
    "imap": {
        "accounts": Spec("a list of accounts (mappings with name, host, user, ...)",
                         lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v)),
        "state": _PATH,
        "poll_interval": _POSITIVE,
        "timeout": _POSITIVE,
        "move_window": _NONNEG,
        "max_backoff": _POSITIVE,
    },
    # As serve.listen, and a host is required (nnspam.services.metrics.address).
    "metrics": Spec("null or IP:PORT with a port 0..65535, e.g. 127.0.0.1:9183",
                    lambda v: v is None or (_is_listen(v) and not v.startswith(":"))),
    # store_url_problem (which the server and the store apply too): the whole URL as
    # redis-py reads it, so that no command meets a ValueError from it later.
    "store": Spec("null or a URL redis://HOST:PORT/DB",
                  lambda v: v is None or store_url_problem(v) is None,
                  explain=store_url_problem),
    "online": {
        "inputs": _num(1, integer=True, null=True),  # null: wordlist.size
        "epochs": _COUNT,
        "learning_rate": _POSITIVE,
        "dropout": _FRACTION,
        "input_dropout": _FRACTION,
        "admit_min": _num(1),
    },
}

# Settings that moved; a config that still has them gets told where.
_MOVED = {"daemon.learn_epochs": "learn.passes", "serve.learn_epochs": "learn.passes",
          "online.learning_rate_trained": "learn.learning_rate"}

# PyYAML (YAML 1.1) reads 1e-5 and 1.0e5 as text: a float with an exponent needs a
# decimal point and a signed exponent (1.0e-5, 1.0e+5).
_EXPONENT_TEXT = re.compile(r"([-+]?[0-9]+)(?:\.([0-9]*))?[eE]([-+]?)([0-9]+)")


def _show(value: Any) -> str:
    """A value as the error message quotes it: YAML's words for null and booleans,
    else repr, cut to one short line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _hint(value: Any, spec: Spec) -> str:
    """How to write what was probably meant, for two YAML pitfalls: a number with an
    exponent that YAML read as text, and one path where a list is wanted."""
    if isinstance(value, str) and spec.allowed.startswith("a number"):
        m = _EXPONENT_TEXT.fullmatch(value.strip())
        if m:
            whole, frac, sign, exp = m.groups()
            return f" (YAML reads {value} as text: write {whole}.{frac or 0}e{sign or '+'}{exp})"
    if isinstance(value, str) and value.isprintable() and spec.allowed.startswith("a list"):
        return f" (a list of one is [{value}])"
    return ""


def _dotted(schema: dict[str, Any], path: str = "") -> list[str]:
    out = []
    for key, spec in schema.items():
        out += _dotted(spec, f"{path}{key}.") if isinstance(spec, dict) else [path + key]
    return out


def _unknown(name: str, key: str, siblings: list[str], where: str) -> ConfigError:
    """Unknown settings are errors, not warnings: nnspam runs unattended (MTA pipes,
    daemons) where a warning goes unread, and a misspelt setting is one the admin
    believes in force while the default applies (``treshold: 0.9``). The message
    names the setting and suggests the one meant: a moved setting's new name, a
    close spelling in the same section, or the section a setting belongs to."""
    import difflib

    if name in _MOVED:
        return ConfigError(f"{where}: {name!r} is now {_MOVED[name]!r} (one rule for "
                           "every correction path)")
    hint = difflib.get_close_matches(key, siblings, n=1, cutoff=0.75)
    if hint:
        meant = name[: len(name) - len(key)] + hint[0]
    else:
        elsewhere = [d for d in _dotted(SCHEMA) if d.rsplit(".", 1)[-1] == key]
        meant = elsewhere[0] if len(elsewhere) == 1 else ""
    return ConfigError(f"{where}: unknown setting {name!r}"
                       + (f" (did you mean {meant!r}?)" if meant else ""))


def _check(data: dict[Any, Any], schema: dict[str, Any], where: str,
           path: str = "") -> dict[str, Any]:
    """``data`` (a file's settings, or part of them) checked against ``schema``; returns
    it with empty sections (a heading whose settings are all commented out, which YAML
    reads as null) as {}. Raises ConfigError naming ``where`` and the dotted setting."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{path}{key}"
        spec = schema.get(key) if isinstance(key, str) else None
        if spec is None:
            raise _unknown(name, str(key), list(schema), where)
        if isinstance(spec, dict):
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {name} must be a mapping (a section of settings), "
                                  f"not {_show(value)}")
            out[key] = _check(value, spec, where, name + ".")
        elif spec.test(value):
            out[key] = value
        elif spec.explain is not None:
            raise ConfigError(f"{where}: {name} {spec.explain(value)}")
        else:
            raise ConfigError(f"{where}: {name} must be {spec.allowed}, not {_show(value)}"
                              + _hint(value, spec))
    return out


def _check_together(cfg: dict[str, Any], where: str) -> None:
    """Rules between settings, checked on the merged config (defaults + file): the
    ones whose breach would otherwise surface as an error mid-run."""
    learn = cfg["learn"]
    if learn["max_passes"] < learn["passes"]:  # as correct.rule_from_config says it
        raise ConfigError(f"{where}: learn.max_passes ({learn['max_passes']}) is below "
                          f"learn.passes ({learn['passes']})")
    unsure, t = cfg["filter"]["unsure"], cfg["threshold"]
    if unsure is not None and not unsure[0] <= t <= unsure[1]:
        raise ConfigError(f"{where}: filter.unsure {unsure} must satisfy low <= threshold "
                          f"({t}) <= high")
    for prefix, net in (("", cfg["network"]), ("sms.", merge(cfg["network"],
                                                             cfg["sms"].get("network", {})))):
        if net["loss"] == "mse" and net["output"] != "sigmoid":  # Network refuses it
            raise ConfigError(f"{where}: {prefix}network.loss mse needs {prefix}network.output "
                              f"sigmoid, not {net['output']!r}")


def validate(data: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """Check a config's settings (a whole config or only the ones a file changes)
    against :data:`SCHEMA` and the rules between settings; returns the merged config
    (DEFAULTS overlaid by ``data``). ``where`` (the file) starts every error message."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of settings")
    cfg = merge(DEFAULTS, _check(data, SCHEMA, where))
    _check_together(cfg, where)
    return cfg


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: ``override`` wins; a new dict is returned."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


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
    """Defaults overlaid by the config file (if any), every value checked (:func:`validate`).

    Raises ConfigError with a one-line message that starts with the file's name: the
    file cannot be read, is not UTF-8 text, is not YAML, or has a bad setting."""
    path = config_path(explicit)
    if path is None:
        return copy.deepcopy(DEFAULTS)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")  # a BOM (Windows editors) is not part of the text
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); "
                          "save it as UTF-8") from None
    import yaml  # only when a file is actually read: keeps the filter path lean

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        at = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML ({at}{' '.join(str(problem).split())})"
                          ) from None
    return validate({} if data is None else data, str(path))


def email_training(cfg: dict[str, Any]) -> dict[str, Any]:
    """The wordlist/features/network settings for an email model."""
    return {k: copy.deepcopy(cfg[k]) for k in ("wordlist", "features", "network")}


def sms_training(cfg: dict[str, Any]) -> dict[str, Any]:
    """The settings for an SMS model: email settings overlaid by ``sms:``."""
    base = email_training(cfg)
    return merge(base, {k: cfg["sms"].get(k, {}) for k in ("wordlist", "features", "network")})
