"""The layering is checkable: no import cycles, no upward imports, every module placed.

Every module of the package is parsed with :mod:`ast` and every ``import`` and
``from ... import`` is collected wherever it is: at the top of the file, inside a
function, under ``if TYPE_CHECKING:``. A deferred import still couples two modules,
so it counts. The layers are the table in :mod:`nnspam._layers` (lowest first), and
inside ``services`` its sub-packages are ranked by ``SERVICES`` there: shared modules,
then ``models``, then the siblings ``delivery``, ``spamd`` and ``runs``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from nnspam._layers import LAYERS, SERVICES, layer_of, services_rule, sublayer_of

PACKAGE = Path(__file__).resolve().parents[1] / "nnspam"
ROOT = PACKAGE.parent

Edges = dict[str, dict[str, list[int]]]  # module -> imported module -> line numbers


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str], source: str | None = None
               ) -> list[tuple[str, int]]:
    """(imported module of the package, line) for every import in the file, at any
    depth. ``from P import x`` is module ``P.x`` when that is a module, else ``P``."""
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source,
                     str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int]] = []

    def nearest(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [t for a in node.names if (t := nearest(a.name))]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for a in node.names:
                sub = f"{base}.{a.name}"
                t = sub if sub in known else nearest(base)
                if t:
                    targets.append(t)
        found.extend((t, node.lineno) for t in targets if t != name)
    return found


def import_graph(files: dict[str, Path] | None = None) -> Edges:
    files = module_files() if files is None else files
    known = set(files)
    edges: Edges = {m: {} for m in files}
    for name, path in files.items():
        for target, line in imports_of(name, path, known):
            edges[name].setdefault(target, []).append(line)
    return edges


def cycles(edges: Edges) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


def where(module: str, lines: list[int], files: dict[str, Path], root: Path = ROOT) -> str:
    path = files[module].relative_to(root)
    return ", ".join(f"{path}:{n}" for n in sorted(set(lines)))


def closure(edges: Edges, start: list[str]) -> dict[str, list[str]]:
    """Every module reachable from ``start`` -> one import chain that reaches it."""
    seen = {s: [s] for s in start}
    todo = list(start)
    while todo:
        m = todo.pop()
        for t in sorted(edges.get(m, {})):
            if t not in seen:
                seen[t] = seen[m] + [t]
                todo.append(t)
    return seen


FILES = module_files()
GRAPH = import_graph(FILES)
TABLE_HINT = "see the layer table in nnspam/_layers.py"


def test_every_module_has_a_layer():
    missing = [f"  {m} ({FILES[m].relative_to(ROOT)})" for m in sorted(FILES)
               if layer_of(m) is None]
    if missing:
        pytest.fail("modules with no layer (add each to LAYERS in nnspam/_layers.py):\n"
                    + "\n".join(missing), pytrace=False)


def test_every_layer_entry_names_a_module():
    entries = [e for _, _, mods in LAYERS for e in mods]
    stale = [e for e in entries
             if (e[:-2] if e.endswith(".*") else e) not in FILES]
    dup = sorted({e for e in entries if entries.count(e) > 1})
    assert not stale, f"LAYERS in nnspam/_layers.py names modules that do not exist: {stale}"
    assert not dup, f"LAYERS in nnspam/_layers.py places a module twice: {dup}"


def test_no_upward_import():
    bad = []
    for m, targets in sorted(GRAPH.items()):
        mine = layer_of(m)
        for t, lines in sorted(targets.items()):
            theirs = layer_of(t)
            if mine is not None and theirs is not None and theirs[0] > mine[0]:
                bad.append(f"  {where(m, lines, FILES)}: {m} ({mine[1]}) imports {t} "
                           f"({theirs[1]})")
    if bad:
        pytest.fail("upward imports (a module imports only its own layer or lower; "
                    f"{TABLE_HINT}):\n" + "\n".join(bad), pytrace=False)


def test_no_import_cycle():
    report = []
    for comp in cycles(GRAPH):
        report.append("  cycle " + " <-> ".join(comp) + ":")
        for m in comp:
            for t, lines in sorted(GRAPH[m].items()):
                if t in comp:
                    report.append(f"    {where(m, lines, FILES)}: {m} imports {t}")
    if report:
        pytest.fail("import cycles (function-level and TYPE_CHECKING imports count; move "
                    "the shared piece to the lower module, pass it in, or split a module):\n"
                    + "\n".join(report), pytrace=False)


def services_violations(edges: Edges, files: dict[str, Path], root: Path = ROOT
                        ) -> list[str]:
    """One line per import inside ``services`` that breaks :func:`services_rule` (a higher
    room, or a sibling room), with its file and line."""
    bad = []
    for m, targets in sorted(edges.items()):
        for t, lines in sorted(targets.items()):
            if (why := services_rule(m, t)) is not None:
                bad.append(f"  {where(m, lines, files, root)}: {m} imports {t}: {why}")
    return bad


def test_every_services_module_has_a_room():
    missing = [f"  {m} ({FILES[m].relative_to(ROOT)})" for m in sorted(FILES)
               if m.startswith("nnspam.services") and sublayer_of(m) is None]
    if missing:
        pytest.fail("services modules with no room (add each to SERVICES in "
                    "nnspam/_layers.py):\n" + "\n".join(missing), pytrace=False)


def test_every_services_entry_names_a_module():
    entries = [e for _, _, _, mods in SERVICES for e in mods]
    stale = [e for e in entries
             if (e[:-2] if e.endswith(".*") else e) not in FILES]
    dup = sorted({e for e in entries if entries.count(e) > 1})
    assert not stale, f"SERVICES in nnspam/_layers.py names modules that do not exist: {stale}"
    assert not dup, f"SERVICES in nnspam/_layers.py places a module twice: {dup}"


def test_services_rooms_import_only_down():
    """Shared services modules < models < delivery, spamd, runs; the three siblings
    never import each other (no spamd module imports delivery, nor the reverse)."""
    bad = services_violations(GRAPH, FILES)
    if bad:
        pytest.fail("imports across the rooms of services (a room imports only itself or a "
                    f"lower one, never a sibling; {TABLE_HINT}):\n" + "\n".join(bad),
                    pytrace=False)


@pytest.mark.parametrize("entry", [
    "nnspam.model.correct", "nnspam.services.delivery.daemon", "nnspam.services.spamd.server",
    "nnspam.services.delivery.sorter", "nnspam.services.delivery.pipefilter",
    "nnspam.front.sms.store",
    "nnspam.front.sms.webhook", "nnspam.front.dashboard.app", "nnspam.front.sms.poller"])
def test_serving_paths_never_reach_the_batch_trainer(entry):
    """The correction routine, the daemon, the server and SMS learn through
    ``nnspam.model.correct``; none of them needs the batch trainer or the corpus readers."""
    reached = closure(GRAPH, [entry])
    bad = [" -> ".join(reached[m]) for m in ("nnspam.services.runs.training", "nnspam.mail.corpus")
           if m in reached]
    assert not bad, f"{entry} reaches the batch trainer or corpus readers: {bad}"


# -- the checker itself ----------------------------------------------------------

def test_the_checker_sees_every_kind_of_import(tmp_path):
    pkg = tmp_path / "p"
    (pkg / "sub").mkdir(parents=True)
    for f in ("__init__.py", "a.py", "b.py", "c.py", "sub/__init__.py", "sub/d.py"):
        (pkg / f).write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from p.b import B\n"
        "def f():\n"
        "    import p.c\n")
    (pkg / "b.py").write_text("from p import a\n")
    (pkg / "sub" / "d.py").write_text("from .. import __version__\nfrom . import x\n"
                                      "from p.sub import d\nimport os\n")
    files = module_files(pkg)
    g = import_graph(files)
    assert g["p.a"] == {"p.b": [3], "p.c": [5]}
    assert g["p.b"] == {"p.a": [1]}
    assert g["p.sub.d"] == {"p": [1], "p.sub": [2]}
    assert cycles(g) == [["p.a", "p.b"]]
    assert closure(g, ["p.b"])["p.c"] == ["p.b", "p.a", "p.c"]


def test_the_services_rule():
    shared, models = "nnspam.services.verdict", "nnspam.services.models.fleet"
    daemon, server = "nnspam.services.delivery.daemon", "nnspam.services.spamd.server"
    training = "nnspam.services.runs.training"
    for ok in ((models, shared), (daemon, models), (server, models), (server, shared),
               (training, shared), (daemon, "nnspam.services.delivery.sorter"),
               (daemon, "nnspam.model.core"), ("nnspam.front.commands", server)):
        assert services_rule(*ok) is None, ok
    for bad, word in (((shared, models), "higher"), ((models, daemon), "higher"),
                      (("nnspam.services.scoring", server), "higher"),
                      ((server, daemon), "sibling"), ((daemon, server), "sibling"),
                      ((training, daemon), "sibling"), ((server, training), "sibling")):
        assert word in (services_rule(*bad) or ""), bad


def test_the_services_check_names_file_and_line(tmp_path):
    """A synthetic package with a sibling import and an upward one: both reported, each
    with its file and line (the check can fail)."""
    pkg = tmp_path / "nnspam"
    for d in ("services/spamd", "services/delivery", "services/models"):
        (pkg / d).mkdir(parents=True)
    for f in ("__init__.py", "services/__init__.py", "services/verdict.py",
              "services/spamd/__init__.py", "services/delivery/__init__.py",
              "services/delivery/daemon.py", "services/models/__init__.py",
              "services/models/fleet.py"):
        (pkg / f).write_text("")
    (pkg / "services/spamd/server.py").write_text(
        "import os\n"
        "from nnspam.services.models import fleet\n"
        "def f():\n"
        "    from nnspam.services.delivery.daemon import Daemon\n")
    (pkg / "services/verdict.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from nnspam.services.models.fleet import Store\n")
    files = module_files(pkg)
    bad = services_violations(import_graph(files), files, tmp_path)
    assert len(bad) == 2, bad
    assert bad[0].startswith("  nnspam/services/spamd/server.py:4: ") and "sibling" in bad[0]
    assert bad[1].startswith("  nnspam/services/verdict.py:3: ") and "higher" in bad[1]
