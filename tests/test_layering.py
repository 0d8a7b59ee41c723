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
PURE = ("core", "sync", "views")  # the ones that exist are checked
FORBIDDEN_IN_PURE = {"asyncio", "aiohttp", "aiosqlite", "sqlite3"}
# Within federation, the pure packages may use each other and the exception tree only.
ALLOWED_FEDERATION = {"federation", "federation.errors"} | {f"federation.{p}" for p in PURE}
ENVIRONMENT = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}
CRYPTO_MODULE = PACKAGE / "core" / "crypto.py"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
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


def imports_of(path: Path) -> set[str]:
    return imports(path.read_text(), module_name(path), is_package=path.name == "__init__.py")


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
    assert {top(m) for m in found} >= FORBIDDEN_IN_PURE | {"cryptography"}
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
    assert environment_access("from os import getenv, urandom") == ["line 1: from os import getenv"]
    assert environment_access("import os\nos.urandom(3)") == []


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
