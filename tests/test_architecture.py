"""The layers and what each may import (docs/architecture.md), read from the source with ``ast``.

- ``snn/``: the pure PyTorch library: imports nothing else of the project (and no Kedro, MLflow,
  Optuna or pydantic; ``tests/snn/test_standalone.py`` runs it with torch and numpy alone).
- ``data/``: dataset readers: the library and each other only.
- ``glue/``: Kedro, MLflow and Optuna around the library: no pipeline, no command.
- ``pipelines/<stage>/``: nodes and wiring: the library, data and glue; no other stage, no
  command.
- ``commands/``: the command-line tools: no pipeline internals (``run`` hands over to Kedro).
- the root modules Kedro needs (``settings``, ``pipeline_registry``, ``__main__``) tie them.
- No import cycle, and no import of the project's own modules inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "direct2event"
THIRD_PARTY_GLUE = ("kedro", "kedro_mlflow", "mlflow", "optuna", "pydantic")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """``(imported module, at module level)`` for every import in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    top |= {  # imports under a module-level `if`/`try` count as module level
        id(child)
        for node in tree.body
        if isinstance(node, ast.If | ast.Try)
        for child in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            found += [(n, id(node) in top) for n in names]
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def own(name: str) -> str | None:
    """The project module ``name`` refers to (``direct2event.glue.params.X`` -> that module)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 and parts[1] == "pipelines":
        return f"pipelines.{parts[2]}"
    if len(parts) == 1:
        return "package"  # direct2event/__init__.py: the version
    return parts[1] if parts[1] in ("snn", "data", "glue", "commands", "pipelines") else "root"


GRAPH = {
    module: sorted({o for name, _ in imports(path) if (o := own(name)) and o != module})
    for module, path in MODULES.items()
}

ALLOWED = {  # which layers a layer may import
    "snn": {"snn"},
    "data": {"data", "snn"},
    "glue": {"glue", "snn", "data", "package"},
    "commands": {"commands", "glue", "snn", "data", "package"},
}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_layer_imports_only_what_it_may(module: str) -> None:
    mine = layer(module)
    for target in GRAPH[module]:
        theirs = layer(target)
        if mine in ALLOWED:
            assert theirs in ALLOWED[mine], f"{module} ({mine}) imports {target} ({theirs})"
        elif mine.startswith("pipelines."):
            assert theirs in {mine, "snn", "data", "glue"}, f"{module} imports {target}"
            assert not (target.endswith(".pipeline") and theirs != mine), target


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_function_level_import_of_the_projects_own_modules(module: str) -> None:
    late = [name for name, top in imports(MODULES[module]) if not top and own(name)]
    assert not late, f"{module} imports {late} inside a function: import at the top"


def test_the_library_and_readers_import_no_framework() -> None:
    for module, path in MODULES.items():
        if layer(module) in ("snn", "data"):
            framework = [n for n, _ in imports(path) if n.split(".")[0] in THIRD_PARTY_GLUE]
            assert not framework, f"{module} imports {framework}"


def test_no_import_cycle() -> None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in GRAPH[node]:
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for module in GRAPH:
        if module not in state:
            visit(module)


def test_the_rules_see_the_whole_package() -> None:
    """The checks above read every module (a moved package is not silently skipped)."""
    layers = {layer(m) for m in MODULES}
    assert {"snn", "data", "glue", "commands", "root", "package", "pipelines"} <= layers
    assert sum(1 for lay in layers if lay.startswith("pipelines.")) == 7  # the seven stages
    assert GRAPH["direct2event.glue.hooks"]  # imports are found
