"""The layering of docs/ARCHITECTURE.md holds: who may import whom, and no circles.

Every import counts, also those under TYPE_CHECKING and inside functions: a late import hides
a circle from Python, not from a reader.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "remote", "deploy", "lab")

# (importer prefix, what it must not import): from the bottom layer up.
CONTRACTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("remote", "deploy", "lab", "tasks")),
    ("remote", ("deploy", "lab", "tasks")),
    ("deploy", ("lab", "tasks")),
    # inside deploy, from the leaves up: the record, the cloud and the checks know no step or flow
    ("deploy.report", ("deploy.flows", "deploy.runtime", "deploy.steps", "deploy.wiring", "deploy.cloud")),
    ("deploy.cloud", ("deploy.flows", "deploy.runtime", "deploy.steps", "deploy.wiring", "deploy.report")),
    ("deploy.checks", ("deploy.flows", "deploy.runtime", "deploy.steps", "deploy.wiring", "deploy.cloud")),
    ("deploy.settings", ("deploy.flows", "deploy.runtime", "deploy.steps", "deploy.wiring")),
    ("deploy.steps", ("deploy.flows", "deploy.runtime")),
    ("deploy.wiring", ("deploy.flows", "deploy.runtime", "deploy.steps")),
    ("deploy.cluster", ("deploy.flows", "deploy.runtime", "deploy.steps")),
    ("deploy.runtime", ("deploy.flows",)),
)


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module of ours ``path`` imports (``from a import b`` counts as a.b when b is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # graph() keeps a.b when b is a module, else a: `from pkg import sub` ties to sub alone
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in (*PACKAGES, "tasks")}


def graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")] + [REPO / "tasks.py"]
    modules = {module_name(p): p for p in files}
    # keep only names that are modules of ours (a.b where b is a function is a.b's module a)
    return {name: {m if m in modules else m.rsplit(".", 1)[0] for m in imports_of(path)} - {name}
            for name, path in modules.items()}


def violations(edges: dict[str, set[str]], contracts=CONTRACTS) -> list[str]:
    def under(name: str, prefix: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")
    return sorted(f"{src} imports {dst} (a {prefix} module must not import {banned})"
                  for src, targets in edges.items() for dst in targets
                  for prefix, forbidden in contracts if under(src, prefix)
                  for banned in forbidden if under(dst, banned))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_across_a_layer_it_must_not():
    assert violations(graph()) == []


def test_no_modules_import_each_other_in_a_circle():
    assert cycles(graph()) == []


def test_the_checks_catch_an_upward_import_and_a_circle():
    edges = {"remote.sync": {"deploy.steps"}, "deploy.steps": {"deploy.flows.release"},
             "deploy.flows.release": {"deploy.steps"}}
    assert violations(edges) == [
        "deploy.steps imports deploy.flows.release (a deploy.steps module must not import deploy.flows)",
        "remote.sync imports deploy.steps (a remote module must not import deploy)"]
    assert cycles(edges) == [["deploy.flows.release", "deploy.steps"]]


def test_the_graph_sees_late_and_type_checking_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from deploy.report.run import Run\n"
                      "def f():\n    from remote import sync\n")
    assert imports_of(source) == {"deploy.report.run.Run", "remote.sync"}
