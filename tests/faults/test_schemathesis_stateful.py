"""Scenario 12, stateful: schemathesis walks spec/api.yaml as a state machine, following
links it infers from the spec (a registered vehicle's id into GET/PATCH /vehicles/{id},
/reports/*, /tokens; a started rollout's id into pause, resume, rollback, GET, /audit),
with positive and negative data, on the app over SQLite.
Every answer: not a 5xx and conforming to the spec. tests/integration/test_schemathesis.py
covers the operations one at a time.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from muto.cloud.api.app import SPEC
from muto.cloud.settings import Settings
from tests.faults.runs import runs
from tests.support.spec_app import APP, excluded_checks, serve

schema = schemathesis.openapi.from_path(SPEC)
schema.app = APP
schema.config.generation.update(allow_extra_parameters=False, with_security_parameters=False)
INFERRED = schema.apply_stateful_inference(None)  # the spec declares no links of its own


class Operator(schema.as_state_machine()):  # type: ignore[misc]
    """Each walk starts on a fresh, seeded control plane over a new SQLite file: a walk's
    links depend on what earlier calls stored, so walks must not share a database."""

    token = ""
    data_dirs: Iterator[Path] = iter(())
    _plane: Iterator[tuple[Any, str]] | None = None

    def setup(self) -> None:
        self._plane = serve(Settings(data_dir=next(self.data_dirs)))
        _, Operator.token = next(self._plane)

    def teardown(self) -> None:
        if self._plane is not None:
            self._plane.close()  # the generator's finally: lifespan and plane closed

    def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
        return {"headers": {"Authorization": f"Bearer {self.token}"}}

    def validate_response(self, response: Any, case: schemathesis.Case, *_: Any, **kw: Any) -> None:
        excluded = excluded_checks(case, response)
        case.validate_response(response, excluded_checks=excluded, transport_kwargs=kw)


@pytest.mark.parametrize("count", runs(15, 300))
def test_stateful_walks_answer_without_server_errors(count: int, tmp_path: Path) -> None:
    assert INFERRED.selected >= 40  # links found: the walk goes somewhere
    Operator.data_dirs = (tmp_path / f"walk-{n}" for n in itertools.count())
    Operator.run(
        settings=settings(
            max_examples=count,
            stateful_step_count=8,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
    )
    print(f"\nscenario 12 stateful: {count} walks of up to 8 linked calls, each on a new "
          f"SQLite store; {INFERRED.selected} inferred links")  # fmt: skip
