"""The code's shape: no import circles, models/ free of experiments/, no module past ~400 lines unexplained.

Imports are read with ``ast`` (nothing is imported); an import inside
``if TYPE_CHECKING:`` is for annotations only and never runs, so it is left
out of the graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "experiments")
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def runtime_imports(path: Path, known: set[str], name: str = "") -> set[str]:
    """Our modules that ``path`` (module ``name``) imports when it runs (``from pkg import mod`` counts as ``pkg.mod``).

    Imports inside functions count: a lazy import still ties the two modules together.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    type_only = {id(node) for stmt in ast.walk(tree) if isinstance(stmt, ast.If)
                 and isinstance(stmt.test, ast.Name) and stmt.test.id == "TYPE_CHECKING"
                 for node in ast.walk(stmt)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in known}
    return found - {name}


def import_graph() -> dict[str, set[str]]:
    modules = sources()
    return {name: runtime_imports(path, set(modules), name) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_planted_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_type_checking_imports_are_not_runtime_imports(tmp_path: Path) -> None:
    mod = tmp_path / "m.py"
    mod.write_text("from typing import TYPE_CHECKING\nimport experiments.data\n"
                   "if TYPE_CHECKING:\n    from experiments.trainer import Trainer\n")
    assert runtime_imports(mod, {"experiments.data", "experiments.trainer"}) == {"experiments.data"}


def test_no_import_circles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_models_import_nothing_from_experiments() -> None:
    offenders = {name: sorted(deps) for name, deps in import_graph().items()
                 if name.startswith("models") and any(d.startswith("experiments") for d in deps)}
    assert not offenders, offenders


def test_evaluation_and_bench_do_not_need_the_trainer() -> None:
    graph = import_graph()

    def reaches(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    for name in ("experiments.evaluate", "experiments.attention", "experiments.builders"):
        assert "experiments.trainer" not in reaches(name), name


def test_no_long_module_without_a_reason() -> None:
    """Over MAX_LINES a module says why at its top (a line with "lines:" in its docstring)."""
    long = {}
    for path in sources().values():
        text = path.read_text()
        if text.count("\n") > MAX_LINES and "lines:" not in (ast.get_docstring(ast.parse(text)) or ""):
            long[str(path.relative_to(ROOT))] = text.count("\n")
    assert not long, f"modules over {MAX_LINES} lines with no reason at their top: {long}"
