"""The documented config.yaml is the built-in defaults; bad files are clear errors."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from nnspam import config as C
from nnspam.config import DEFAULTS, ConfigError, load_config, sms_training

from conftest import ROOT


def test_config_yaml_documents_exactly_the_defaults():
    documented = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert documented == DEFAULTS


def test_partial_file_overrides_only_its_settings(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("threshold: 0.7\nnetwork:\n  dropout: 0.5\nsms:\n  wordlist:\n    size: 99\n")
    cfg = load_config(str(f))
    assert cfg["threshold"] == 0.7
    assert cfg["network"]["dropout"] == 0.5
    assert cfg["network"]["l2"] == DEFAULTS["network"]["l2"]
    assert sms_training(cfg)["wordlist"]["size"] == 99
    assert sms_training(cfg)["network"]["dropout"] == 0.5


@pytest.mark.parametrize(
    "text, message",
    [
        ("threshhold: 0.7\n", "unknown setting 'threshhold'"),
        ("network: 3\n", "must be a mapping"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_config_files(tmp_path, text, message):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(str(f))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(str(tmp_path / "nope.yaml"))


def test_one_network_where_the_recipe_says_so():
    """Email merges three networks trained with input dropout; SMS and the original design
    (--faithful) train one network without it."""
    from nnspam.config import FAITHFUL, email_training, merge

    email = email_training(DEFAULTS)["network"]
    assert (email["members"], email["input_dropout"]) == (3, 0.4)
    sms = sms_training(DEFAULTS)["network"]
    assert (sms["members"], sms["input_dropout"]) == (1, 0.0)
    for base in (email_training(DEFAULTS), sms_training(DEFAULTS)):
        faithful = merge(base, FAITHFUL)["network"]
        assert (faithful["members"], faithful["input_dropout"]) == (1, 0.0)
        assert faithful["hidden"] is None


# -- the schema: every value checked when a file is loaded -----------------------------

def _write(tmp_path, text: str | bytes, name: str = "c.yaml"):
    f = tmp_path / name
    if isinstance(text, bytes):
        f.write_bytes(text)
    else:
        f.write_text(text)
    return f


def _error(tmp_path, text: str | bytes) -> tuple[str, str]:
    """(the file's path, the ConfigError message without it) for a config file."""
    f = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(str(f))
    msg = str(info.value)
    assert "\n" not in msg, msg  # one line
    assert msg.startswith(f"{f}: "), msg  # names the file
    return str(f), msg[len(f"{f}: "):]


def _dotted(tree: dict, path: str = "") -> set[str]:
    out = set()
    for k, v in tree.items():
        out |= _dotted(v, f"{path}{k}.") if isinstance(v, dict) else {path + k}
    return out


def test_every_default_and_the_faithful_recipe_pass_the_schema():
    from nnspam.config import FAITHFUL

    assert C.validate(copy.deepcopy(DEFAULTS)) == DEFAULTS
    assert C.validate(copy.deepcopy(FAITHFUL))["network"]["loss"] == "mse"


def test_the_documented_config_yaml_passes_the_schema():
    assert load_config(str(ROOT / "config.yaml")) == DEFAULTS


def test_the_schema_covers_every_setting_of_the_defaults():
    """One spec per setting: a setting added to DEFAULTS without one fails here. The SMS
    overrides sms.wordlist/features/network take every setting of the email sections."""
    schema, defaults = _dotted(C.SCHEMA), _dotted(DEFAULTS)
    assert defaults <= schema, defaults - schema
    mirrored = {f"sms.{n}" for n in schema if n.split(".")[0] in ("wordlist", "features",
                                                                    "network")}
    assert schema - defaults == mirrored - defaults
    assert all(isinstance(s, C.Spec) for s in _leaves(C.SCHEMA))


def _leaves(tree: dict):
    for v in tree.values():
        yield from _leaves(v) if isinstance(v, dict) else [v]


def test_the_schema_choices_are_the_ones_the_code_accepts():
    from nnspam.learning import features, network, wordlist
    from nnspam.model import adaptive
    from nnspam.services.runs import training

    s = C.SCHEMA
    assert s["wordlist"]["method"].choices == wordlist.METHODS
    # tfidf needs idf weights, which only the deep architecture computes
    assert s["features"]["scaling"].choices == tuple(x for x in features.SCALINGS
                                                      if x != "tfidf")
    assert s["features"]["augment"].choices == training.AUGMENTS
    assert s["network"]["refit"].choices == training.REFITS
    assert s["network"]["hidden_activation"].choices == network._HIDDEN_ACTIVATIONS
    assert s["network"]["output"].choices == network._OUTPUTS
    assert s["network"]["loss"].choices == network._LOSSES
    assert s["network"]["optimizer"].choices == network._OPTIMIZERS
    assert s["adaptive"]["policy"].choices == adaptive.POLICIES
    assert s["adaptive"]["init"].choices == adaptive.INITS
    assert s["learn"]["optimizer"].choices == ("sgd", "adam")  # correct.rule_from_config


# The mail admin's report: each of these went wrong on the code before the schema.
ADMIN_CASES = [
    # was: a NumPy UFuncNoLoopError traceback from cmd_classify, exit 1
    ("classify", b"threshold: abc\n", "threshold must be a number in (0, 1), not 'abc'"),
    # was: accepted, every message HAM, exit 0
    ("classify", b"threshold: 5\n", "threshold must be a number in (0, 1), not 5"),
    # was: read as the list of its characters ("nnspam: /: not a maildir")
    ("daemon", b"daemon:\n  maildirs: /var/mail/bob\n",
     "daemon.maildirs must be a list of maildir paths, e.g. [~/Maildir], not "
     "'/var/mail/bob' (a list of one is [/var/mail/bob])"),
    # was: a UnicodeDecodeError traceback, exit 1
    ("classify", b"# r\xe9glages\nthreshold: 0.6\n",
     "not UTF-8 text (byte 0xe9 on line 1); save it as UTF-8"),
    ("classify", b"threshold: [0.5\n", "not valid YAML (line 2: expected ',' or ']', "),
]


@pytest.mark.parametrize("command, text, message", ADMIN_CASES,
                         ids=["threshold-text", "threshold-5", "maildirs-string", "latin-1",
                              "not-yaml"])
def test_the_cli_says_what_is_wrong_in_one_line_and_exits_2(tmp_path, command, text, message):
    f = _write(tmp_path, text)
    msg = _write(tmp_path, b"Subject: hello\n\nfree money now\n", "m.eml")
    args = [str(f), str(msg)] if command == "classify" else [str(f)]
    r = subprocess.run([sys.executable, "-m", "nnspam", command, "-c", *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert r.stderr.startswith(f"nnspam: {f}: {message}"), r.stderr
    assert r.stderr.count("\n") == 1


@pytest.mark.parametrize("command, text, message", ADMIN_CASES[:3])
def test_load_config_rejects_the_reported_values(tmp_path, command, text, message):
    assert _error(tmp_path, text)[1] == message


def test_a_file_that_is_not_utf8_or_not_yaml_is_one_line(tmp_path):
    assert _error(tmp_path, b"threshold: 0.5\nmodel: /m/\xff\n")[1] == (
        "not UTF-8 text (byte 0xff on line 2); save it as UTF-8")
    assert _error(tmp_path, b"threshold: 0.5\n  bad: indent\n")[1].startswith(
        "not valid YAML (line 2: ")
    assert _error(tmp_path, b"\x00\x01")[1].startswith("not valid YAML (")
    # a byte order mark (Windows editors) is not an error
    assert load_config(str(_write(tmp_path, "\ufeffthreshold: 0.6\n")))["threshold"] == 0.6


@pytest.mark.parametrize(
    "text, message",
    [
        ("ham_factor: 0\n", "ham_factor must be a number > 0, not 0"),
        ("spam_factor: -0.1\n", "spam_factor must be a number > 0, not -0.1"),
        ("spam_factor: '0.1'\n", "spam_factor must be a number > 0, not '0.1'"),
        ("threshold: 0\n", "threshold must be a number in (0, 1), not 0"),
        ("threshold: 1.0\n", "threshold must be a number in (0, 1), not 1.0"),
        ("threshold: true\n", "threshold must be a number in (0, 1), not true"),
        ("threshold: .nan\n", "threshold must be a number in (0, 1), not nan"),
        ("threshold:\n", "threshold must be a number in (0, 1), not null"),
        ("model: 3\n", "model must be a model directory or default, not 3"),
        ("max_part_bytes: 1.5\n", "max_part_bytes must be an integer >= 1, not 1.5"),
        ("wordlist:\n  method: tfidf\n", "wordlist.method must be freq, ig or chi2, not 'tfidf'"),
        ("wordlist:\n  size: 0\n", "wordlist.size must be an integer >= 1, not 0"),
        ("features:\n  scaling: tfidf\n",
         "features.scaling must be count, log, binary or lognorm, not 'tfidf'"),
        ("features:\n  augment: text\n", "features.augment must be none or text-only, not 'text'"),
        ("network:\n  hidden: 0\n", "network.hidden must be an integer >= 1 or null, not 0"),
        ("network:\n  dropout: 1.0\n", "network.dropout must be a number in [0, 1), not 1.0"),
        ("network:\n  members: 0\n", "network.members must be an integer >= 1, not 0"),
        ("network:\n  seed: -1\n", "network.seed must be an integer >= 0, not -1"),
        ("network:\n  l2: 1e-5\n",
         "network.l2 must be a number >= 0, not '1e-5' (YAML reads 1e-5 as text: write 1.0e-5)"),
        ("network:\n  hidden_activation: gelu\n",
         "network.hidden_activation must be relu, tanh or sigmoid, not 'gelu'"),
        ("network:\n  loss: mse\n", "network.loss mse needs network.output sigmoid, not 'softmax'"),
        ("adaptive:\n  enabled: 'yes'\n", "adaptive.enabled must be true or false, not 'yes'"),
        ("adaptive:\n  policy: lru\n", "adaptive.policy must be lfu or lfu-ig, not 'lru'"),
        ("adaptive:\n  pseudo_label_confidence: 0.3\n",
         "adaptive.pseudo_label_confidence must be a number in [0.5, 1], not 0.3"),
        ("arch:\n  deep:\n    layers: []\n",
         "arch.deep.layers must be a non-empty list of integers >= 1, e.g. [256, 128, 64], not []"),
        ("arch:\n  sms_embedding:\n    layers: 256\n", "arch.sms_embedding.layers must be a "
         "non-empty list of integers >= 1, e.g. [256, 128, 64], not 256"),
        ("sms:\n  to: +441632960000\n",
         'sms.to must be null or a phone number in quotes, e.g. "+441632960000", not 441632960000'),
        ("sms:\n  public_url: sms.example.org/sms\n",
         "sms.public_url must be null or an http:// or https:// URL, not 'sms.example.org/sms'"),
        ("sms:\n  network:\n    members: 0\n", "sms.network.members must be an integer >= 1"),
        ("sms:\n  dashboard:\n    page_size: 0\n", "sms.dashboard.page_size must be an integer"),
        ("sms:\n  poll_interval: 0\n", "sms.poll_interval must be a number > 0, not 0"),
        ("filter:\n  unsure: [0.6, 0.4]\n",
         "filter.unsure must be null or [low, high] with 0 <= low <= high <= 1, not [0.6, 0.4]"),
        ("filter:\n  unsure: [0.6, 0.9]\n",
         "filter.unsure [0.6, 0.9] must satisfy low <= threshold (0.5) <= high"),
        ("filter:\n  max_size: -1\n", "filter.max_size must be an integer >= 0, not -1"),
        ("filter:\n  server: 783\n", "filter.server must be null, a socket path or HOST:PORT"),
        ("filter:\n  server_timeout: 0\n", "filter.server_timeout must be a number > 0, not 0"),
        ("learn:\n  optimizer: rmsprop\n", "learn.optimizer must be sgd or adam, not 'rmsprop'"),
        ("learn:\n  passes: -1\n", "learn.passes must be an integer >= 0, not -1"),
        ("learn:\n  learning_rate: 0\n", "learn.learning_rate must be a number > 0 or null, not 0"),
        ("learn:\n  wide: 'yes'\n", "learn.wide must be true or false, not 'yes'"),
        ("learn:\n  passes: 4\n  max_passes: 2\n",
         "learn.max_passes (2) is below learn.passes (4)"),
        ("daemon:\n  maildirs: [~/Maildir, 3]\n", "daemon.maildirs must be a list of maildir "
         "paths, e.g. [~/Maildir], not ['~/Maildir', 3]"),
        ("daemon:\n  junk: ''\n", "daemon.junk must be a maildir folder name, e.g. .Junk, not ''"),
        ("daemon:\n  checkpoint_every: 0\n", "daemon.checkpoint_every must be an integer >= 1"),
        ("daemon:\n  learn_from_corrections: 1\n",
         "daemon.learn_from_corrections must be true or false, not 1"),
        ("daemon:\n  rescan_interval: -5\n", "daemon.rescan_interval must be a number >= 0"),
        ("daemon:\n  state: [a]\n", "daemon.state must be a path (a string), not ['a']"),
        ("serve:\n  listen: 127.0.0.1:70000\n", "serve.listen must be null or IP:PORT with a "
         "port 0..65535, e.g. 127.0.0.1:783, not '127.0.0.1:70000'"),
        ("serve:\n  listen: localhost:783\n", "serve.listen must be null or IP:PORT"),
        ("serve:\n  listen: 783\n", "serve.listen must be null or IP:PORT"),
        ("serve:\n  allowed: [10.0.0.0/33]\n", "serve.allowed must be a list of IP networks"),
        ("serve:\n  allowed: 127.0.0.1/32\n", "serve.allowed must be a list of IP networks, e.g. "
         '["127.0.0.1/32", "::1/128"], not \'127.0.0.1/32\' (a list of one is [127.0.0.1/32])'),
        ("serve:\n  workers: -1\n", "serve.workers must be an integer >= 0 or null, not -1"),
        ("serve:\n  user_model: /srv/model\n",
         "serve.user_model must be null or a path pattern with %u, %l or %d"),
        ("serve:\n  socket: 5\n", "serve.socket must be a socket path or null, not 5"),
        ("serve:\n  spamassassin_headers: null\n",
         "serve.spamassassin_headers must be true or false, not null"),
        ("online:\n  epochs: 0\n", "online.epochs must be an integer >= 1, not 0"),
        ("online:\n  admit_min: 0.5\n", "online.admit_min must be a number >= 1, not 0.5"),
        ("online:\n  inputs: 0\n", "online.inputs must be an integer >= 1 or null, not 0"),
        ("online:\n  learning_rate: 2.5E3\n", "online.learning_rate must be a number > 0, not "
         "'2.5E3' (YAML reads 2.5E3 as text: write 2.5e+3)"),
    ],
)
def test_bad_values_name_the_file_the_setting_and_what_is_allowed(tmp_path, text, message):
    assert _error(tmp_path, text)[1].startswith(message)


@pytest.mark.parametrize(
    "text, key, value",
    [
        ("threshold: 0.01\n", "threshold", 0.01),
        ("threshold: 0.99\n", "threshold", 0.99),
        ("ham_factor: 1\n", "ham_factor", 1),
        ("network:\n  hidden: null\n", "network.hidden", None),
        ("network:\n  patience: 0\n", "network.patience", 0),
        ("network:\n  loss: mse\n  output: sigmoid\n", "network.loss", "mse"),
        ("network:\n  l2: 1.0e-5\n", "network.l2", 1e-5),
        ("sms:\n  network:\n    hidden: 64\n", "sms.network.hidden", 64),
        ("sms:\n  to: '+441632960000'\n", "sms.to", "+441632960000"),
        ("filter:\n  unsure: [0.5, 0.5]\n", "filter.unsure", [0.5, 0.5]),
        ("filter:\n  server: not-an-address\n", "filter.server", "not-an-address"),
        ("filter:\n  server: [/run/a.sock, '127.0.0.1:783']\n", "filter.server",
         ["/run/a.sock", "127.0.0.1:783"]),
        ("learn:\n  learning_rate: null\n", "learn.learning_rate", None),
        ("daemon:\n  maildirs: [~/Maildir]\n", "daemon.maildirs", ["~/Maildir"]),
        ("serve:\n  listen: '[::1]:0'\n", "serve.listen", "[::1]:0"),
        ("serve:\n  listen: 0.0.0.0:65535\n", "serve.listen", "0.0.0.0:65535"),
        ("serve:\n  listen: null\n", "serve.listen", None),
        ("serve:\n  workers: 0\n", "serve.workers", 0),
        ("serve:\n  user_model: ~%u/.nnspam/model\n", "serve.user_model", "~%u/.nnspam/model"),
        ("adaptive:\n  enabled: no\n", "adaptive.enabled", False),
        # a heading whose settings are all commented out: YAML reads null, the defaults stay
        ("daemon:\n  # maildirs: [~/Maildir]\n", "daemon.junk", ".Junk"),
    ],
)
def test_good_values_are_kept(tmp_path, text, key, value):
    cfg = load_config(str(_write(tmp_path, text)))
    for part in key.split("."):
        cfg = cfg[part]
    assert cfg == value


@pytest.mark.parametrize(
    "text, message",
    [
        ("treshold: 0.9\n", "unknown setting 'treshold' (did you mean 'threshold'?)"),
        ("daemon:\n  maildir: [~/Maildir]\n",
         "unknown setting 'daemon.maildir' (did you mean 'daemon.maildirs'?)"),
        ("maildirs: [~/Maildir]\n", "unknown setting 'maildirs' (did you mean 'daemon.maildirs'?)"),
        ("network:\n  hidden_units: 64\n", "unknown setting 'network.hidden_units'"),
        ("serve:\n  learn_epochs: 3\n", "'serve.learn_epochs' is now 'learn.passes'"),
        ("1: x\n", "unknown setting '1'"),
    ],
)
def test_unknown_settings_are_errors_that_name_them(tmp_path, text, message):
    assert _error(tmp_path, text)[1].startswith(message)


@pytest.mark.parametrize("bad", [{"passes": -1}, {"optimizer": "rmsprop"}, {"learning_rate": -1},
                                 {"margin": "big"}, {"wide": "yes"},
                                 {"passes": 4, "max_passes": 2}])
def test_the_loader_rejects_bad_learn_values_first_in_the_words_of_correct(tmp_path, bad):
    """The bad learn: values that correct.rule_from_config refuses never reach it from a
    file: the loader refuses them, in the same form ("learn.KEY must be ..., not V")."""
    from nnspam.model.correct import CorrectionError, rule_from_config

    with pytest.raises(CorrectionError) as rule_error:
        rule_from_config({"learn": bad})
    _, message = _error(tmp_path, yaml.safe_dump({"learn": bad}))
    key = next(k for k in ("max_passes", "passes", "optimizer", "learning_rate", "margin",
                           "wide") if k in bad)
    if key == "max_passes":
        assert message == str(rule_error.value)
    else:
        assert message.startswith(f"learn.{key} must be ")
        assert str(rule_error.value).startswith(f"learn.{key} must be ")
        assert message.endswith(f", not {bad[key]!r}")
