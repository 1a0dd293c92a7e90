"""Import facts: no circle anywhere, no hidden import in tasks/, a caller loads no engine code, prefect is optional."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import dockyard

ROOT = Path(__file__).resolve().parents[2]
BLOCK_PREFECT = """
import importlib.abc, sys

class NoPrefect(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "prefect" or name.startswith("prefect."):
            raise ImportError(f"{name} is blocked: the prefect extra is not installed")
        return None

sys.meta_path.insert(0, NoPrefect())
for name in sys.argv[1:]:
    __import__(name)
print("imported", len(sys.argv) - 1)
"""
ROOT_PACKAGES = ("dockyard", "dockyard.config", "dockyard.tasks", "dockyard.workers")
ENGINE_MODULES = ("python_on_whales", "docker.api.build")
CLIENT_IMPORT = (
    "import dockyard.tasks.client, dockyard.steps, sys; "
    f"print(sorted(m for m in sys.modules if m.startswith({ENGINE_MODULES!r})))"
)


def all_modules() -> dict[str, Path]:
    """Every module of the installed name ``dockyard``, with its source file."""
    found = {"dockyard": Path(dockyard.__file__)}
    for root in ROOT_PACKAGES:  # mapped from their own folders: not under dockyard/ on disk
        package = importlib.import_module(root)
        found[root] = Path(str(package.__file__))
        for info in pkgutil.walk_packages(package.__path__, root + "."):
            spec = importlib.util.find_spec(info.name)
            assert spec is not None and spec.origin is not None, info.name
            found[info.name] = Path(spec.origin)
    return found


def imported_names(path: Path, module: str, modules: dict[str, Path]) -> set[str]:
    """The dockyard modules that ``module`` imports anywhere in its file (top level or in a function)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                names.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {name for name in names if name in modules and name != module}


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imported_names(path, name, modules) for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_every_package_and_its_arrows() -> None:
    graph = import_graph()
    assert "dockyard.tasks.client" in graph and "dockyard.workers.cli" in graph and "dockyard.config.settings" in graph
    assert "dockyard.tasks.request.spec" in graph["dockyard.tasks.client"] or any(
        "dockyard.tasks.request" in target for target in graph["dockyard.tasks.client"]
    )


def test_the_circle_finder_finds_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle_anywhere() -> None:
    assert circles(import_graph()) == []


def concept_of(module: str) -> str:
    """The room a module stands in: a subpackage of ``dockyard.tasks``, a top module of it, or a top package."""
    parts = module.split(".")
    if parts[:2] == ["dockyard", "tasks"]:
        return ".".join(parts[:3])
    return ".".join(parts[:2])


def test_no_circle_between_concepts() -> None:
    """The packages of dockyard.tasks (request, context, cache, ...) and the top packages stand in layers."""
    rooms: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        for target in targets:
            if concept_of(module) != concept_of(target):
                rooms.setdefault(concept_of(module), set()).add(concept_of(target))
    assert circles(rooms) == []
    assert not rooms.get("dockyard.config"), "config imports nothing of dockyard's"


def function_local_imports(path: Path) -> list[tuple[int, bool]]:
    """(line, explained) of each import inside a function; explained: a comment on the lines just above."""
    lines = path.read_text().splitlines()
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    above = lines[max(0, inner.lineno - 4): inner.lineno - 1]
                    found.append((inner.lineno, any(line.strip().startswith("#") for line in above)))
    return found


def test_tasks_has_no_function_local_import_without_a_comment_saying_why() -> None:
    unexplained = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in sorted((ROOT / "tasks").rglob("*.py"))
        for line, explained in function_local_imports(path)
        if not explained
    ]
    assert unexplained == []


def test_the_function_local_import_check_sees_one(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    import os\n    return os\n\n\ndef g():\n    # why\n    import sys\n")
    assert function_local_imports(source) == [(2, False), (8, True)]


def test_importing_the_client_and_the_steps_loads_no_engine_code() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", CLIENT_IMPORT], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


def test_every_module_but_the_flows_imports_without_prefect() -> None:
    modules = sorted(name for name in all_modules() if name != "dockyard.flows")
    assert "dockyard.tasks.client" in modules and "dockyard.tasks.request.spec" in modules
    completed = subprocess.run(
        [sys.executable, "-c", BLOCK_PREFECT, *modules], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"imported {len(modules)}"


def test_the_blocker_really_blocks_prefect() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", BLOCK_PREFECT, "dockyard.flows"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert completed.returncode != 0 and "prefect is blocked" in completed.stderr
