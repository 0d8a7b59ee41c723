"""Layering, read from the source with `ast` (HOUSE_STYLE: functional core, imperative shell).

- The pure packages (core, sync, campaigns) import no asyncio, aiohttp, aiosqlite
  or sqlite3, read no environment variables, and depend on nothing of the shell.
- Only federation/core/crypto.py imports `cryptography`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "federation"
PURE = ("core", "sync", "views")
FORBIDDEN_IN_PURE = {"asyncio", "aiohttp", "aiosqlite", "sqlite3", "time", "random", "secrets"}
# Within federation, the pure packages may use each other and the exception tree only.
ALLOWED_FEDERATION = {"federation", "federation.errors"} | {f"federation.{p}" for p in PURE}
ENVIRONMENT = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv", "urandom"}
CRYPTO_MODULE = PACKAGE / "core" / "crypto.py"
# The arrows of ARCHITECTURE.md: what each part of federation/ may import. Anything
# not listed (a new package) must be placed here first.
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(),
    "core": {"errors", "core"},
    "sync": {"errors", "core", "sync"},
    "views": {"errors", "core", "views"},
    "store": {"errors", "core", "store"},
    "node": {"errors", "core", "sync", "views", "store", "node"},
    "web": {"errors", "core", "sync", "views", "store", "node", "web"},
    "service": {"errors", "core", "sync", "views", "store", "node", "web"},
    "cli": {"errors", "core", "sync", "views", "store", "node", "web", "service", "cli"},
    # The demo drives the CLI and real node processes: it sits on top, beside cli.
    "demo": {"errors", "core", "sync", "views", "store", "node", "web", "service", "cli", "demo"},
    "__main__": {"cli"},
    "__init__": set(),
}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module `source` imports, absolute; `from a import b` yields a and a.b."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                parent = ".".join([*base, node.module] if node.module else base)
            else:
                parent = node.module or ""
            found.add(parent)
            found.update(f"{parent}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
        ):
            found.add(node.args[0].value)
    return found


def environment_access(source: str) -> list[str]:
    """`os.environ`, `os.getenv(...)`, `from os import environ`, and the like."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ENVIRONMENT
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            found.append(f"line {node.lineno}: os.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [
                f"line {node.lineno}: from os import {a.name}"
                for a in node.names
                if a.name in ENVIRONMENT or a.name == "*"
            ]
    return found


def files(*packages: str) -> Iterator[Path]:
    for package in packages:
        yield from sorted((PACKAGE / package).rglob("*.py"))


def pure_files() -> list[Path]:
    return list(files(*(p for p in PURE if (PACKAGE / p).is_dir())))


def imports_of(path: Path, package: Path = PACKAGE) -> set[str]:
    return imports(
        path.read_text(), module_name(path, package), is_package=path.name == "__init__.py"
    )


def top(name: str) -> str:
    return name.partition(".")[0]


def test_the_import_reader_sees_every_form() -> None:
    source = (
        "import asyncio.tasks\n"
        "import os, sqlite3 as db\n"
        "from . import canonical\n"
        "from ..store import memory\n"
        "from .events import Head\n"
        "def f():\n"
        "    import aiohttp\n"
        "    __import__('aiosqlite')\n"
        "    importlib.import_module('cryptography.x509')\n"
    )
    found = imports(source, "federation.core.log")
    assert {top(m) for m in found} >= {"asyncio", "aiohttp", "aiosqlite", "sqlite3", "cryptography"}
    assert {
        "federation.core.canonical",
        "federation.store.memory",
        "federation.core.events.Head",
    } <= found
    assert "federation.core.x" in imports("from . import x", "federation.core", is_package=True)
    assert environment_access("import os\nos.environ['A']\nos.getenv('B')\n") == [
        "line 2: os.environ",
        "line 3: os.getenv",
    ]
    assert environment_access("from os import getenv, urandom") == [
        "line 1: from os import getenv",
        "line 1: from os import urandom",
    ]
    assert environment_access("import os\nos.urandom(3)") == ["line 2: os.urandom"]
    assert environment_access("import os\nos.path.join('a')") == []


def test_there_is_a_pure_core() -> None:
    names = {p.name for p in pure_files()}
    assert {"canonical.py", "events.py", "crypto.py", "log.py"} <= names


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pure_core_does_no_io(path: Path) -> None:
    found = imports_of(path)
    assert not {m for m in found if top(m) in FORBIDDEN_IN_PURE}, "the pure core does no I/O"
    shell = {
        m
        for m in found
        if top(m) == "federation"
        and m not in ALLOWED_FEDERATION
        and not any(m.startswith(f"federation.{p}.") for p in PURE)
        and not m.startswith("federation.errors.")
    }
    assert not shell, f"the pure core must not depend on the shell: {sorted(shell)}"
    assert environment_access(path.read_text()) == [], "configuration is passed in, not read"


def test_only_crypto_imports_cryptography() -> None:
    importers = {
        path for path in files(".") if any(top(m) == "cryptography" for m in imports_of(path))
    }
    assert importers == {CRYPTO_MODULE}


# --- the arrows between the shell's parts, and no cycles ------------------------------


def part(module: str) -> str:
    """`federation.node.ingest` -> `node`; `federation.service` -> `service`."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (names that are not
    modules, such as `from a import Name`, are dropped)."""
    paths = sorted(package.rglob("*.py"))
    modules = {module_name(p, package) for p in paths}
    return {
        module_name(p, package): {m for m in imports_of(p, package) if m in modules} for p in paths
    }


def layer_violations(package: Path) -> list[str]:
    """Every import that goes against MAY_IMPORT (and any part it does not list)."""
    found = []
    for module, targets in sorted(import_graph(package).items()):
        allowed = MAY_IMPORT.get(part(module))
        if allowed is None:
            found.append(f"{module}: part {part(module)!r} has no place in MAY_IMPORT")
            continue
        for target in sorted(targets):
            if target != package.name and part(target) not in allowed:
                found.append(f"{module} imports {target}")
    return found


def import_cycles(package: Path) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), plus any
    module that imports itself: each is an import cycle."""
    graph = import_graph(package)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
            if len(component) > 1 or v in graph[v]:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def _plant(root: Path, files: dict[str, str]) -> Path:
    package = root / "federation"
    for name, source in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return package


def test_the_checker_sees_planted_violations(tmp_path: Path) -> None:
    """The checks below would pass on anything if they could not see a violation:
    plant each kind in a small tree and see it reported."""
    package = _plant(
        tmp_path,
        {
            "__init__.py": "",
            "core/__init__.py": "",
            "core/events.py": "from federation.node.ingest import Ingest\n",  # upward
            "node/__init__.py": "",
            "node/ingest.py": "from federation.core import events\n",
            "node/follow.py": "from federation.web.client import PeerClient\n",  # upward
            "web/__init__.py": "",
            "web/client.py": "from federation.node import follow\n",
            "gadgets/__init__.py": "",  # a part with no place in the table
        },
    )
    assert layer_violations(package) == [
        "federation.core.events imports federation.node.ingest",
        "federation.gadgets: part 'gadgets' has no place in MAY_IMPORT",
        "federation.node.follow imports federation.web.client",
    ]
    assert import_cycles(package) == [
        ["federation.core.events", "federation.node.ingest"],
        ["federation.node.follow", "federation.web.client"],
    ]


def test_the_parts_import_only_downward() -> None:
    assert layer_violations(PACKAGE) == []


def test_there_is_no_import_cycle_in_federation() -> None:
    assert import_cycles(PACKAGE) == []
