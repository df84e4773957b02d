"""The ``nnspam`` command line: the parser and the dispatch to the commands.

:func:`build_parser` documents every subcommand and option (``nnspam COMMAND
--help``); :func:`main` sends ``nnspam filter`` to the pipe filter before anything
else is loaded, runs the chosen command of :mod:`nnspam.front.commands` and turns
the errors a user can cause into one line and exit status 2. Exit codes: 0 success,
1 a run that went wrong in an ordinary way (e.g. nothing to classify), 2 bad usage
or an unusable model, config or input (a one-line message, never a traceback).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from nnspam import __version__

EPILOG = """\
PATH may be a maildir (cur/ + new/), a directory of message files (searched
recursively), one message file, an mbox file, or - for standard input.
Config: -c FILE, else $NNSPAM_CONFIG, else ~/.config/nnspam/config.yaml,
else the built-in defaults (see config.yaml in the source tree).
"""


# -- argument groups ---------------------------------------------------------

def _add_config(p: argparse.ArgumentParser, action: bool = False) -> None:
    """``-c FILE``. ``action``: on an action of a command (``store push``), whose -c may
    come before or after the action: unset there, it leaves the command's alone (argparse
    would otherwise overwrite ``store -c FILE push`` with the action's default, None)."""
    default: dict[str, Any] = {"default": argparse.SUPPRESS} if action else {}
    p.add_argument("-c", "--config", metavar="FILE", help="config file (YAML)", **default)


def _add_progress(p: argparse.ArgumentParser, what: str) -> None:
    """``--progress``/``--no-progress`` (None when neither: the command shows it when
    stderr is a terminal, nnspam.front.progress.shown)."""
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help=what)


def _add_model(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "-m", "--model", metavar="MODEL", required=required,
        help="model directory; 'default' is the shipped email model, 'default-sms' the SMS "
        "one" + ("" if required else " (default: the 'model' setting of the config)"),
    )


def _add_bias(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("ham bias (spamicity = s*o_spam / (s*o_spam + h*o_ham))")
    g.add_argument("--ham-factor", type=float, metavar="H", help="h (config: ham_factor, 0.9)")
    g.add_argument("--spam-factor", type=float, metavar="S", help="s (config: spam_factor, 0.1)")
    g.add_argument("--threshold", type=float, metavar="T",
                   help="spamicity at or above which a message is spam (config: threshold, 0.5)")


def _add_metrics(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", metavar="HOST:PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (replaces the "
                   "config's metrics setting; needs the metrics extra)")


def _add_split_source(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("labelled corpora")
    g.add_argument("--split", metavar="FILE",
                   help="split file (path<TAB>label<TAB>train|test) from ../shared/corpora/splits")
    g.add_argument("--corpus", metavar="ROOT",
                   help="directory (or .tar.xz) the split's paths are relative to")
    g.add_argument("--sms", metavar="FILE",
                   help="the UCI SMS Spam Collection file (label<TAB>text lines)")


# -- parser --------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    # here, not at the top: the pipe filter's fast path (main) never loads the commands
    from nnspam.front import commands

    p = argparse.ArgumentParser(
        prog="nnspam",
        description="A spam filter built on an adaptive word-list neural network.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"nnspam {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help: str, desc: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=textwrap.fill(desc, 78), epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_config(sp)
        return sp

    sp = add("train", "train a model from labelled mail or SMS",
             "Train a model: build the word list (unless --wordlist is given), turn every "
             "message into word counts and train the network by backpropagation, holding "
             "back part of the training data for early stopping. Writes the model directory "
             "given by -m.")
    _add_model(sp, required=True)
    sp.add_argument("--ham", nargs="+", metavar="PATH", help="ham (good mail) to learn from")
    sp.add_argument("--spam", nargs="+", metavar="PATH", help="spam to learn from")
    _add_split_source(sp)
    sp.add_argument("--kind", choices=("email", "sms"),
                    help="model kind (default: sms with --sms, else email); --kind sms trains "
                    "the SMS tokenizer on SMS delivered as messages, e.g. the SMS maildir's "
                    "ham and spam folders")
    sp.add_argument("--wordlist", metavar="FILE",
                    help="use this word list (count<TAB>word lines) instead of building one")
    sp.add_argument("--faithful", action="store_true",
                    help="the original NNSpam design: spam-only top-n word list, raw counts, "
                    "sigmoid units, plain backpropagation")
    sp.add_argument("-n", "--size", type=int, metavar="N",
                    help="input words (config: wordlist.size)")
    sp.add_argument("--method", choices=("freq", "ig", "chi2"),
                    help="word selection (config: wordlist.method)")
    sp.add_argument("--scaling", choices=("count", "log", "binary", "lognorm"),
                    help="input scaling (config: features.scaling)")
    sp.add_argument("--hidden", type=int, metavar="H", help="hidden units (config: network.hidden)")
    sp.add_argument("--epochs", type=int, metavar="E", help="maximum epochs")
    sp.add_argument("--seed", type=int, help="random seed (config: network.seed)")
    sp.add_argument("--members", type=int, metavar="K",
                    help="train K networks (seeds seed..seed+K-1) and merge them into one "
                    "(config: network.members; email default 3, SMS 1)")
    _add_progress(sp, "show loss per epoch (default: when stderr is a terminal)")
    sp.add_argument("--arch", choices=("nnspam", "deep", "sms-embedding"), default="nnspam",
                    help="architecture: nnspam (n inputs, one hidden layer, 2 outputs; "
                    "default), deep (tf-idf n-grams, several ReLU layers) or sms-embedding "
                    "(word indices, embedding, dense layers); settings in the config's arch:")
    sp.add_argument("--backend", choices=("numpy", "keras"), default="numpy",
                    help="library that trains the network: numpy (default) or keras "
                    "(TensorFlow, the 'keras' extra); either model is served by NumPy")
    sp.add_argument("--balance", choices=("none", "dbb"), default="none",
                    help="dbb: oversample the minority class of the training part with "
                    "distribution-based synthetic examples before training")
    sp.add_argument("--dask", metavar="ADDRESS", default=None,
                    help="run tokenizing, word counts, feature blocks and the members on a "
                    "Dask cluster: local (a local cluster, one worker per core), local:N, "
                    "or a scheduler address such as tcp://host:8786 (the dask extra)")
    _add_bias(sp)
    sp.set_defaults(func=commands.cmd_train)

    sp = add("classify", "score messages: one line per message",
             "Print one line per message. --format tsv prints exactly "
             "path<TAB>spamicity<TAB>verdict (spam|ham); with --split, the messages of the "
             "split's test part; with --sms, names are line:N.")
    _add_model(sp)
    sp.add_argument("paths", nargs="*", metavar="PATH")
    _add_split_source(sp)
    sp.add_argument("--format", choices=("tsv", "text"), default="text")
    _add_bias(sp)
    _add_progress(sp, "a progress line on stderr (default: when stderr is a terminal)")
    sp.set_defaults(func=commands.cmd_classify)

    sp = add("explain", "show which words made a message's verdict",
             "For each message: its spamicity and verdict (the config's ham bias and "
             "threshold, as nnspam filter), the input words with the biggest effect, each "
             "as the spamicity minus the spamicity of the message without that word (and "
             "the same in log-odds), the message's tokens without an input word (with their "
             "wide-path weight once corrections taught it) and the adaptive input "
             "replacements that involved its words. --json prints one JSON object per "
             "message and line.")
    _add_model(sp)
    sp.add_argument("messages", nargs="+", metavar="MESSAGE",
                    help="message file, maildir, directory of messages, mbox, or - (stdin)")
    sp.add_argument("--words", type=int, default=10, metavar="N",
                    help="words to show (10)")
    sp.add_argument("--json", action="store_true", help="machine output: JSON lines")
    sp.set_defaults(func=commands.cmd_explain)

    sp = add("test", "evaluate a model on labelled mail: the NNSpam results table",
             "Classify labelled messages (the test part of a split, or --ham/--spam paths) "
             "and print the original NNSpam results table with accuracy, spam caught, ham "
             "lost, F1, MCC and ROC AUC. With no messages named, the test part of the "
             "SpamAssassin split in the shared development corpora ($NNSPAM_CORPORA or "
             "../shared/corpora), when it is there.")
    _add_model(sp)
    sp.add_argument("--ham", nargs="+", metavar="PATH")
    sp.add_argument("--spam", nargs="+", metavar="PATH")
    _add_split_source(sp)
    sp.add_argument("--plot", metavar="FILE.png",
                    help="draw the ROC curve and per-message error chart (needs matplotlib)")
    sp.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    sp.add_argument("--errors", action="store_true", help="list the misclassified messages")
    _add_bias(sp)
    _add_progress(sp, "a progress line on stderr (default: when stderr is a terminal)")
    sp.set_defaults(func=commands.cmd_test)

    sp = add("inspect", "show a model's input words, shape and training summary",
             "Show the network's shape, its settings, the training summary and the input words.")
    _add_model(sp)
    sp.add_argument("--words", type=int, default=50, metavar="K", help="words to list (50)")
    sp.add_argument("--all", action="store_true", help="list every input word")
    sp.add_argument("--json", action="store_true",
                    help="the training summary as model.json holds it (JSON)")
    sp.add_argument("--journal", type=int, nargs="?", const=20, metavar="N",
                    help="list the N latest corrections of the correction journal (20), "
                    "newest first, instead of the model")
    sp.set_defaults(func=commands.cmd_inspect)

    sp = add("learn", "teach a model that messages are spam or ham, or forget such a lesson",
             "Teach an existing model that messages are spam or ham, e.g. after a mistake, "
             "through the one correction routine the daemon and spamc -L use (config "
             "learn:); with --forget, undo an earlier lesson of the messages (the model's "
             "correction journal). The model is saved in place, atomically, under its "
             "writer lock.")
    _add_model(sp)
    cls = sp.add_mutually_exclusive_group(required=True)
    cls.add_argument("--spam", action="store_true", help="the messages are spam")
    cls.add_argument("--ham", action="store_true", help="the messages are ham")
    cls.add_argument("--forget", action="store_true",
                     help="undo an earlier correction of the messages (the correction "
                     "journal keeps the last learn.journal ones); exit 1 if one was not "
                     "found")
    sp.add_argument("paths", nargs="+", metavar="PATH")
    sp.add_argument("--epochs", type=int, default=None,
                    help="network passes per message (config learn.passes, 3)")
    sp.add_argument("--user", metavar="NAME",
                    help="with a model store (config store:): learn into NAME's per-user "
                    "model (serve.user_model) instead of the fleet's site model; with a "
                    "store, corrections go to the fleet's learner and -m is not used")
    sp.set_defaults(func=commands.cmd_learn)

    sp = add("store", "look after a fleet's model store (config store:)",
             "List, copy out and install the models of a fleet's Redis store (config store:; "
             "docs/guides/fleet.md). push DIR installs a newly trained site model in the "
             "running fleet as a new generation and rebases every per-user model on it "
             "(their correction journals learned again); push --user NAME [DIR] moves a "
             "per-user model directory into the store (DIR: the user's serve.user_model "
             "directory); pull writes a model of the store to a directory. Exit status: 0 "
             "done, 1 refused, 2 usage, 75 Redis unreachable or the learner did not answer.")
    ssub = sp.add_subparsers(dest="store_cmd", metavar="ACTION", required=True)
    ssp = ssub.add_parser("list", help="every model, its version and size; the learner")
    _add_config(ssp, action=True)
    ssp.set_defaults(func=commands.cmd_store)
    ssp = ssub.add_parser("push", help="install a model directory in the store")
    _add_config(ssp, action=True)
    ssp.add_argument("dir", nargs="?", metavar="DIR",
                     help="model directory (with --user: default the user's directory by "
                     "serve.user_model)")
    ssp.add_argument("--user", metavar="NAME",
                     help="store DIR as NAME's per-user model (a delta over the site model)")
    ssp.add_argument("--wait", type=float, default=600.0, metavar="SECONDS",
                     help="how long to wait for the fleet's learner to install a site model "
                     "(600)")
    ssp.set_defaults(func=commands.cmd_store)
    ssp = ssub.add_parser("pull", help="write a model of the store to a directory")
    _add_config(ssp, action=True)
    ssp.add_argument("dir", metavar="DIR", help="model directory to write")
    ssp.add_argument("--user", metavar="NAME", help="NAME's per-user model (default: site)")
    ssp.set_defaults(func=commands.cmd_store)

    sp = add("init", "learn an existing mailbox into a new model of your own (the first day)",
             "Learns the mail a Maildir++ mailbox already holds into a new model directory: "
             "the inbox and its folders as ham, the Junk folder (daemon.junk) as spam, Trash, "
             "Drafts, Sent and Unsure left out, in delivery order, as 'nnspam stream "
             "--untrained --feedback all' learns a stream. Then point the daemon (or the "
             "filter) at it with -m DIR, with the unsure band on for the first weeks "
             "(docs/guides/first-day.md). Exit status: 0 learned, 1 nothing to learn (no "
             "spam or no ham), 2 usage (no maildir, DIR exists).")
    _add_model(sp, required=True)
    sp.add_argument("maildir", metavar="MAILDIR", help="the mailbox (Maildir++, e.g. ~/Maildir)")
    sp.add_argument("--junk", metavar="FOLDER",
                    help="its spam folder (default: the config's daemon.junk, .Junk)")
    sp.add_argument("--skip", action="append", default=[], metavar="FOLDER",
                    help="leave this folder out too (repeatable)")
    sp.add_argument("--tokenizers", type=int, metavar="N",
                    help="processes that tokenize ahead (default: 1 on more than one CPU)")
    _add_progress(sp, "progress every 500 messages on stderr (default: when a terminal)")
    sp.set_defaults(func=commands.cmd_init)

    sp = add("model", "copy a model (e.g. the shipped one) into a directory of your own",
             "copy SRC DEST writes a copy of the model SRC ('default', 'default-sms' or a "
             "model directory; default: default) to the new directory DEST, checked on the "
             "way (every file read as nnspam reads a model) and written atomically: a model "
             "of your own to learn into (the shipped models are read-only). Exit status: 0 "
             "copied, 2 SRC is no model or DEST exists.")
    msub = sp.add_subparsers(dest="model_cmd", metavar="ACTION", required=True)
    ssp = msub.add_parser("copy", help="copy a model to a new directory")
    _add_config(ssp, action=True)
    ssp.add_argument("src", nargs="?", default="default", metavar="SRC",
                     help="model to copy: default, default-sms or a directory (default)")
    ssp.add_argument("dest", metavar="DEST", help="new model directory")
    ssp.set_defaults(func=commands.cmd_model)

    sp = add("stream", "replay a mail history in order, learning as a user would",
             "Reads a TREC-format index (one 'spam|ham PATH' line per message, in order) and "
             "classifies each message, then learns it through the correction routine: every "
             "message (--feedback all, TREC full feedback), only wrong verdicts (errors: a "
             "user's corrections) or never (none). Writes PATH<TAB>JUDGE<TAB>SPAMICITY<TAB>"
             "VERDICT<TAB>SCORE lines (SCORE: the spamicity's logit in full precision, the "
             "ranking score) and a summary (ham lost, spam missed, 1-ROCA, spam missed at "
             "0.05% and 0.1% of ham lost) on stderr. The "
             "start model is copied, never written, unless --save DIR is given.")
    _add_model(sp)
    sp.add_argument("--index", required=True, metavar="FILE",
                    help="TREC index: 'spam|ham PATH' per line, in stream order")
    sp.add_argument("--corpus", metavar="DIR",
                    help="folder (or .tar/.tar.xz archive) the index's paths are relative to "
                    "(default: the index file's folder)")
    sp.add_argument("--untrained", action="store_true",
                    help="start from an untrained network that learns its inputs from the "
                    "stream (instead of -m MODEL / the configured model)")
    sp.add_argument("--kind", choices=("email", "sms"), default="email",
                    help="tokenizer of an --untrained start (email)")
    sp.add_argument("--feedback", choices=("all", "errors", "none"), default="errors",
                    help="what is learned: every message, wrong verdicts (default), nothing")
    sp.add_argument("--limit", type=int, metavar="N", help="only the first N messages")
    sp.add_argument("--tokenizers", type=int, metavar="N",
                    help="processes that tokenize ahead while the model learns (default: 1 "
                    "on a machine with more than one CPU and a stream of over 512 messages, "
                    "else 0); the figures are the same either way")
    sp.add_argument("--out", metavar="FILE", help="write the per-message lines here "
                    "(default: standard output)")
    sp.add_argument("--save", metavar="DIR", help="save the learned model to DIR")
    _add_progress(sp, "progress every 500 messages on stderr (default: when a terminal)")
    sp.set_defaults(func=commands.cmd_stream)

    sp = add("build-wordlist", "build the input word list from spam (and ham) mail",
             "Count the words of the spam messages and keep the top n, dropping stop words "
             "(English, German, French), domain names and noise: the original NNSpam word "
             "list. With --ham, choose the n words that best separate spam from ham instead "
             "(method ig by default). Output: count<TAB>word lines, editable by hand.")
    sp.add_argument("spam_paths", nargs="+", metavar="SPAM_PATH")
    sp.add_argument("--ham", nargs="+", metavar="HAM_PATH")
    sp.add_argument("-n", "--size", type=int, metavar="N", help="words to keep (config: "
                    "wordlist.size)")
    sp.add_argument("--method", choices=("freq", "ig", "chi2"),
                    help="freq without --ham, else config wordlist.method")
    sp.add_argument("-o", "--output", default="-", metavar="FILE", help="output file (stdout)")
    sp.set_defaults(func=commands.cmd_build_wordlist)

    sp = add("convert", "convert mail formats (mbox -> maildir)",
             "nnspam convert mbox MBOX MAILDIR copies every message of an mbox into a maildir "
             "(created if missing), the original NNSpam '2md' step.")
    sp.add_argument("format", choices=("mbox",))
    sp.add_argument("mbox", metavar="MBOX")
    sp.add_argument("maildir", metavar="MAILDIR")
    sp.set_defaults(func=commands.cmd_convert)

    sp = add("daemon", "watch maildirs: move spam to .Junk, learn from corrections",
             "Watch the new/ directory of each inbox maildir (daemon.maildirs in the config, "
             "or --maildir) with inotify; move spam into the Maildir++ Junk folder, leave ham, "
             "and learn from messages moved into or out of Junk. Runs until SIGTERM; SIGHUP "
             "reloads the config and the model. Logs one line per decision on stderr and "
             "speaks the systemd notify protocol (Type=notify).")
    _add_model(sp)
    sp.add_argument("--maildir", action="append", metavar="DIR",
                    help="inbox maildir to watch (repeatable; replaces daemon.maildirs)")
    _add_metrics(sp)
    sp.set_defaults(func=commands.cmd_daemon)

    sp = add("imap", "file and learn mail on IMAP accounts: spam to Junk, learn the user's moves",
             "For each account of imap.accounts: wait for new inbox mail with IDLE, score it "
             "without marking it read and move spam to the account's Junk folder (SPECIAL-USE "
             "\\Junk), unsure mail to its unsure folder when set; learn a message the user "
             "moves into Junk as spam, one nnspam filed that the user moves back to the inbox "
             "as ham, and the $Junk/$NotJunk keywords clients set. Reconnects with back-off; "
             "never deletes mail. Runs until SIGTERM and speaks the systemd notify protocol. "
             "Exit status: 0 stopped, 1 --once and an account failed, 2 bad settings.")
    _add_model(sp)
    sp.add_argument("--account", action="append", metavar="NAME",
                    help="only this account of imap.accounts (repeatable)")
    sp.add_argument("--once", action="store_true",
                    help="one pass over each account (new mail, the user's moves), then exit")
    sp.set_defaults(func=commands.cmd_imap)

    sp = add("serve", "SPAMC/SPAMD scoring server for spamc, Exim and milters",
             "Serve SpamAssassin's SPAMC/SPAMD protocol (PING, CHECK, SYMBOLS, REPORT, "
             "REPORT_IFSPAM, HEADERS, PROCESS, TELL, SKIP) on a Unix socket and/or TCP, so "
             "that spamc gets what nnspam filter writes. Score = 10 * spamicity, threshold = "
             "10 * threshold (spamc -c prints e.g. 9.7/5.0 and exits 1 for spam). spamc -L "
             "spam|ham learns with --allow-tell (model directory given with -m, or per-user "
             "models with serve.user_model). Pre-forks serve.workers processes; socket "
             "activation and Type=notify for systemd. SIGTERM drains and exits 0; SIGHUP "
             "reloads the model.")
    _add_model(sp)
    sp.add_argument("--socket", metavar="PATH",
                    help="listen on this Unix socket (with --listen: replaces serve.socket "
                    "and serve.listen)")
    sp.add_argument("--listen", metavar="HOST:PORT",
                    help="listen on TCP (loopback unless --allow names other networks)")
    sp.add_argument("--allow", action="append", metavar="NETWORK",
                    help="TCP client network allowed (repeatable; replaces serve.allowed)")
    sp.add_argument("--workers", type=int, metavar="N",
                    help="worker processes (replaces serve.workers; 0 = one per core)")
    sp.add_argument("--allow-tell", action="store_true", default=None,
                    help="accept TELL (spamc -L: learn and forget) from the clients in "
                    "serve.tell_allowed and on the Unix socket (sets serve.allow_tell; as "
                    "spamd's --allow-tell); without it TELL is refused with 69")
    _add_metrics(sp)
    sp.set_defaults(func=commands.cmd_serve)

    sp = sub.add_parser(
        "sms", help="SMS from Twilio: webhook server and poller",
        description=textwrap.fill(
            "SMS from a Twilio number go down the same path as email: each becomes a message "
            "in the SMS maildir (sms.maildir) and is filed with the SMS model (sms.model): "
            "spam into .Junk, ham stays. Needs the sms extra (pip install 'nnspam[sms]'); "
            "the auth token comes from TWILIO_AUTH_TOKEN or sms.env_file.", 78))
    smsub = sp.add_subparsers(dest="sms_command", metavar="SMS_COMMAND", required=True)
    ssp = smsub.add_parser("serve", help="serve the Twilio webhook (POST /sms)",
                           description="Serve POST /sms: check X-Twilio-Signature, store and "
                           "file the SMS, answer with an empty TwiML <Response/>.")
    _add_config(ssp, action=True)
    ssp.add_argument("-m", "--model", metavar="MODEL",
                     help="SMS model directory (default: sms.model, the shipped default-sms)")
    ssp.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    ssp.add_argument("--port", type=int, default=4000, help="port (4000)")
    ssp.add_argument("--threads", type=int, default=4, help="waitress worker threads (4)")
    ssp.set_defaults(func=commands.cmd_sms_serve)
    ssp = smsub.add_parser("poll", help="list inbound SMS with the Twilio API",
                           description="List the Twilio number's inbound SMS "
                           "(messages.stream) and store the ones not stored yet; repeat every "
                           "sms.poll_interval seconds, backing off after API errors.")
    _add_config(ssp, action=True)
    ssp.add_argument("-m", "--model", metavar="MODEL",
                     help="SMS model directory (default: sms.model, the shipped default-sms)")
    ssp.add_argument("--since", metavar="DATE",
                     help="list from this date (YYYY-MM-DD[THH:MM:SS], UTC) instead of the "
                     "cursor (first run: one day back)")
    ssp.add_argument("--once", action="store_true",
                     help="poll once and exit (1 if the poll failed)")
    ssp.add_argument("--to", metavar="NUMBER", help="the Twilio number (default: sms.to)")
    ssp.set_defaults(func=commands.cmd_sms_poll)
    ssp = smsub.add_parser("hash-password", help="hash a password for the dashboard",
                           description="Ask for a password (twice) and print its salted scrypt "
                           "hash, for dashboard.password_hash in the config file (the same as "
                           "nnspam hash-password).")
    ssp.add_argument("--stdin", action="store_true",
                     help="read the password from the first line of standard input")
    ssp.set_defaults(func=commands.cmd_sms_hash_password)

    sp = add("hash-password", "hash a password for the web dashboard (dashboard.password_hash)",
             "Ask for a password (twice) and print its salted scrypt hash, for "
             "dashboard.password_hash in the config file: the login of nnspam dashboard and "
             "nnspam sms serve. Needs the sms extra (Flask).")
    sp.add_argument("--stdin", action="store_true",
                    help="read the password from the first line of standard input")
    sp.set_defaults(func=commands.cmd_sms_hash_password)

    sp = add("dashboard", "web dashboard of the daemon's decisions (email), without Twilio",
             "Serve the dashboard without the Twilio webhook: the maildir daemon's recent "
             "decisions (daemon.maildirs, daemon.state), each message with the words that "
             "moved its spamicity, Spam / Not spam / Forget buttons learned like a user's move "
             "in a mail client, and a plot of the last days. Login with "
             "dashboard.password_hash (nnspam hash-password). nnspam sms serve "
             "serves the same pages beside the SMS ones. Needs the sms extra (Flask).")
    _add_model(sp)
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    sp.add_argument("--port", type=int, default=4001, help="port (4001)")
    sp.add_argument("--threads", type=int, default=4, help="waitress worker threads (4)")
    sp.set_defaults(func=commands.cmd_dashboard)

    from nnspam.services.delivery import pipefilter

    sp = sub.add_parser("filter", help="pipe filter: add X-NNSpam headers to one message",
                        description=textwrap.fill(pipefilter.DESCRIPTION, 78))
    pipefilter.add_arguments(sp)
    from nnspam.services.delivery import spamc

    spamc.add_arguments(sp)
    sp.set_defaults(func=commands.cmd_filter)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["filter"]:
        # The pipe filter runs once per delivered message: dispatch before the
        # full parser is built and anything but the filter's own code is loaded.
        # nnspam.services.delivery.spamc classifies through filter.server when one answers, else
        # in-process (nnspam.services.delivery.pipefilter).
        from nnspam.services.delivery.spamc import main as filter_main

        return filter_main(argv[1:])
    from nnspam.front import commands

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from nnspam.config import ConfigError
    from nnspam.learning.wordlist import WordListError
    from nnspam.mail.corpus import CorpusError
    from nnspam.model.core import ModelError

    try:
        return args.func(args)
    except (commands.UsageError, ConfigError, CorpusError, ModelError, WordListError) as exc:
        return commands.die(str(exc))
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return commands.die("interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
