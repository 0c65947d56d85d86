"""The dependency rule for ``cryptoj.model``: pure values, no asyncio, no I/O.

Every module under ``src/cryptoj/model`` may import only the standard library
(minus the modules that do I/O, concurrency or read the wall clock),
``sortedcontainers``, ``cryptoj.errors`` and other ``cryptoj.model`` modules.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

MODEL_DIR = Path(__file__).resolve().parents[2] / "src" / "cryptoj" / "model"
FORBIDDEN_STDLIB = {
    "asyncio", "socket", "ssl", "selectors", "subprocess", "threading", "multiprocessing", "concurrent",
    "os", "io", "shutil", "tempfile", "pathlib", "time", "urllib", "http", "sqlite3", "logging", "random",
}  # fmt: skip
ALLOWED_THIRD_PARTY = {"sortedcontainers"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def problem(module: str) -> str | None:
    top = module.split(".")[0]
    if module == "cryptoj.errors" or module.startswith("cryptoj.model"):
        return None
    if top == "cryptoj":
        return "imports a cryptoj module outside model/errors (upward dependency)"
    if top in FORBIDDEN_STDLIB:
        return "does I/O, concurrency or reads the clock"
    if top in sys.stdlib_module_names or top == "__future__" or top in ALLOWED_THIRD_PARTY:
        return None
    return "third-party package not allowed in the pure model"


def test_model_directory_has_the_expected_modules() -> None:
    found = {p.stem for p in MODEL_DIR.glob("*.py")}
    assert {"money", "instruments", "orders", "book", "positions", "candles"} <= found


@pytest.mark.parametrize("path", sorted(MODEL_DIR.glob("*.py")), ids=lambda p: p.name)
def test_model_module_imports_only_pure_dependencies(path: Path) -> None:
    bad = {m: why for m in imported_modules(path) if (why := problem(m)) is not None}
    assert bad == {}, f"{path.name}: {bad}"


@pytest.mark.parametrize(
    ("module", "allowed"),
    [("decimal", True), ("asyncio", False), ("aiohttp", False), ("cryptoj.storage", False), ("cryptoj.model.book", True)],
)
def test_the_rule_itself(module: str, allowed: bool) -> None:
    assert (problem(module) is None) is allowed
