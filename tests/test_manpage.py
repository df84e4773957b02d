"""The manual page nnspam(1): man/nnspam.1 is what scripts/build_manpage.py makes from the
current parser, documents every command and option, renders without a groff warning and is
installed with the package."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from conftest import ROOT, need

PAGE = ROOT / "man" / "nnspam.1"
SCRIPT = ROOT / "scripts" / "build_manpage.py"
REGENERATE = "run `python scripts/build_manpage.py` and commit man/nnspam.1"


@pytest.fixture(scope="module")
def builder() -> ModuleType:
    """scripts/build_manpage.py as a module (it needs argparse-manpage, the dev extra)."""
    try:
        import argparse_manpage  # noqa: F401
    except ImportError:
        msg = "argparse-manpage not installed (pip install -c constraints.txt -e '.[dev]')"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    spec = importlib.util.spec_from_file_location("build_manpage", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def page() -> str:
    return PAGE.read_text(encoding="utf-8")


def test_page_is_current(builder: ModuleType, page: str,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Regenerating gives the committed page byte for byte, whatever the terminal width
    or SOURCE_DATE_EPOCH."""
    monkeypatch.setenv("COLUMNS", "213")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    fresh = builder.render()
    if fresh != page:
        import difflib

        diff = "".join(list(difflib.unified_diff(
            page.splitlines(keepends=True), fresh.splitlines(keepends=True),
            "man/nnspam.1", "regenerated"))[:60])
        pytest.fail(f"man/nnspam.1 is out of date with the command line: {REGENERATE} "
                    f"(with .venv/bin/python: argparse's usage lines vary between Python "
                    f"versions)\n{diff}")
    assert builder.render() == fresh  # no state carried between runs
    assert os.environ["COLUMNS"] == "213"  # the builder put it back


def _filter_fast_path() -> argparse.ArgumentParser:
    """The parser ``nnspam filter`` really runs (cli.main's fast path)."""
    from nnspam.services.delivery import spamc

    return spamc.build_parser()


def test_every_command_and_option_is_documented(builder: ModuleType, page: str) -> None:
    from nnspam.front.cli import build_parser

    parser = build_parser()
    paths = []
    missing = []
    for path, p in builder.commands(parser):
        if path:
            paths.append(" ".join(path))
            if rf".SS \fB{builder.escape('nnspam ' + ' '.join(path))}\fR" not in page:
                missing.append(f"command nnspam {' '.join(path)}")
        parsers = [p] + ([_filter_fast_path()] if path == ("filter",) else [])
        for q in parsers:
            for action in q._actions:
                if action.help == argparse.SUPPRESS:  # hidden from --help, and so here
                    continue
                for opt in action.option_strings:
                    if isinstance(action, argparse._HelpAction):  # listed in the SYNOPSIS
                        found = builder.escape(opt) in page
                    else:  # an entry of its own: bold, with its help below
                        found = rf"\fB{builder.escape(opt)}\fR" in page
                    if not found:
                        missing.append(f"option {opt} of {q.prog}")
    assert not missing, f"not in man/nnspam.1: {missing}; {REGENERATE}"
    # the walk itself saw the nested commands
    assert {"train", "filter", "sms", "sms serve", "sms poll", "sms hash-password"} <= set(paths)
    for heading in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "EXIT STATUS", "HEADERS",
                    "FILES", "ENVIRONMENT", "SIGNALS", "SEE ALSO"):
        assert f"\n.SH {heading}\n" in page, heading


def test_renders_without_warnings(page: str) -> None:
    """``man -l`` formats the page with every groff warning on, and it says nothing."""
    man = need("man")
    env = {**os.environ, "LC_ALL": "C.UTF-8", "MANWIDTH": "80", "MANROFFSEQ": "",
           "MANPAGER": "cat", "PAGER": "cat"}
    r = subprocess.run([man, "--warnings=w", "-l", str(PAGE)], capture_output=True, env=env,
                       stdin=subprocess.DEVNULL, timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert r.stderr.decode(errors="replace") == ""
    text = r.stdout.decode("utf-8")
    lines = text.splitlines()
    assert lines[0].startswith("NNSPAM(1)") and lines[-1].rstrip().endswith("NNSPAM(1)")
    assert [ln for ln in lines if len(ln) > 80] == []
    for words in ("EXIT STATUS", "X-NNSpam-Status", "--verdict-exit", "nnspam sms hash-password",
                  "~/.local/state/nnspam/daemon.sqlite3", "SIGHUP", "bogofilter(1)"):
        assert words in text, words


def test_installed_with_the_package() -> None:
    """pyproject.toml installs the page as share/man/man1/nnspam.1 (``man nnspam``)."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        data_files = tomllib.load(f)["tool"]["setuptools"]["data-files"]
    assert data_files["share/man/man1"] == ["man/nnspam.1"]


def test_sections_file_lines_that_the_include_format_misreads(builder: ModuleType,
                                                              tmp_path: Path) -> None:
    """argparse-manpage ends a section at any line starting with '[' or '/': the builder
    refuses those instead of dropping text."""
    good = tmp_path / "good.roff"
    good.write_text("[EXIT STATUS]\n.TP\n\\&/etc and \\&[x]\n[>SEE ALSO]\nnothing\n")
    builder.check_sections(good)
    for bad in ("[FILES]\n/etc/nnspam\n", "[FILES]\n[x] y\n", "[files]\nx\n"):
        f = tmp_path / "bad.roff"
        f.write_text(bad)
        with pytest.raises(ValueError, match="bad.roff:"):
            builder.check_sections(f)


def test_check_mode(builder: ModuleType, tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    """``--check`` passes on the committed page and fails, with a diff, on a stale one."""
    assert builder.main(["--check"]) == 0
    stale = tmp_path / "nnspam.1"
    stale.write_text(PAGE.read_text(encoding="utf-8").replace("SIGHUP", "SIGUSR1"))
    assert builder.main(["--check", "-o", str(stale)]) == 1
    assert "+.B SIGHUP" in capsys.readouterr().out
    assert builder.main(["-o", str(stale)]) == 0
    assert stale.read_text(encoding="utf-8") == PAGE.read_text(encoding="utf-8")
