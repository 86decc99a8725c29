"""The house stays standing: imports point one way, tools -> wiring -> edges -> protocols -> core ->
foundations; the core never imports a web framework; nothing in the server imports a tool. Every import
counts, module level or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tracker"

FOUNDATIONS = {"model", "errors", "settings", "geo", "parse", "logs", "metrics", "bundle"}
PROTOCOLS = {"protocols"}
EDGES = {"sockets", "socket_gate", "redis_rooms", "room_index", "api"}
WIRING = {
    "app",
    "cli",
    "offline_commands",
    "embedded_db",
    "postgres_install",
    "supervisor",
    "private_redis",
    "__init__",
}
# `python -m tracker` is the command line, tools and all, like the `tracker` script.
TOOLS = {"tools", "__main__"}
ORDER = ["foundations", "core", "protocols", "edges", "wiring", "tools"]
WEB_FRAMEWORKS = {"starlette", "socketio", "engineio", "uvicorn"}


def layer(module: str) -> str:
    """The layer of a module of the package, by its first name below `tracker`."""
    top = module.split(".")[1] if "." in module else "__init__"
    for name, members in (
        ("foundations", FOUNDATIONS),
        ("protocols", PROTOCOLS),
        ("edges", EDGES),
        ("wiring", WIRING),
        ("tools", TOOLS),
    ):
        if top in members:
            return name
    return "core"


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return out


def imports(module: str, path: Path) -> set[str]:
    """Every module `path` imports, absolute (relative imports resolved against `module`)."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            if base in ("tracker", "tracker.tools", "tracker.api", "tracker.protocols"):
                found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


MODULES = modules()


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_imports_point_one_way(module: str, path: Path) -> None:
    mine = ORDER.index(layer(module))
    wrong = sorted(
        f"{name} ({layer(name)})"
        for name in imports(module, path)
        if name.startswith("tracker.") and ORDER.index(layer(name)) > mine
    )
    assert not wrong, f"{module} ({layer(module)}) imports from a higher layer: {wrong}"


INNER = [(m, p) for m, p in MODULES if layer(m) in ("foundations", "core", "protocols")]


@pytest.mark.parametrize(("module", "path"), INNER, ids=[m for m, _ in INNER])
def test_the_core_never_imports_a_web_framework(module: str, path: Path) -> None:
    frameworks = sorted(n for n in imports(module, path) if n.split(".")[0] in WEB_FRAMEWORKS)
    assert not frameworks, f"{module} imports {frameworks}"


def test_the_layers_name_only_modules_that_exist() -> None:
    tops = {m.split(".")[1] for m, _ in MODULES if "." in m}
    named = FOUNDATIONS | PROTOCOLS | EDGES | WIRING | TOOLS
    assert named - {"__main__", "__init__"} <= tops, named - tops
    assert "ingest" in tops and layer("tracker.ingest") == "core"
