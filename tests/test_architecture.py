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
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "direct2event"
THIRD_PARTY_GLUE = ("kedro", "kedro_mlflow", "mlflow", "optuna", "pydantic")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, package_root: Path = PACKAGE) -> list[tuple[str, bool]]:
    """``(imported module, at module level)`` for every import in ``path``, relative imports
    (``from . import x``, ``from ..glue import y``) resolved against the file's package."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    top |= {  # imports under a module-level `if`/`try` count as module level
        id(child)
        for node in tree.body
        if isinstance(node, ast.If | ast.Try)
        for child in ast.walk(node)
    }
    here = path.relative_to(package_root.parent).with_suffix("").parts
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, up level - 1 more
                package = here[:-1]  # a.b.c -> a.b; a.b.__init__ -> a.b
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            names = [f"{module}.{a.name}" for a in node.names]
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


# --- sizes: what a maintainer reads in one sitting ----------------------------------------

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
MAX_LONG_FUNCTIONS = 6  # a flat table (NIR's node table, a pipeline's wiring) may run longer
MAX_PARAMETERS = 8


def functions(path: Path) -> list[tuple[str, int, int]]:
    """``(name, lines, parameters)`` of every function and method in ``path`` (self and cls
    are not parameters)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            params = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
            count = len([p for p in params if p not in ("self", "cls")])
            count += bool(a.vararg) + bool(a.kwarg)
            out.append((node.name, node.end_lineno - node.lineno + 1, count))
    return out


def test_no_module_is_longer_than_a_sitting() -> None:
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 500}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}; split them by concern"


def test_no_function_takes_more_than_eight_parameters() -> None:
    many = [
        f"{m}.{name} ({count})"
        for m, p in MODULES.items()
        for name, _, count in functions(p)
        if count > MAX_PARAMETERS
    ]
    assert not many, f"group these parameters in a config object: {many}"


def test_few_functions_run_over_sixty_lines() -> None:
    long = sorted(
        (lines, f"{m}.{name}")
        for m, p in MODULES.items()
        for name, lines, _ in functions(p)
        if lines > MAX_FUNCTION_LINES
    )
    assert len(long) <= MAX_LONG_FUNCTIONS, f"split some of these: {long}"


def test_the_size_rules_see_nested_functions_and_methods(tmp_path: Path) -> None:
    """The counter finds a method's parameters and a nested function's length."""
    source = tmp_path / "m.py"
    body = "\n".join(f"            x{i} = {i}" for i in range(61))
    source.write_text(
        "class C:\n    def f(self, a, b, *args, c, **kw):\n        def g():\n"
        f"{body}\n        return g\n"
    )
    found = {name: (lines, count) for name, lines, count in functions(source)}
    assert found["f"][1] == 5 and found["g"][0] == 62


# --- no history in the code: dates, seeds' results and machines live in docs/ --------------

HISTORY = {
    "a date": re.compile(r"\b20\d\d-\d\d-\d\d\b"),
    "a machine": re.compile(
        r"(?i)\b(epyc|xeon|avx-?512|avx2|\bamx\b|sapphire rapids|h100|h200|\d+-core)\b"
    ),
    "a seed's result": re.compile(r"(?i)\bseeds? \d+(?:\s*[-,]\s*\d+)*\b[^\n]*\d\.\d"),
    "a measurement anecdote": re.compile(
        r"(?i)\bmeasured on (an? )?(mnist|digits|simulated|n-mnist|cifar|dvs|intel|amd)"
    ),
}
TEXT_FILES = [
    p
    for root in (PACKAGE, PACKAGE.parents[1] / "conf")
    for p in sorted(root.rglob("*"))
    if p.suffix in (".py", ".yml", ".yaml", ".c") and "egg-info" not in str(p)
]


# the module whose job is to name the machine a result ran on (from /proc/cpuinfo)
NAMES_MACHINES = PACKAGE / "glue" / "machine.py"


@pytest.mark.parametrize("kind", sorted(HISTORY))
def test_no_history_in_the_code_or_its_parameters(kind: str) -> None:
    found = [
        f"{p.relative_to(PACKAGE.parents[1])}:{i}: {line.strip()}"
        for p in TEXT_FILES
        if not (kind == "a machine" and p == NAMES_MACHINES)
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if HISTORY[kind].search(line)
    ]
    assert not found, f"{kind} in src/ or conf/ (it belongs in docs/): {found}"


def test_the_history_rules_catch_what_they_name() -> None:
    assert HISTORY["a date"].search("# added 2026-12-02")
    assert HISTORY["a machine"].search("on an AVX-512 EPYC it took lambda = 6.26")
    assert HISTORY["a machine"].search("(MNIST net, 2-core: 0.30 ms)")
    assert HISTORY["a seed's result"].search("seed 0: lambda = 2, 0.9959 at 9.95x")
    assert HISTORY["a seed's result"].search("seeds 0-2 met 0.995")
    assert not HISTORY["a seed's result"].search("one seed for the split and the sweep")
    assert HISTORY["a measurement anecdote"].search("(measured on MNIST: about 0.002)")


def test_relative_imports_are_seen(tmp_path: Path) -> None:
    """A relative import counts like an absolute one: ``from ..glue import runs`` in
    ``snn/x.py`` is an import of ``direct2event.glue.runs`` (the layer rules then refuse it)."""
    root = tmp_path / "direct2event"
    (root / "snn").mkdir(parents=True)
    module = root / "snn" / "x.py"
    module.write_text("from ..glue import runs\nfrom . import models\nfrom .ops import count\n")
    found = [name for name, _ in imports(module, root)]
    assert found == [
        "direct2event.glue.runs",
        "direct2event.snn.models",
        "direct2event.snn.ops.count",
    ]


def test_root_modules_are_read_and_no_layer_imports_them() -> None:
    """settings, pipeline_registry and __main__ are checked like every module: the layers
    below never import them (they tie the layers together)."""
    roots = {m for m in MODULES if layer(m) == "root"}
    assert {"direct2event.settings", "direct2event.pipeline_registry"} <= roots
    for module, targets in GRAPH.items():
        if layer(module) != "root":
            assert not set(targets) & roots, f"{module} imports a root module"
