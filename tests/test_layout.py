"""The code's shape: no import circles (between modules or between subpackages), experiments/ grouped into
subpackages by role, models/ free of experiments/, no module past ~400 lines unexplained.

Imports are read with ``ast`` (nothing is imported); an import inside
``if TYPE_CHECKING:`` is for annotations only and never runs, so it is left
out of the graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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
    mod.write_text("from typing import TYPE_CHECKING\nimport experiments.data.pipeline\n"
                   "if TYPE_CHECKING:\n    from experiments.training.trainer import Trainer\n")
    assert runtime_imports(mod, {"experiments.data.pipeline", "experiments.training.trainer"}) == {"experiments.data.pipeline"}


def test_no_import_circles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


# experiments/ holds subpackages named for their role (docs/design.md, "Code layout"); only these modules sit
# directly in it: the package itself and ``make run``'s demo, which drives every other part.
TOP_LEVEL_MODULES = {"__init__.py", "demo.py"}


def subpackage(module: str) -> str:
    """The node a module counts as in the subpackage graph: ``experiments.training.trainer`` ->
    ``experiments.training``; a module directly in experiments/ is its own node; ``models.*`` -> ``models``."""
    parts = module.split(".")
    return parts[0] if parts[0] == "models" else ".".join(parts[:2])


def subpackage_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, deps in import_graph().items():
        node = subpackage(name)
        graph.setdefault(node, set()).update(subpackage(d) for d in deps if subpackage(d) != node)
    return graph


def test_no_import_circles_between_subpackages() -> None:
    graph = subpackage_graph()
    assert {"experiments.core", "experiments.data", "experiments.evaluation", "experiments.training"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import circle between subpackages: " + " -> ".join(cycle)


def test_the_subpackage_cycle_finder_sees_a_circle_through_two_modules() -> None:
    graph = {"experiments.a.x": {"experiments.b.y"}, "experiments.b.y": set(), "experiments.b.z": {"experiments.a.w"}}
    collapsed: dict[str, set[str]] = {}
    for name, deps in graph.items():
        collapsed.setdefault(subpackage(name), set()).update(subpackage(d) for d in deps)
    assert find_cycle(collapsed) == ["experiments.a", "experiments.b", "experiments.a"]


def test_evaluation_imports_nothing_from_training_analysis_or_reporting() -> None:
    """Below the trainer: evaluation (and data, core) must stay usable without it, and the layers above."""
    graph = subpackage_graph()
    above = {"experiments.training", "experiments.analysis", "experiments.reporting", "experiments.bench"}
    for low in ("experiments.core", "experiments.data", "experiments.evaluation"):
        assert not graph[low] & above, (low, sorted(graph[low] & above))
    assert not graph["experiments.core"], f"core imports {sorted(graph['experiments.core'])}"


def test_experiments_is_grouped_into_subpackages() -> None:
    top = ROOT / "experiments"
    loose = sorted(p.name for p in top.glob("*.py") if p.name not in TOP_LEVEL_MODULES)
    assert not loose, f"modules directly in experiments/ (put each in the subpackage of its role): {loose}"
    folders = [p for p in top.iterdir() if p.is_dir() and p.name != "__pycache__" and any(p.glob("*.py"))]
    assert len(folders) >= 5
    for folder in folders:
        assert (folder / "__init__.py").exists(), f"{folder.relative_to(ROOT)} is not a package"


def test_pyproject_ships_every_subpackage() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {module_name(p.parent) for pkg in PACKAGES for p in (ROOT / pkg).rglob("__init__.py")}
    assert packages == set(setuptools["packages"]), sorted(packages ^ set(setuptools["packages"]))
    for package, patterns in setuptools["package-data"].items():
        folder = ROOT.joinpath(*package.split("."))
        for pattern in patterns:
            assert any(folder.glob(pattern)), f"package-data {package}: {pattern} matches nothing"


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

    for name in ("experiments.evaluation.evaluate", "experiments.analysis.attention",
                 "experiments.evaluation.builders"):
        assert "experiments.training.trainer" not in reaches(name), name


def test_no_long_module_without_a_reason() -> None:
    """Over MAX_LINES a module says why at its top (a line with "lines:" in its docstring)."""
    long = {}
    for path in sources().values():
        text = path.read_text()
        if text.count("\n") > MAX_LINES and "lines:" not in (ast.get_docstring(ast.parse(text)) or ""):
            long[str(path.relative_to(ROOT))] = text.count("\n")
    assert not long, f"modules over {MAX_LINES} lines with no reason at their top: {long}"
