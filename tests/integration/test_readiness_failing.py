"""A projector that fails on every pass is not ready, whatever its lag: an event no view
could take (review of the API, 2026-12) left /healthz saying `ready` with a lag of one
while every write timed out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from muto.cloud.api import health
from muto.cloud.api.app import create_app
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause, register_vehicle
from muto.domain.requests import VehicleRegistration
from tests.support.spine import memory_settings


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    cp = ControlPlane.open(memory_settings(tmp_path))
    try:
        yield cp
    finally:
        cp.close()


def probes(client: TestClient) -> list[tuple[int, dict[str, Any]]]:
    return [
        (r.status_code, r.json()["data"]) for r in (client.get("/healthz"), client.get("/readyz"))
    ]


def test_a_projector_failing_on_every_pass_is_not_ready(
    plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory = plane.views.inventory

    def stuck(*_: Any) -> None:
        raise OverflowError("date value out of range")

    monkeypatch.setattr(health, "FAILING_S", 0.0)
    with TestClient(create_app(plane.settings, plane=plane)) as client:
        assert [status for status, _ in probes(client)] == [200, 200]
        with monkeypatch.context() as broken:
            broken.setattr(inventory, "flush", stuck)
            registration = VehicleRegistration(vehicle_id="v1")
            plane.writer.execute(register_vehicle(registration, Cause.of("test")))
            with pytest.raises(OverflowError):
                plane.projector.catch_up()
            for status, body in probes(client):
                assert status == 503
                assert body["status"] == "failing"
                assert "OverflowError: date value out of range" in body["failing"]
                assert body["projectionLag"] == 1  # far below the lag bound
        plane.projector.catch_up()  # it passes again: ready
        for status, body in probes(client):
            assert (status, body["status"], body["failing"]) == (200, "ready", None)


def test_a_failure_is_not_reported_before_it_lasts(
    plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One failed pass (a database blip) is not `failing`: FAILING_S must pass first."""
    monkeypatch.setattr(plane.views.inventory, "flush", lambda *_: 1 / 0)
    plane.writer.execute(register_vehicle(VehicleRegistration(vehicle_id="v1"), Cause.of("t")))
    with pytest.raises(ZeroDivisionError):
        plane.projector.catch_up()
    found = plane.projector.failing_for()
    assert found is not None and found[0] < health.FAILING_S
    assert "ZeroDivisionError" in found[1]
    with TestClient(create_app(plane.settings, plane=plane)) as client:
        status, body = probes(client)[0]
        assert (status, body["failing"]) == (200, None)
