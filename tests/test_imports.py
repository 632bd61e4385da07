"""The packages' import graph: dependencies point one way and never round in a circle.

``replay`` is the core (no network code), ``server`` and ``client_sdk`` build on it:
replay never imports server or client_sdk, client_sdk never imports server, and no
module reaches itself through its imports. Imports under ``if TYPE_CHECKING:`` and
inside functions count: they couple the modules all the same.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("replay", "server", "client_sdk")
FORBIDDEN = {"replay": ("server", "client_sdk"), "client_sdk": ("server",), "server": ()}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports (a name resolves to its longest known prefix)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_dependencies_point_one_way():
    wrong = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        for target in targets
        if target.split(".")[0] in FORBIDDEN[module.split(".")[0]]
    ]
    assert not wrong, wrong


def test_no_import_circle():
    try:
        tuple(graphlib.TopologicalSorter(_graph()).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import circle: {' -> '.join(exc.args[1])}") from None


def test_the_walk_sees_imports_of_every_kind():
    """The walk is not vacuous: plain, relative-free ``from`` and function-level imports."""
    graph = _graph()
    assert "replay.machine" in graph["server.match"]
    assert "replay.events" in graph["replay.rules"]
    assert len(graph) > 50


def _names_in_code(path: Path) -> set[str]:
    """Identifiers and string constants of a module, docstrings and comments left out
    (they may give a game as an example; code may not depend on one)."""
    tree = ast.parse(path.read_text())
    docstrings = {  # a bare string statement documents (modules, classes, attributes)
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.alias):
            names.update(node.name.split("."))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            names.update(node.value.replace(".", " ").replace("/", " ").split())
    return names


def test_games_are_named_only_under_replay_games():
    """Generic code names no game (nor imports one): a second game must run on the
    server, the leaderboards and the store without editing them."""
    from games import GAMES

    generic = [ROOT / "server", ROOT / "replay" / "leaderboards", ROOT / "replay" / "store"]
    named = sorted(
        f"{path.relative_to(ROOT)}: {game}"
        for folder in generic
        for path in folder.rglob("*.py")
        for game in GAMES
        if game in _names_in_code(path)
    )
    assert not named, named
