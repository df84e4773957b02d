"""Issue 25, point 8: an empty standard input is no message. ``classify -`` scored it as
ham (exit 0); now it is a usage error (exit 2), and the pipe filter passes the empty input
through as it was with the error verdict (``--verdict-exit``: 3)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(args: list[str], data: bytes) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnspam", *args], input=data,
                          capture_output=True, timeout=120)


@pytest.mark.parametrize("data", [b"", b"\n\n  \n"])
def test_classify_and_explain_refuse_an_empty_stdin(data):
    for cmd in (["classify", "-m", "default", "-"], ["explain", "-m", "default", "-"]):
        r = _run(cmd, data)
        assert r.returncode == 2, (cmd, r)
        assert b"standard input is empty" in r.stderr and not r.stdout


@pytest.mark.parametrize("data", [b"", b"\n"])
def test_filter_passes_an_empty_input_through_as_an_error(data):
    r = _run(["filter", "-m", "default", "--verdict-exit"], data)
    assert r.returncode == 3 and r.stdout == data
