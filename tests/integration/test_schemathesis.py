"""Schemathesis against spec/api.yaml, in process (the ASGI app, an operator token):
no answer is a 5xx, and every answer conforms to the spec (status, headers, schema).

The fleet is seeded with what the spec's examples name (vehicle veh-0001 in region eu,
release core@1.0.0, rollout ro-demo), so the examples reach the success paths and
the generated cases the failure paths. `make test-faults` runs many more cases, on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from starlette.types import ASGIApp

from muto.cloud.api.app import SPEC
from muto.cloud.settings import MEMORY, Settings
from tests.support.spec_app import APP, check, serve

FULL = os.environ.get("MUTO_FAULT_RUNS") == "full"


@pytest.fixture(scope="module")
def memory_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ASGIApp, str]]:
    yield from serve(Settings(database_url=MEMORY, data_dir=tmp_path_factory.mktemp("st")))


schema = schemathesis.openapi.from_path(SPEC)
schema.app = APP
# Unknown query parameters are ignored, as HTTP APIs commonly do; the token is ours to
# send (the `ignored_auth` check still proves that requests without it get a 401).
schema.config.generation.update(allow_extra_parameters=False, with_security_parameters=False)


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_every_answer_conforms_to_the_spec(
    case: schemathesis.Case, memory_api: tuple[ASGIApp, str]
) -> None:
    check(case, memory_api[1])


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def durable_api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ASGIApp, str]]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    yield from serve(Settings(database_url=url, data_dir=tmp_path))


if FULL:  # defined only for `make test-faults`: 44 skipped cases would crowd `make test`

    @pytest.mark.faults
    @schema.parametrize()
    @settings(
        max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    def test_many_answers_conform_on_sqlite_and_postgres(
        case: schemathesis.Case, durable_api: tuple[ASGIApp, str]
    ) -> None:
        check(case, durable_api[1])
