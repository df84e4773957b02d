"""The documented config.yaml is the built-in defaults; bad files are clear errors."""

from __future__ import annotations

import pytest
import yaml

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
