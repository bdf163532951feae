"""The layering of docs/architecture.md, enforced: a module imports only from its own unit or from a lower layer, no
two units import each other (directly or round a cycle), and only the Flower layer and deployment import ``flwr``.

Imports are read from the source (``ast``), every one of them -- at module top, inside functions (lazy) and under
``TYPE_CHECKING`` -- because a lazy import is still a dependency a newcomer has to know about.
"""
from __future__ import annotations

import ast
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fedface", "clients", "strategies")

#: (layer, units) from the bottom up; a unit is a package of fedface (``fedface.data``), a top-level module of
#: fedface (``fedface.compare``) or one of the Flower packages. docs/architecture.md shows this table.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("fedface", "fedface.io", "fedface.config", "fedface.freq", "fedface.report")),
    ("data", ("fedface.data",)),
    ("networks", ("fedface.models",)),
    ("mixing", ("fedface.mixup",)),
    ("protections", ("fedface.protect",)),
    ("training and evaluation", ("fedface.train", "fedface.eval", "fedface.metrics")),
    ("attacks", ("fedface.attacks",)),
    ("experimenter", ("fedface.experiment", "fedface.runs")),
    ("federation ML", ("fedface.federation",)),
    ("Flower client", ("clients",)),
    ("Flower server", ("strategies",)),
    ("commands", ("fedface.centralized", "fedface.invert", "fedface.reconstruct", "fedface.compare",
                  "fedface.compare_records", "fedface.compare_report", "fedface.summarize", "fedface.deploy", "fedface.cli")),
)
#: the only units that may import Flower
FLWR_UNITS = {"clients", "strategies", "fedface.deploy"}


def unit_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    if parts[0] == "fedface" and len(parts) > 1:
        return f"fedface.{parts[1]}"
    return parts[0]


def import_edges(root: Path) -> dict[tuple[str, str], list[str]]:
    """(importing unit, imported unit) -> the "file:line" of each such import; ``flwr`` counts as a unit."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            source = unit_of(module)
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                    if node.module in PACKAGES:  # ``from fedface import compare``: the submodules are the targets
                        names = [f"{node.module}.{a.name}" for a in node.names]
                else:
                    continue
                for name in names:
                    target = "flwr" if name.split(".")[0] == "flwr" else unit_of(name)
                    if target and target != source:
                        edges[(source, target)].append(f"{path.relative_to(root)}:{node.lineno}")
    return edges


def violations(root: Path) -> list[str]:
    level = {unit: i for i, (_, units) in enumerate(LAYERS) for unit in units}
    edges = import_edges(root)
    found = []
    for (source, target), where in sorted(edges.items()):
        if target == "flwr":
            if source not in FLWR_UNITS:
                found.append(f"{source} imports flwr ({', '.join(where)}): only {sorted(FLWR_UNITS)} may")
            continue
        for unit in (source, target):
            if unit not in level:
                found.append(f"{unit} is in no layer of tests/test_layers.py LAYERS ({', '.join(where)})")
        if source in level and target in level and level[target] > level[source]:
            found.append(f"upward import: {source} ({LAYERS[level[source]][0]}) -> {target} "
                         f"({LAYERS[level[target]][0]}) at {', '.join(where)}")
    found += [f"import cycle: {' -> '.join(c)}" for c in cycles({e for e in edges if e[1] != "flwr"})]
    return sorted(set(found))


def cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of units (Tarjan), as a readable path."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [[*g, g[0]] for g in groups]


def test_the_code_keeps_its_layers():
    assert violations(ROOT) == []


def _copy_tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return tmp_path


@pytest.mark.parametrize("planted, expected", [
    (("fedface/io.py", "from fedface.attacks import threat"), "upward import: fedface.io (foundation) -> fedface.attacks"),
    (("fedface/protect/base.py", "def _f():\n    import fedface.experiment.keys"), "upward import: fedface.protect"),
    (("fedface/train/loop.py", "import flwr"), "fedface.train imports flwr"),
    (("clients/client_app.py", "from strategies.strategy import FedFaceAvg"), "import cycle: clients -> strategies"),
])
def test_a_planted_violation_is_caught(tmp_path, planted, expected):
    """The checker finds an upward import (also a lazy one inside a function), a stray flwr import and a cycle."""
    root = _copy_tree(tmp_path)
    path, line = planted
    with open(root / path, "a") as f:
        f.write("\n" + line + "\n")
    found = violations(root)
    assert any(v.startswith(expected) for v in found), found


def test_the_layer_table_in_the_docs_is_this_one():
    """docs/architecture.md's layer table lists these layers, bottom up, with their units."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "`" in line]
    documented = {}
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            documented[int(cells[0])] = (cells[1], cells[2])
    assert sorted(documented) == list(range(len(LAYERS))), "docs/architecture.md: one row per layer, numbered 0.."
    for i, (name, units) in enumerate(LAYERS):
        doc_name, doc_units = documented[i]
        assert doc_name == name, (i, doc_name, name)
        for unit in units:
            assert f"`{unit}`" in doc_units, (name, unit)
