"""The package's import graph: no cycles, and no layer imports a layer above it.

Every import counts, whether at module level or inside a function, and so does a module named
in a string that ``importlib.import_module`` could load (``"asynctrainer.ppo.trainer"``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "asynctrainer"

#: Layers, lowest first. A module may import its own layer and the ones below it, never above.
LAYERS: list[set[str]] = [
    {"errors", "files", "lazy"},
    {"settings"},
    {"runtime", "envs", "demos"},
    {"nn", "rewards", "imitation", "ppo", "poca", "sac", "checkpoints", "export", "scale", "serving"},
    {"app", "startup", "testing"},
    {"cli"},
]
#: The modules of the runtime layer that may import no TensorFlow, directly or through another module.
NO_TENSORFLOW = (
    "runtime",
    "envs.base",
    "envs.spec",
    "envs.game_session",
    "demos",
    "checkpoints",
    "serving",
    "files",
    "errors",
)
MODULE_STRING = re.compile(r"^asynctrainer(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str, *, strings: bool = True) -> set[str]:
    """Every ``asynctrainer`` module that ``path`` (module ``name``) imports or names, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif (
            strings
            and isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and MODULE_STRING.match(node.value)
        ):
            found.add(node.value)
    modules = {m for m in found if m == "asynctrainer" or m.startswith("asynctrainer.")}
    return {_existing(m) for m in modules} - {name, ""}


def _existing(module: str) -> str:
    """The longest prefix of ``module`` that is a module of the package (``a.b.Name`` → ``a.b``)."""
    parts = module.split(".")
    while parts:
        candidate = PACKAGE.parent.joinpath(*parts)
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return ""


def _graph(*, strings: bool = True) -> dict[str, set[str]]:
    """Module → what it imports; with ``strings``, also the modules it names (lazy exports, import_module)."""
    return {_module_name(p): _imports(p, _module_name(p), strings=strings) for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # the package's __init__: its lazy public names may point anywhere
    for i, layer in enumerate(LAYERS):
        if parts[1] in layer:
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def test_no_layer_imports_upward() -> None:
    upward = []
    for module, imports in _graph().items():
        mine = _layer(module)
        if mine is None:
            continue
        for imported in imports:
            theirs = _layer(imported)
            if theirs is not None and theirs > mine:
                upward.append(f"{module} -> {imported}")
    assert not upward, "imports pointing up the layers:\n" + "\n".join(sorted(upward))


def test_the_import_graph_has_no_cycle() -> None:
    # Imports only: a package's lazy exports name its modules without importing them.
    graph = _graph(strings=False)
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> None:
        if node in path:
            cycle = [*path[path.index(node) :], node]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if node in done:
            return
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt != "asynctrainer":  # the root imports only for type checkers (TYPE_CHECKING)
                visit(nxt)
        path.pop()
        done.add(node)

    for node in graph:
        visit(node)


def test_the_runtime_imports_no_tensorflow_through_the_package() -> None:
    graph = _graph()
    heavy = {"asynctrainer.nn.tf_setup"}
    for module in graph:
        short = module.removeprefix("asynctrainer.")
        if not short.startswith(NO_TENSORFLOW):
            continue
        seen: set[str] = set()
        stack = [module]
        while stack:
            node = stack.pop()
            if node in seen or node == "asynctrainer":
                continue
            seen.add(node)
            assert node not in heavy, f"{module} reaches TensorFlow's set-up through its imports"
            stack.extend(graph.get(node, ()))


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The walk itself: a function-level import, a relative import and a module-name string are all found."""
    source = tmp_path / "probe.py"
    source.write_text(
        "def f():\n    from asynctrainer.app import Runner\n\n"
        "from ..checkpoints import manager\n"
        "NAME = 'asynctrainer.ppo.trainer.PPOTrainer'\n",
        encoding="utf-8",
    )
    found = _imports(source, "asynctrainer.runtime.probe")
    assert {"asynctrainer.app", "asynctrainer.checkpoints.manager", "asynctrainer.ppo.trainer"} <= found
    assert all(_layer(m) > _layer("asynctrainer.runtime.probe") for m in found)  # type: ignore[operator]
