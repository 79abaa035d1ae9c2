"""How often each fault is injected: a few times in `make test` (unmarked), the full
count in `make test-faults` (marked `faults`, run with MUTO_FAULT_RUNS=full)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from _pytest.mark.structures import MarkDecorator, ParameterSet

FULL = os.environ.get("MUTO_FAULT_RUNS") == "full"
FULL_TIMEOUT_S = 1800


def full_only(
    value: Any, id: str, *marks: MarkDecorator, timeout_s: int = FULL_TIMEOUT_S
) -> ParameterSet:
    """A parameter only `make test-faults` runs (`make test` deselects `faults`); a
    tuple is the values of several parameter names."""
    return pytest.param(
        *(value if isinstance(value, tuple) else (value,)),
        id=id,
        marks=[
            pytest.mark.faults,
            pytest.mark.timeout(timeout_s),
            pytest.mark.skipif(not FULL, reason="full count: make test-faults"),
            *marks,
        ],
    )


def runs(bounded: int, full: int, *, full_timeout_s: int = FULL_TIMEOUT_S) -> list[ParameterSet]:
    """A test's `count`: the bounded run, and the full one."""
    return [
        pytest.param(bounded, id=f"bounded-{bounded}"),
        full_only(full, f"full-{full}", timeout_s=full_timeout_s),
    ]


def cases(bounded: list[str], full: list[str]) -> list[ParameterSet]:
    """Named cases: some in `make test`, the rest only in `make test-faults`."""
    return [pytest.param(c, id=c) for c in bounded] + [full_only(c, f"full-{c}") for c in full]


BACKEND_MARKS = {"sqlite": (), "postgres": (pytest.mark.postgres,)}


def backend_runs(bounded_on: str, bounded: int, full: int) -> list[ParameterSet]:
    """A test's (`backend`, `count`): `make test` runs the bounded count on `bounded_on`,
    the backend where the scenario's risk lies (the other one runs it in `make
    test-faults`, at the full count, as `bounded_on` does)."""
    return [
        pytest.param(
            bounded_on,
            bounded,
            id=f"{bounded_on}-bounded-{bounded}",
            marks=BACKEND_MARKS[bounded_on],
        ),
        *(full_only((b, full), f"{b}-full-{full}", *BACKEND_MARKS[b]) for b in BACKEND_MARKS),
    ]
