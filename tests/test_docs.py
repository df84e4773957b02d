"""The documentation: a short README, a site that builds with strict checks, and reference
pages generated from the sources they describe (issue 24)."""

from __future__ import annotations

import importlib.util
import json
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


# -- every table of measured figures names the command that made it (issue 24) -------------
#
# A table is a run of lines starting with "|" whose second line is a separator (|---|...).
# It holds figures when its header names a measure (ham lost, spam missed, FP, FN, 1-ROCA,
# ms, msg/s, messages/s) or a body cell holds a number with a unit (%, ms, s, MB, GB, msg/s)
# or a pair of counts ("62 / 358": ham lost / spam missed).
# Its section is the text between the previous heading and the next one (a "#" line outside
# a fenced block). The section must name a command line: a code span or a line of a fenced
# block that starts with `python`, `.venv/bin/python`, `nnspam`, `bash` (after any VAR=value
# settings), or, for a historical table whose command is lost, the words "command not
# recorded" (with where it was made), so that nobody invents one to pass this check.

FIGURE_PAGES = ("lab", "stream", "compare")
_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^#{1,6}\s")
_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_MEASURE_HEAD = re.compile(r"ham lost|hams lost|spam missed|spams missed|\bFP\b|\bFN\b|1-ROCA"
                           r"|\bms\b|msg/s|messages/s", re.IGNORECASE)
_FIGURE = re.compile(r"\d\s*(%|ms\b|s\b|MB\b|GB\b|msg/s|/\s*\d)")
_RUN = r"(?:[A-Z_]+=\S+\s+)*(?:\.venv/bin/)?(?:python3?|nnspam|bash)\s"
_COMMAND_SPAN = re.compile(r"(?<!`)`(?!`)\s*" + _RUN + r"[^`]*`")
_COMMAND_LINE = re.compile(r"^\s*" + _RUN)


def _sections(text: str) -> list[tuple[int, list[str], bool]]:
    """The page's sections: (first line number, lines, whether it names a command)."""
    out: list[tuple[int, list[str], bool]] = []
    start, lines, command, fenced = 1, [], False, False
    for n, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
        elif fenced:
            command = command or bool(_COMMAND_LINE.match(line))
        elif _HEADING.match(line):
            out.append((start, lines, command))
            start, lines, command = n, [], False
        lines.append(line)
    out.append((start, lines, command))
    return out


def tables_without_command(text: str) -> list[int]:
    """Line numbers of the tables of figures in a Markdown page whose section names no
    command line (see above)."""
    missing = []
    for start, lines, command in _sections(text):
        body = "\n".join(lines)
        command = (command or bool(_COMMAND_SPAN.search(body))
                   or "command not recorded" in body.lower())
        i = 0
        while i < len(lines) - 1:
            if not (lines[i].lstrip().startswith("|") and _SEPARATOR.match(lines[i + 1])):
                i += 1
                continue
            j = i + 2
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            figures = (_MEASURE_HEAD.search(lines[i])
                       or any(_FIGURE.search(row) for row in lines[i + 2:j]))
            if figures and not command:
                missing.append(start + i)
            i = j
    return missing


def test_every_table_of_figures_names_its_command():
    pages = sorted(p for d in FIGURE_PAGES for p in (ROOT / "docs" / d).glob("*.md"))
    assert len(pages) > 30
    missing = [f"{p.relative_to(ROOT)}:{n}" for p in pages
               for n in tables_without_command(p.read_text(encoding="utf-8"))]
    assert missing == [], "tables of figures without the command that made them"


def test_a_table_without_its_command_is_found():
    table = "| filter | ham lost | spam missed |\n|---|---:|---:|\n| nnspam | 1 | 10 |\n"
    page = f"# Results\n\nMeasured on the test part:\n\n{table}"
    assert tables_without_command(page) == [5]
    # a command elsewhere on the page, in another section, does not count
    other = "\n## Elsewhere\n\n```sh\npython scripts/bench/compare.py --out x\n```\n"
    assert tables_without_command(page + other) == [5]
    # in its section, as a code span or in a fenced block (whose "#" lines are no headings),
    # it does
    span = "\nMade by: `python scripts/bench/compare.py --mode batch` (JSON: x.json).\n"
    assert tables_without_command(page + span) == []
    fenced = "\n```sh\n# the run\nOPENBLAS_NUM_THREADS=1 python scripts/bench/archs.py\n```\n"
    assert tables_without_command(page + fenced) == []
    assert tables_without_command(page + "\n`nnspam test -m default`\n") == []
    # a script named without running it is no command; an honest gap is accepted
    assert tables_without_command(page + "\nSee `scripts/bench/measure.py`.\n") == [5]
    assert tables_without_command(page + "\nCommand not recorded; made at abc1234.\n") == []
    # a table of settings is not one of figures
    settings = "# Options\n\n| option | meaning |\n|---|---|\n| -v | more output |\n"
    assert tables_without_command(settings) == []


def _bench(name: str):
    """scripts/bench/<name>.py as a module (stream.py imports compare.py beside it)."""
    spec = importlib.util.spec_from_file_location(f"docs_bench_{name}",
                                                  ROOT / "scripts" / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while being made
    spec.loader.exec_module(mod)
    return mod


def _made_by(page: str) -> str:
    """A generated page's "Made by" line, with the list of runs that may follow it."""
    lines = page.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("Made by"))
    j = i + 1
    if j + 1 < len(lines) and not lines[j] and lines[j + 1].startswith("- "):
        j += 1
    while j < len(lines) and lines[j].startswith("- "):
        j += 1
    return "\n".join(lines[i:j])


def test_generated_pages_name_the_command_of_their_json():
    """docs/stream and docs/compare carry the "Made by" lines that stream.py (and
    stream_merge.py, through it) and compare.py write from the JSON beside each page, so a
    re-run keeps them; a merged report names each filter's own run."""
    stream = _bench("stream")
    summaries: dict[str, list[dict]] = {}
    for path in sorted((ROOT / "docs" / "stream").glob("stream-*.json")):
        report = json.loads(path.read_text(encoding="utf-8"))
        assert stream.json_name(report) == path.name
        page = path.with_suffix(".md").read_text(encoding="utf-8")
        assert _made_by(page) == _made_by(stream.markdown(report)), path.name
        assert f"({path.name})" in _made_by(page)
        mode = path.stem.split(f"stream-{report['stream']}-", 1)[1]
        summaries.setdefault(mode, []).append(report)
    assert len(summaries) == 3
    for mode, reports in summaries.items():
        page = (ROOT / "docs" / "stream" / f"stream-summary-{mode}.md").read_text("utf-8")
        assert _made_by(page) == _made_by(stream.summary_markdown(reports)), mode
    page = (ROOT / "docs" / "stream" / "stream-enron1-all-empty.md").read_text("utf-8")
    nnspam = next(line for line in page.splitlines() if line.startswith("- nnspam: "))
    assert "--filters nnspam" in nnspam
    compare = sys.modules["compare"]
    for path in sorted((ROOT / "docs" / "compare").glob("compare-*.json")):
        report = json.loads(path.read_text(encoding="utf-8"))
        made_by = _made_by(path.with_suffix(".md").read_text(encoding="utf-8"))
        assert made_by == _made_by(compare.markdown(report)), path.name
        assert f"`{report['command']}`" in made_by and f"({path.name})" in made_by
