"""The layer rules of docs/ARCHITECTURE.md, read from the source: no module imports from a layer above its
own, and no two modules import each other through any chain of imports.

Every import statement counts: at module level, inside functions (lazy imports) and under
`typing.TYPE_CHECKING`, because each of them is a dependency a reader has to follow.

    python -m tests.test_architecture      prints the layers, the upward imports and the import circles
"""

from __future__ import annotations

import ast
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "agents")

# Lowest first; a module may import from its own layer and the layers below. The longest matching prefix
# decides a module's layer.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("harness", "harness.spatial", "harness.folder_lock", "harness.durable_files",
                    "harness.config_errors", "harness.ranks", "harness.lifetime", "harness.strict_config",
                    "harness.hydra_app", "harness.tool_args", "harness.configs")),
    ("sim", ("harness.sim",)),
    ("tasks", ("harness.tasks",)),
    ("envs", ("harness.envs",)),
    ("data", ("harness.data",)),
    ("agents", ("agents",)),
    ("applications", ("harness.serve", "harness.eval", "harness.record", "harness.doctor")),
    ("training", ("harness.train",)),
)


def module_files() -> dict[str, Path]:
    """Every module of the project's packages: dotted name -> file."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    for package in ("harness.configs",):  # configs/ is installed as harness.configs
        init = ROOT / "configs" / "__init__.py"
        if init.is_file():
            found[package] = init
    return found


def layer_of(module: str) -> int:
    best, best_len = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best < 0:
        raise AssertionError(f"{module} belongs to no layer of tests/test_architecture.py's LAYERS")
    return best


def _imported(module: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `module` imports (the module itself, for `from package import submodule`)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # `import harness.sim.layout` -> the module; a name -> its module
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


@lru_cache(maxsize=1)
def import_graph() -> dict[str, frozenset[str]]:
    files = module_files()
    known = set(files)
    return {m: frozenset(_imported(m, p, known)) for m, p in files.items()}


def upward_imports() -> list[str]:
    graph = import_graph()
    return sorted(f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})"
                  for m, deps in graph.items() for d in deps if layer_of(d) > layer_of(m))


def import_circles() -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                circles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(circles)


def test_every_module_has_a_layer():
    for module in import_graph():
        layer_of(module)


def test_no_module_imports_from_a_layer_above_its_own():
    assert upward_imports() == []


def test_no_import_circles():
    assert import_circles() == []


def test_the_checker_sees_lazy_and_type_checking_imports(tmp_path):
    """The parser counts an import inside a function and one under TYPE_CHECKING (a test that can fail)."""
    path = tmp_path / "m.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from harness.train import config\n"
                    "def f():\n    from ..tasks import oracle\n")
    known = {"harness.train.config", "harness.train", "harness.tasks.oracle", "harness.tasks", "harness.data.m"}
    assert _imported("harness.data.m", path, known) == {"harness.train.config", "harness.tasks.oracle"}


if __name__ == "__main__":
    for name, prefixes in LAYERS:
        print(f"{name:13s} {', '.join(prefixes)}")
    print("\nupward imports:", *(upward_imports() or ["none"]), sep="\n  ")
    print("\nimport circles:", *([" <-> ".join(c) for c in import_circles()] or ["none"]), sep="\n  ")
