"""The typed settings objects (nnspam.settings) read every value from the schema's
settings, and a default lives only in nnspam.config.DEFAULTS."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from nnspam import settings as S
from nnspam.config import DEFAULTS, SCHEMA, _dotted, merge, validate


@pytest.mark.parametrize("cls", S.ALL, ids=lambda c: c.__name__)
def test_every_field_names_a_setting_of_the_schema(cls: type) -> None:
    known = set(_dotted(SCHEMA))
    keys = S.keys_of(cls)
    assert keys and not [k for k in keys if k not in known]


@pytest.mark.parametrize("cls", S.ALL, ids=lambda c: c.__name__)
def test_defaults_are_the_config_defaults_and_frozen(cls: type) -> None:
    obj = S.defaults(cls)
    for f in dataclasses.fields(obj):
        if "key" in f.metadata:
            want = f.metadata["convert"](S.lookup(DEFAULTS, f.metadata["key"]))
            assert getattr(obj, f.name) == want
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, dataclasses.fields(obj)[0].name, None)


def test_a_file_s_values_reach_the_object_converted() -> None:
    cfg = merge(copy.deepcopy(DEFAULTS), validate(
        {"ham_factor": 1, "filter": {"unsure": [0.3, 0.7]},
         "daemon": {"junk": ".Spam", "unsure_folder": ".Unsure"},
         "adaptive": {"enabled": False}}))
    s = S.from_config(S.SorterSettings, cfg)
    assert s.point.ham_factor == 1.0 and isinstance(s.point.ham_factor, float)
    assert s.point.unsure == (0.3, 0.7)
    assert (s.junk, s.unsure_folder, s.adaptive) == (".Spam", ".Unsure", False)
    assert S.defaults(S.SorterSettings).point.unsure is None


def test_a_field_without_a_setting_is_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class Bad:
        x: int = 3

    with pytest.raises(TypeError, match="Bad.x names no setting"):
        S.keys_of(Bad)


def test_a_missing_setting_is_named() -> None:
    cfg = copy.deepcopy(DEFAULTS)
    del cfg["daemon"]["junk"]
    with pytest.raises(KeyError, match="setting daemon.junk missing"):
        S.from_config(S.SorterSettings, cfg)
