"""Nothing imports upward (docs/architecture.md, "Layers").

Every module under muto/ is parsed (ast), and every import it makes, at the top or
inside a function, is checked against the layer order:

    domain  <-  projections, trust  <-  cloud, agent, audit  <-  sim, fleetctl  <-  muto.cli

A package may import its own layer's packages only where PEERS says so, and any lower
layer. A layer that needs something from above takes a small Protocol instead (e.g.
muto/projections/source.py: EventSource, which the cloud's EventLog implements).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "muto"
DOC = ROOT.parent / "docs" / "architecture.md"

LAYERS: dict[str, int] = {
    "domain": 0,  # pure: the fleet's model and rules
    "projections": 1,  # views built from the log, read through the EventSource port
    "trust": 1,  # signing and verifying releases and documents
    "cloud": 2,  # the control plane: event log, API, MQTT bridge, rollout controller
    "agent": 2,  # the on-vehicle agent
    "audit": 2,  # compliance answers from the log, read through the EventSource port
    "sim": 3,  # simulated fleets and the demo: drive the cloud and agents together
    "fleetctl": 3,  # the operator's command line; composes the audit with the cloud
    "cli": 4,  # muto/cli.py: the entry point, lists every group
    "__init__": 0,  # muto/__init__.py: the package's version, imports nothing
}

# Imports within one layer that are allowed, and why. Any other peer import fails.
PEERS: set[tuple[str, str]] = {
    # The control plane serves the audit over its API (muto/cloud/api/audit.py, the
    # chain check in muto/cloud/auditing.py); the audit never imports the cloud.
    ("cloud", "audit"),
}

# Upward imports in modules other sessions own, left for their owners (issue #20).
# Remove an entry once its import is gone; the test fails on a stale entry too.
KNOWN: set[tuple[str, str]] = set()


def package(module: str) -> str | None:
    """`muto.cloud.api.app` -> `cloud`; None outside muto."""
    parts = module.split(".")
    if parts[0] != "muto":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imported(path: Path) -> Iterator[tuple[str, int]]:
    """Every module an import statement names, with its line (relative imports resolved
    against the module's package)."""
    name = module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, node.lineno
            for alias in node.names:  # `from muto import cloud` names a package
                if base == "muto":
                    yield f"muto.{alias.name}", node.lineno


def edges() -> Iterator[tuple[str, str, str, int]]:
    """(importer's package, imported package, file, line) for every import across
    muto's packages."""
    for path in sorted(ROOT.rglob("*.py")):
        source = package(module_name(path))
        assert source is not None
        for target_module, line in imported(path):
            target = package(target_module)
            if target is not None and target != source:
                yield source, target, str(path.relative_to(ROOT.parent)), line


def upward() -> list[tuple[str, str, str, int]]:
    return [
        (source, target, where, line)
        for source, target, where, line in edges()
        if LAYERS[target] > LAYERS[source]
        or (LAYERS[target] == LAYERS[source] and (source, target) not in PEERS)
    ]


def test_every_package_has_a_layer() -> None:
    found = {str(package(module_name(p))) for p in ROOT.rglob("*.py")}
    assert found <= set(LAYERS), f"place these in LAYERS: {sorted(found - set(LAYERS))}"


def test_nothing_imports_upward() -> None:
    bad = [
        f"{where}:{line}: {source} imports {target}"
        for source, target, where, line in upward()
        if (where, target) not in KNOWN
    ]
    assert bad == [], "upward imports (take a Protocol instead):\n" + "\n".join(bad)


def test_known_exceptions_are_still_needed() -> None:
    found = {(where, target) for _, target, where, _ in upward()}
    stale = KNOWN - found
    assert stale == set(), f"remove from KNOWN, these imports are gone: {sorted(stale)}"


def test_the_architecture_page_states_these_layers() -> None:
    """docs/architecture.md's table: `| N | `pkg`, `pkg` | ...`."""
    documented = {
        name: int(level)
        for level, cell in re.findall(r"^\| (\d) \| ([^|]+) \|", DOC.read_text(), re.M)
        for name in re.findall(r"`(?:muto/)?(\w+)(?:\.py)?`", cell)
    }
    assert documented == {k: v for k, v in LAYERS.items() if k != "__init__"}


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("import muto.cloud.eventlog", ["muto.cloud.eventlog"]),
        ("def f():\n    from muto.cloud import cli", ["muto.cloud"]),
        ("from muto import cloud", ["muto", "muto.cloud"]),
        ("from .source import Entry", ["muto.audit.source"]),
        ("from ..cloud import eventlog", ["muto.cloud"]),
    ],
)
def test_the_parser_sees_every_form_of_import(
    tmp_path: Path, code: str, expected: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Including imports inside functions and relative ones."""
    fake = tmp_path / "muto" / "audit" / "probe.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(code)
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path / "muto")
    assert [name for name, _ in imported(fake)] == expected
