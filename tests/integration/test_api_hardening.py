"""Hardening from the outside review (#14), in process against the real app and a
memory store: every bad parameter is a 4xx naming what was wrong, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from muto.cloud.api.app import create_app
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause
from muto.cloud.tokens import Role, issue_token
from tests.support.inprocess_api import Api, invalid, operator_api
from tests.support.spine import memory_settings

HUGE = "9" * 5000  # beyond Python's 4,300-digit int() limit


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with operator_api(tmp_path) as found:
        yield found


# -- item 4: integers of any length -------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("/vehicles", "limit"),
        ("/rollouts", "limit"),
        ("/audit", "limit"),
        ("/audit", "after"),
    ],
)
@pytest.mark.parametrize("value", [HUGE, "1" + "0" * 20, "-" + HUGE, "١٢"])
def test_a_query_integer_of_any_length_is_422(api: Api, url: str, name: str, value: str) -> None:
    invalid(api.get(url, params={name: value}), f"query.{name}")


@pytest.mark.parametrize("value", [HUGE, f'"{HUGE}"', "1" * 19])
def test_an_if_match_of_any_length_is_422(api: Api, value: str) -> None:
    response = api.patch("/vehicles/v1", json={"labels": {"a": "b"}}, headers={"If-Match": value})
    invalid(response, "header.If-Match")


def test_a_content_length_of_any_length_is_refused_as_too_large(api: Api) -> None:
    response = api.post("/vehicles", content=b"{}", headers={"Content-Length": HUGE})
    assert response.status_code == 413, response.text


# -- items 13, 14: reasons and schema versions, over HTTP and MQTT --------------------------


def reconcile(**fields: Any) -> dict[str, Any]:
    return {
        "schema": "muto.reconcile-report.v1",
        "reportId": "r-1",
        "vehicleId": "v1",
        "status": "converged",
        "observedAt": "2026-01-01T00:00:00Z",
        **fields,
    }


BAD_REPORTS = [
    (reconcile(status="failed"), "$.reasonCodes"),
    (reconcile(status="rolled_back", reasonCodes=[]), "$.reasonCodes"),
    (reconcile(status="blocked"), "$.reasonCodes"),
    (reconcile(status="rejected"), "$.reasonCodes"),
    ({k: v for k, v in reconcile().items() if k != "schema"}, "$.schema"),
    (reconcile(schema="muto.reconcile-report.v2"), "$.schema"),
]


@pytest.mark.parametrize(("body", "path"), BAD_REPORTS)
def test_http_refuses_a_report_without_reason_or_schema(
    api: Api, body: dict[str, Any], path: str
) -> None:
    before = api.plane.log.position()
    invalid(api.post("/reports/reconcile", json=body), path)
    assert api.plane.log.position() == before


def test_http_refuses_a_health_report_without_schema(api: Api) -> None:
    body = {"reportId": "h-1", "vehicleId": "v1", "status": "healthy"}
    body["observedAt"] = "2026-01-01T00:00:00Z"
    invalid(api.post("/reports/health", json=body), "$.schema")


@pytest.mark.parametrize(("body", "path"), BAD_REPORTS)
def test_mqtt_refuses_a_report_without_reason_or_schema(
    api: Api, body: dict[str, Any], path: str, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    import msgspec

    from muto.cloud.mqtt.listener import Listener
    from muto.domain.messages import Leaf, vehicle_topic

    listener = Listener(api.plane)
    before = api.plane.log.position()
    topic = vehicle_topic(api.plane.settings.tenant, "v1", Leaf.REPORTS_RECONCILE)
    with caplog.at_level("WARNING", logger="muto.mqtt"):
        asyncio.run(listener.handle(topic, msgspec.json.encode(body)))
    assert (listener.stored, listener.dropped) == (0, 1)
    assert api.plane.log.position() == before
    assert path.removeprefix("$.") in caplog.text


# -- item 12: one size limit on every ingress path ---------------------------------------


def test_mqtt_refuses_a_report_over_the_http_body_limit(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    import msgspec

    from muto.cloud.mqtt.listener import Listener
    from muto.domain.messages import Leaf, vehicle_topic

    limit = api.plane.settings.max_body_bytes
    # A valid report, only big: 1.000...0 is the number 1.0 however many zeros follow.
    body = msgspec.json.encode(reconcile())
    big = body[:-1] + b', "timings": {"applySec": 1.' + b"0" * limit + b"}}"
    assert len(big) > limit
    assert api.post("/reports/reconcile", content=big).status_code == 413  # as over HTTP
    listener = Listener(api.plane)
    before = api.plane.log.position()
    topic = vehicle_topic(api.plane.settings.tenant, "v1", Leaf.REPORTS_RECONCILE)
    with caplog.at_level("WARNING", logger="muto.mqtt"):
        asyncio.run(listener.handle(topic, big))
    assert (listener.stored, listener.dropped) == (0, 1)
    assert api.plane.log.position() == before
    assert f"over the {limit}-byte limit" in caplog.text


# -- item 5: selectors are bounded ---------------------------------------------------------


def many_terms(n: int) -> str:
    return " AND ".join(f"k{i}=v" for i in range(n))


@pytest.mark.parametrize(
    ("selector", "limit"),
    [
        (many_terms(1000), "characters"),
        (many_terms(33), "terms"),
        ("k=" + "v" * 1100, "characters"),
    ],
)
def test_a_selector_over_its_bounds_is_400_naming_the_limit(
    api: Api, selector: str, limit: str
) -> None:
    for response in (
        api.get("/vehicles", params={"selector": selector}),
        api.post(
            "/desired-states",
            json={"target": {"selector": selector}, "stack": {"name": "c", "version": "1"}},
        ),
        api.post("/rollouts", json={"selector": selector, "stack": "c", "version": "1"}),
    ):
        assert response.status_code in (400, 422), response.text
        error = response.json()["error"]
        if response.status_code == 400:
            assert error["code"] == "bad_selector"
            assert limit in error["message"] and "at most" in error["message"]
            assert isinstance(error["details"]["limit"], int)
        else:  # a body's selector field is bounded by its schema too (maxLength)
            assert error["details"] == {"path": "$.target.selector"} or error["details"] == {
                "path": "$.selector"
            }


def test_a_selector_at_its_bounds_is_answered(api: Api) -> None:
    response = api.get("/vehicles", params={"selector": many_terms(32)})
    assert response.status_code == 200, response.text
    assert response.json()["metadata"]["total"] == 0


# -- item 8: per-token rate limits ----------------------------------------------------------


def test_a_vehicle_token_over_its_rate_gets_429_with_retry_after(tmp_path: Path) -> None:
    from dataclasses import replace

    settings = replace(memory_settings(tmp_path), vehicle_rate_per_s=0.5, vehicle_burst=3)
    plane = ControlPlane.open(settings)
    issued = {}
    for who in ("op", "v1", "v2"):
        role = Role.OPERATOR if who == "op" else Role.VEHICLE
        secret, command = issue_token(role, None if who == "op" else who, Cause.of("test"))
        plane.execute(command)
        issued[who] = {"Authorization": f"Bearer {secret}"}
    try:
        with TestClient(create_app(plane.settings, plane=plane)) as c:
            for vehicle in ("v1", "v2"):
                assert c.post("/vehicles", json={"vehicleId": vehicle}, headers=issued["op"])
            answers = [c.get("/vehicles/v1", headers=issued["v1"]) for _ in range(4)]
            assert [a.status_code for a in answers] == [200, 200, 200, 429]
            limited = answers[-1]
            assert limited.headers["retry-after"] == "2"
            error = limited.json()["error"]
            assert error["code"] == "rate_limited"
            assert error["details"] == {"limit": 0.5, "burst": 3}
            assert c.get("/vehicles/v2", headers=issued["v2"]).status_code == 200
            assert all(
                c.get("/vehicles/v1", headers=issued["op"]).status_code == 200 for _ in range(20)
            )
    finally:
        plane.close()
