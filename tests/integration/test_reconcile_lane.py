"""The fast lane takes a known vehicle's reconcile report (muto.cloud.api.fast): stored
through the same write path as the app's handler, answered only once the views show it
(read-your-writes), with the app's answer; a failed write answered as the app answers
it; everything it does not take handed on to the app with its body as it came."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from muto.cloud.api.fast import FastLane
from tests.support.api_server import reconcile_body, unique
from tests.support.fast_lane import Behind, Fleet, call, fleet, headers
from tests.support.waits import eventually

__all__ = ["fleet"]  # the fixture, shared with the lane's other tests


def reconcile(fleet: Fleet, body: dict[str, Any], **extra: str) -> dict[str, Any]:
    data = json.dumps(body).encode()
    sent = headers(fleet, {"Content-Type": "application/json", **extra}, data)
    return {"path": "/reports/reconcile", "method": "POST", "body": data, "headers": sent}


def answer(sent: list[Any]) -> tuple[int, dict[str, Any]]:
    found: dict[str, Any] = json.loads(sent[1]["body"])
    return sent[0]["status"], found


def test_a_known_vehicles_report_is_stored_and_in_the_views_when_answered(fleet: Fleet) -> None:
    behind = Behind()
    lane = FastLane(behind)
    body = reconcile_body("v1", unique("r"), running=("core", "1.0.0"))
    status, found = answer(call(lane, fleet.plane, reconcile(fleet, body)))
    assert behind.bodies == []  # the lane answered
    assert status == 200 and found["data"] == {"reportId": body["reportId"], "recorded": True}
    position = found["metadata"]["position"]
    assert found["metadata"]["duplicate"] is False
    assert position == fleet.plane.log.position()
    assert fleet.plane.projector.position() >= position  # read-your-writes
    # the app answers the same report (a re-delivery) with the same shape
    app = fleet.client.post("/reports/reconcile", json=body, headers=fleet.vehicle).json()
    again = answer(call(lane, fleet.plane, reconcile(fleet, body)))[1]
    assert again["data"] == app["data"] == {"reportId": body["reportId"], "recorded": False}
    assert again["metadata"]["duplicate"] is app["metadata"]["duplicate"] is True


def test_a_failed_write_is_answered_as_the_app_answers_it(fleet: Fleet) -> None:
    lane = FastLane(Behind())
    body = reconcile_body("ghost", unique("r"))  # an operator may report; ghost is unknown
    sent = call(lane, fleet.plane, reconcile(fleet, body, Authorization=fleet.op["Authorization"]))
    app = fleet.client.post("/reports/reconcile", json=body, headers=fleet.op)
    status, found = answer(sent)
    assert status == app.status_code == 404
    assert found["error"] == app.json()["error"]


@pytest.mark.parametrize(
    ("body", "extra"),
    [
        (reconcile_body("v2", "r-other"), {}),  # another vehicle's report: the app's 403
        (reconcile_body("v1", "r-stranger"), {"Authorization": "Bearer muto_x_y"}),  # unknown
        ({"vehicleId": "v1", "reportId": "r-bad"}, {}),  # does not decode: the app's 422
    ],
)
def test_what_the_lane_does_not_take_reaches_the_app_whole(
    fleet: Fleet, body: dict[str, Any], extra: dict[str, str]
) -> None:
    behind = Behind()
    request = reconcile(fleet, body, **extra)
    data = request["body"]
    before = fleet.plane.log.position()
    assert call(FastLane(behind), fleet.plane, request)[0]["status"] == 599
    assert behind.bodies == [data]
    assert fleet.plane.log.position() == before  # nothing stored


def test_an_oversized_report_is_not_read(fleet: Fleet) -> None:
    behind = Behind()
    request = reconcile(fleet, reconcile_body("v1", unique("r")))
    data = request["body"]
    request["headers"] = [
        (k, b"99999999" if k == b"content-length" else v) for k, v in request["headers"]
    ]
    assert call(FastLane(behind), fleet.plane, request)[0]["status"] == 599
    assert behind.bodies == [data]  # the app reads it and refuses it (413)


def test_the_lane_keeps_the_rate_limit_and_is_logged_and_counted(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    lane = FastLane(Behind())
    statuses = [
        call(lane, fleet.plane, reconcile(fleet, reconcile_body("v1", unique("r"))))[0]["status"]
        for _ in range(70)
    ]
    assert statuses[0] == 200 and 429 in statuses  # burst 50, 5/s
    with caplog.at_level(logging.INFO, logger="muto.access"):
        body = reconcile_body("v1", unique("r"))
        found = fleet.client.post("/reports/reconcile", json=body, headers=fleet.op)
        assert found.status_code == 200
        scrape = fleet.client.get("/metrics", headers=fleet.op).text
        line = '"path":"/reports/reconcile","status":200'
        eventually(lambda: line in caplog.text, "the access log's line")  # LOG_EVERY_S
    assert 'route="/reports/reconcile",status="200"' in scrape
