"""The floor plan: imports only go down the layers, and no two modules import each other.

Every import of every product module is read with `ast`, those written inside functions and under
`TYPE_CHECKING` included (an import moved into a function to dodge a cycle is still a cycle).
The layers, declared once here (README.md and docs/design.md draw the same diagram):

    launch/                      the driver and the command line: trainer loop, builders, placement
    reward/  rollout/  learner/  the three actor groups' code; none imports another
    rl/                          the base: config, types, grammar, GRPO math, problem types, data,
                                 prompts, metrics, checkpoint format, the weight-sync protocol
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS: dict[str, int] = {"rl": 0, "reward": 1, "rollout": 1, "learner": 1, "launch": 2}
"""Package -> layer. A module may import its own package and any package of a lower layer only."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in LAYERS for p in sorted((ROOT / package).rglob("*.py"))}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The product modules `path` imports anywhere in its body (`from pkg import mod` counts as pkg.mod)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name.split(".")[0] in LAYERS:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _package(module: str) -> str:
    return module.split(".")[0]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_package_has_a_layer():
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()} - {"tests", "benchmarks", "scripts"}
    assert packages == set(LAYERS), f"packages without a layer (or gone): {packages ^ set(LAYERS)}"


def test_imports_only_go_down():
    bad = []
    for module, imported in sorted(_graph().items()):
        for target in sorted(imported):
            same = _package(target) == _package(module)
            if not same and LAYERS[_package(target)] >= LAYERS[_package(module)]:
                bad.append(f"{module} -> {target}")
    assert not bad, "imports up or sideways across the layers:\n" + "\n".join(bad)


def test_no_module_cycles():
    cycles = _cycles(_graph())
    assert not cycles, "modules that import each other (directly or around a loop):\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    "graph, expected",
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert _cycles(graph) == expected


def test_the_reader_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from rl.config import Config\n    import launch.cli\n")
    modules = {"rl.config": Path(), "launch.cli": Path()}
    assert _imports(source, modules) == {"rl.config", "launch.cli"}
