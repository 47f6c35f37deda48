"""The server's layout stays as DESIGN.md draws it: its modules import one another in one
direction (no circle), no module takes a private name of another, and the sub-packages
depend on each other only the way the data flows (endpoints -> reads / writes; the app,
serve and workers are assembled last)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import fastredis.server

SERVER = Path(fastredis.server.__file__).parent
PREFIX = "fastredis.server"
SIDES = ("reads", "writes")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SERVER).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PREFIX, *parts))


MODULES = {_module_name(p): p for p in sorted(SERVER.rglob("*.py"))}


def _imports(tree: ast.AST) -> Iterator[tuple[str, list[str]]]:
    """(module, names) per import of a server module, lazy and TYPE_CHECKING ones too;
    ``from package import module`` counts as an import of that module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PREFIX):
                    yield alias.name, []
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PREFIX):
            assert node.level == 0, "server modules import by absolute name"
            module = str(node.module)
            plain = []
            for alias in node.names:
                if f"{module}.{alias.name}" in MODULES:
                    yield f"{module}.{alias.name}", []
                else:
                    plain.append(alias.name)
            if plain:
                yield module, plain


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for target, _ in _imports(ast.parse(path.read_text("utf-8"))):
            assert target in MODULES, f"{name} imports {target}, which does not exist"
            graph[name].add(target)
    return graph


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph`, or None (depth-first, colouring the modules)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (found := visit(name)):
            return found
    return None


def test_the_circle_finder_finds_a_circle() -> None:
    assert _circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circles() -> None:
    # the package's __init__ only re-exports create_app and Settings on first use
    graph = {name: targets for name, targets in _graph().items() if name != PREFIX}
    assert _circle(graph) is None


def test_no_private_name_taken_from_another_module() -> None:
    found = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text("utf-8"))
        module_aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PREFIX):
                for alias in node.names:
                    if f"{node.module}.{alias.name}" in MODULES:
                        module_aliases.add(alias.asname or alias.name)
                    elif alias.name.startswith("_"):
                        found.append(f"{name}: from {node.module} import {alias.name}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in module_aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.append(f"{name}: {node.value.id}.{node.attr}")
    assert found == []


def _part(module: str) -> str:
    """The sub-package of a server module: endpoints, reads, writes, edge or run."""
    return module.removeprefix(PREFIX + ".").split(".")[0]


def test_sub_packages_depend_on_each_other_one_way() -> None:
    assembly = {f"{PREFIX}.run.{m}" for m in ("app", "serve", "workers", "process")}
    # the edge refuses XMETA: sids as streams: the one name it takes from the write side
    sid_rule = f"{PREFIX}.writes.meta"
    wrong = []
    for name, targets in _graph().items():
        if name == PREFIX:
            continue
        part = _part(name)
        for target in targets:
            to = _part(target)
            if to == "endpoints" and name != f"{PREFIX}.run.app" and part != "endpoints":
                wrong.append(f"{name} -> {target}: only the app assembles the endpoints")
            crosses = part in (*SIDES, "edge") and to in SIDES and to != part
            if crosses and not (part == "edge" and target == sid_rule):
                wrong.append(f"{name} -> {target}: reads, writes and the edge stay apart")
            if target in assembly and part != "run":
                wrong.append(f"{name} -> {target}: the app is assembled last")
    assert wrong == []
