"""Imports point inward: the core imports no plug-in package and no top-level packages import each other in a cycle.

Layers: ``core`` (``orchestrator`` without ``orchestrator.faces``), ``faces`` (CLI, SDK, gateway,
and ``orchestrator/__init__.py``, which re-exports the SDK),
``routers``, ``aggregators``, ``skills``, ``workers``. Every import counts, also one inside a
function: a hidden import that dodges a cycle is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("orchestrator", "routers", "aggregators", "skills", "workers")
PLUGINS = {"routers", "aggregators", "skills", "workers"}

pytestmark = pytest.mark.unit


def layer(module: str) -> str | None:
    top = module.split(".")[0]
    if top not in PACKAGES:
        return None
    if top == "orchestrator":
        # the package itself (orchestrator/__init__.py) is the SDK's public facade: a face
        return "faces" if module == "orchestrator" or module.startswith("orchestrator.faces") else "core"
    return top


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Absolute module names imported anywhere in ``path`` (module level or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def layer_graph(root: Path = ROOT) -> tuple[nx.DiGraph, dict[tuple[str, str], list[str]]]:
    graph, why = nx.DiGraph(), {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            src = layer(module_name(path, root))
            graph.add_node(src)
            for mod in imported_modules(path):
                dst = layer(mod)
                if dst and dst != src:
                    graph.add_edge(src, dst)
                    why.setdefault((src, dst), []).append(f"{path.relative_to(root)} imports {mod}")
    return graph, why


def test_core_imports_no_plugin_package_and_no_face():
    graph, why = layer_graph()
    bad = [e for e in graph.out_edges("core") if e[1] in PLUGINS | {"faces"}]
    assert not bad, "; ".join(w for e in bad for w in why[e])


def test_no_import_cycle_between_packages():
    graph, why = layer_graph()
    cycles = list(nx.simple_cycles(graph))
    detail = ["; ".join(why[(c[i], c[(i + 1) % len(c)])][0] for i in range(len(c))) for c in cycles]
    assert not cycles, f"import cycles between packages: {cycles}: {detail}"


def test_the_check_sees_a_hidden_import_cycle(tmp_path):
    """The checker itself: a plug-in imported back by the core inside a function is reported."""
    (tmp_path / "orchestrator").mkdir()
    (tmp_path / "routers").mkdir()
    (tmp_path / "orchestrator" / "nodes.py").write_text("def f():\n    from routers.base import make_router\n")
    (tmp_path / "routers" / "base.py").write_text("from orchestrator.core import Budget\n")
    graph, why = layer_graph(tmp_path)
    assert list(nx.simple_cycles(graph)) in ([["core", "routers"]], [["routers", "core"]])
    assert why[("core", "routers")] == ["orchestrator/nodes.py imports routers.base"]
