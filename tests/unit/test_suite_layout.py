"""The suite's own layout: a test module imports what it shares from tests/support (or
its directory's helper modules), never from another test module. Importing a test module
runs its collection-time code and its fixtures' imports a second time, ties suites
together (a faults test breaking when an integration test is renamed), and hides shared
helpers where nobody looks for them."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def imported_modules(source: str, package: tuple[str, ...]) -> list[tuple[int, str]]:
    """(line, dotted name) of every module a module of `package` imports, names included
    for `from package import name` (a name may be a module)."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def imports_of_test_modules(source: str, package: tuple[str, ...]) -> list[tuple[int, str]]:
    return [
        (line, name)
        for line, name in imported_modules(source, package)
        if name.startswith("tests.") and name.rsplit(".", 1)[-1].startswith("test_")
    ]


def test_no_test_module_imports_another() -> None:
    offending = [
        f"{path.relative_to(TESTS.parent)}:{line} imports {name}"
        for path in sorted(TESTS.rglob("*.py"))
        for line, name in imports_of_test_modules(
            path.read_text(encoding="utf-8"), path.relative_to(TESTS.parent).parent.parts
        )
    ]
    assert offending == [], "move what is shared into tests/support:\n" + "\n".join(offending)


def test_the_check_sees_each_kind_of_import() -> None:
    """What the check above catches, shown on a module that does each wrong thing."""
    source = (
        "import tests.unit.test_a\n"
        "from tests.integration.test_b import helper\n"
        "from tests.e2e import test_c\n"
        "from . import test_d\n"
        "from .test_e import thing\n"
        "from tests.support.waits import until\n"
    )
    assert [name for _, name in imports_of_test_modules(source, ("tests", "unit"))] == [
        "tests.unit.test_a",
        "tests.integration.test_b",
        "tests.e2e.test_c",
        "tests.unit.test_d",
        "tests.unit.test_e",
    ]
