"""Every learning path gives the same model as the one correction routine.

One message, one correction, from the same saved model and the same config, through:
``correct()`` itself, ``nnspam learn``, the daemon's Sorter (a message the user put into
Junk; the SMS dashboard moves messages through the same Sorter), the server's TELL
(``ModelRegistry.learn``), the online learner (OnlineFilter, the TREC scripts' learner),
the TREC ``train`` command in its own process, and ``nnspam stream --feedback all``.
The network passes are turned on (``learn.passes: 2``) so that the network's update, its
random streams and the wide path are all compared.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnspam.config import load_config
from nnspam.front import cli
from nnspam.model.core import Model
from nnspam.model.correct import correct, rule_from_config
from nnspam.services.runs.stream import start_model

from conftest import ROOT, make_message
from helpers import train_tiny

CONFIG = "learn:\n  passes: 2\n  max_passes: 4\n  margin: 1.0\n"
MESSAGE = make_message("cheap offer for you", "agenda meeting notes cheap pills offer today",
                       sender="news@letters.example.com")


def state(model: Model) -> dict[str, np.ndarray]:
    """Everything a correction may change."""
    out = {k: np.asarray(v) for k, v in model.network.get_weights().items()}
    if model.wide is not None:
        out.update({k: v for k, v in model.wide.arrays().items()})
    if model.adaptive is not None:
        out.update(model.adaptive.arrays())
    out["words"] = np.array(model.words)
    return out


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray], path: str) -> None:
    assert a.keys() == b.keys(), path
    for k in a:
        assert np.array_equal(a[k], b[k]), f"{path}: {k} differs"


@pytest.fixture
def setup(tmp_path):
    base = tmp_path / "base"
    train_tiny(max_epochs=20, members=1).save(base)
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(CONFIG)
    msg = tmp_path / "msg.eml"
    msg.write_bytes(MESSAGE)
    cfg = load_config(str(cfg_file))
    ref = start_model(str(base), cfg)  # what the daemon and nnspam learn start from
    correct(ref, [ref.tokens(MESSAGE)], "spam", rule_from_config(cfg))
    return tmp_path, base, cfg_file, cfg, msg, state(ref)


def _copy(base: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(base, to)
    return to


def test_nnspam_learn(setup):
    tmp, base, cfg_file, _, msg, ref = setup
    m = _copy(base, tmp / "learn")
    assert cli.main(["learn", "-c", str(cfg_file), "-m", str(m), "--spam", str(msg)]) == 0
    assert_same(ref, state(Model.load(m)), "nnspam learn")


def test_daemon_sorter_junk_move(setup):
    from nnspam.mail import maildir as md
    from nnspam.services.delivery.daemon import Daemon, settings_from_config
    from nnspam.services.delivery.state import State

    tmp, base, cfg_file, cfg, msg, ref = setup
    m = _copy(base, tmp / "daemon")
    box = tmp / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (box / sub).mkdir(parents=True)
    s = settings_from_config({**cfg, "daemon": {**cfg["daemon"],
                                                "state": str(tmp / "d.sqlite3")}},
                             [str(box)], str(m))
    d = Daemon(s)
    d._load()
    junk = md.ensure_folder(box, s.junk)
    dest = junk / "new" / "1700000000.M1P1.host"
    dest.write_bytes(MESSAGE)
    assert d.sorter.handle_junk(box, dest) == "corrected"
    d.sorter.checkpoint()
    assert isinstance(d.state, State)
    assert_same(ref, state(Model.load(m)), "daemon")


def test_server_tell(setup):
    from nnspam.services.models.registry import ModelRegistry
    from nnspam.services.models.serve_settings import serve_settings

    tmp, base, _, cfg, _, ref = setup
    m = _copy(base, tmp / "serve")
    reg = ModelRegistry(serve_settings(cfg, model=str(m), listen="127.0.0.1:0"))
    reg.learn(MESSAGE, "spam")
    assert_same(ref, state(Model.load(m)), "serve TELL")


def test_online_learner_and_trec_train(setup):
    from nnspam.services.runs.online import OnlineFilter

    tmp, base, cfg_file, cfg, msg, ref = setup
    f = OnlineFilter.create(tmp / "online", str(base), cfg)
    f.train(MESSAGE, "spam")
    f.save()
    assert_same(ref, state(OnlineFilter.load(tmp / "online").model), "online")
    env = {**os.environ, "NNSPAM_TREC_DIR": str(tmp / "trec"), "NNSPAM_TREC_MODEL": str(base),
           "NNSPAM_TREC_CONFIG": str(cfg_file), "NNSPAM_PYTHON": sys.executable}
    trec = ROOT / "scripts" / "trec"
    for cmd in (["initialize"], ["train", "spam", str(msg), "ham", "-"]):
        subprocess.run([sys.executable, str(trec / cmd[0]), *cmd[1:]], env=env, check=True)
    assert_same(ref, state(OnlineFilter.load(tmp / "trec").model), "TREC train")


def test_nnspam_stream_all_feedback(setup):
    tmp, base, cfg_file, _, msg, ref = setup
    index = tmp / "index"
    index.write_text("spam msg.eml\n")
    out = tmp / "streamed"
    assert cli.main(["stream", "-c", str(cfg_file), "-m", str(base), "--index", str(index),
                     "--feedback", "all", "--out", str(tmp / "lines"), "--save", str(out)]) == 0
    assert_same(ref, state(Model.load(out)), "nnspam stream")
    # the start model was only read: its wide path holds only its training token counts
    assert not Model.load(base).wide.active
