"""A valid RFC 3339 `observedAt` whose UTC value leaves Python's datetime range, and a
rollout deadline no date can hold, were stored (200/201) and stopped the views; the
health report answered 500. Now each is a 422 naming the field, or dropped from MQTT
with the reason, and nothing is stored; the server goes on answering."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from muto.cloud.mqtt.listener import Listener
from muto.domain.messages import Leaf, vehicle_topic
from tests.support.api_server import health_body, reconcile_body
from tests.support.inprocess_api import Api, invalid, operator_api

BEYOND = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-14:00"]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with operator_api(tmp_path) as found:
        yield found


def reconcile(observed_at: str) -> dict[str, Any]:
    return {**reconcile_body("v1", "r-x"), "observedAt": observed_at}


def health(observed_at: str) -> dict[str, Any]:
    return {**health_body("v1", "h-x"), "observedAt": observed_at}


def still_writes(api: Api) -> None:
    """The views are not stopped: a write after it is answered and read back."""
    assert api.post("/vehicles", json={"vehicleId": "after"}).status_code == 201


@pytest.mark.parametrize("at", BEYOND)
@pytest.mark.parametrize(
    ("url", "body"), [("/reports/reconcile", reconcile), ("/reports/health", health)]
)
def test_an_out_of_range_observed_at_is_422_over_http(
    api: Api, url: str, body: Any, at: str
) -> None:
    before = api.plane.log.position()
    invalid(api.post(url, json=body(at)), "$.observedAt")
    assert api.plane.log.position() == before
    still_writes(api)


@pytest.mark.parametrize("at", BEYOND)
@pytest.mark.parametrize(
    ("leaf", "body"), [(Leaf.REPORTS_RECONCILE, reconcile), (Leaf.REPORTS_HEALTH, health)]
)
def test_an_out_of_range_observed_at_is_dropped_from_mqtt(
    api: Api, leaf: Leaf, body: Any, at: str, caplog: pytest.LogCaptureFixture
) -> None:
    listener = Listener(api.plane)
    before = api.plane.log.position()
    topic = vehicle_topic(api.plane.settings.tenant, "v1", leaf)
    with caplog.at_level("WARNING", logger="muto.mqtt"):
        asyncio.run(listener.handle(topic, msgspec.json.encode(body(at))))
    assert (listener.stored, listener.dropped) == (0, 1)
    assert api.plane.log.position() == before
    assert "observedAt" in caplog.text and "out of range" in caplog.text
    still_writes(api)


@pytest.mark.parametrize("name", ["canaryDeadlineSec", "waveDeadlineSec", "bakeSec"])
@pytest.mark.parametrize("value", [1e300, 2.5e11])
def test_a_rollout_deadline_no_date_can_hold_is_422(api: Api, name: str, value: float) -> None:
    before = api.plane.log.position()
    body = {
        "selector": "model=m3",
        "stack": "core",
        "version": "1.0.0",
        "thresholds": {name: value},
    }
    invalid(api.post("/rollouts", json=body), f"$.thresholds.{name}")
    assert api.plane.log.position() == before
    still_writes(api)
