"""The documentation: a short README, a site that builds with strict checks, and reference
pages generated from the sources they describe (issue 24)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from nnspam import config as C  # noqa: E402

import build_reference  # noqa: E402


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    # the two commands first, and exactly the test command .ci/run runs
    block = text.split("```sh", 1)[1].split("```", 1)[0]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci in block and "nnspam test" in block
    for target in re.findall(r"\]\((docs/[^)#\s]+)", text):
        assert (ROOT / target).is_file(), f"README links to {target}, which does not exist"


def test_every_setting_is_documented_in_config_yaml():
    comments = build_reference.config_comments((ROOT / "config.yaml").read_text("utf-8"))
    leaves = [name for name, _ in build_reference._leaves(C.DEFAULTS)]
    assert len(leaves) > 100
    assert [n for n in leaves if not comments.get(n)] == []


def test_a_setting_without_a_comment_stops_the_reference(monkeypatch):
    monkeypatch.setitem(C.DEFAULTS, "undocumented_setting", 1)
    with pytest.raises(SystemExit, match="undocumented_setting"):
        build_reference.configuration_page()


def test_generated_reference_pages_are_up_to_date():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_reference.py"),
                           "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    config_page = build_reference.CONFIG_PAGE.read_text(encoding="utf-8")
    for name in ("serve.user_lists", "learn.ham_margin", "filter.unsure"):
        assert f"| `{name}` |" in config_page
    cli_page = build_reference.CLI_PAGE.read_text(encoding="utf-8")
    for heading in ("### nnspam filter", "### nnspam serve", "## Exit Status", "## Files"):
        assert heading in cli_page


def test_the_site_builds_with_strict_checks(tmp_path):
    """mkdocs build --strict: a dead link, a missing page or anchor fails the build."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    # not -q: mkdocs then drops the warnings before strict mode counts them, and passes
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "s")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "s" / "reference" / "configuration" / "index.html").is_file()
    # and it does fail on a dead link: the same build over a copy with one added
    import shutil

    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    with open(tmp_path / "docs" / "index.md", "a", encoding="utf-8") as fh:
        fh.write("\n[gone](guides/daemon.md#no-such-anchor)\n")
    proc = subprocess.run(cmd[:-1] + [str(tmp_path / "t")], cwd=tmp_path, capture_output=True,
                          text=True, env=env)
    assert proc.returncode != 0 and "no-such-anchor" in proc.stderr
