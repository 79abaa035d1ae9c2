"""The fast lane (muto.cloud.api.fast) answers a poll with the current ETag and a health
report that changes nothing from memory, by the app's rules, and hands every other
request on to the app untouched (its body too)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from muto.cloud.api.fast import FastLane
from tests.support.api_server import health_body, unique
from tests.support.fast_lane import Behind, Fleet, call, fleet, headers
from tests.support.waits import eventually

__all__ = ["fleet"]  # the fixture


def poll(fleet: Fleet, etag: str) -> dict[str, Any]:
    return {
        "path": "/desired-states/latest",
        "method": "GET",
        "query_string": b"vehicleId=v1",
        "headers": headers(fleet, {"If-None-Match": etag}),
    }


def health(fleet: Fleet, status: str) -> dict[str, Any]:
    body = json.dumps(health_body("v1", unique("h"), status)).encode()
    return {"path": "/reports/health", "method": "POST", "body": body,
            "headers": headers(fleet, {"Content-Type": "application/json"}, body)}  # fmt: skip


def test_the_lane_answers_from_memory_and_hands_the_rest_on(fleet: Fleet) -> None:
    behind = Behind()
    lane = FastLane(behind)
    sent = call(lane, fleet.plane, poll(fleet, fleet.etag))
    assert sent[0]["status"] == 304 and (b"etag", fleet.etag.encode()) in sent[0]["headers"]
    assert call(lane, fleet.plane, poll(fleet, '"other"'))[0]["status"] == 599
    sent = call(lane, fleet.plane, health(fleet, "degraded"))
    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"])["data"]["transition"] is False
    changed = health(fleet, "healthy")
    body = changed["body"]
    assert call(lane, fleet.plane, changed)[0]["status"] == 599
    assert behind.bodies == [b"", body]  # handed on whole, as it came


def test_the_lane_keeps_the_rate_limit(fleet: Fleet) -> None:
    lane = FastLane(Behind())
    statuses = [call(lane, fleet.plane, poll(fleet, fleet.etag))[0]["status"] for _ in range(80)]
    assert statuses[0] == 304 and 429 in statuses  # burst 50, 5/s
    refused = call(lane, fleet.plane, poll(fleet, fleet.etag))
    assert refused[0]["status"] == 429
    assert json.loads(refused[1]["body"])["error"]["code"] == "rate_limited"


def test_what_the_lane_answers_is_logged_and_counted(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="muto.access"):
        answer = fleet.client.get(
            "/desired-states/latest",
            params={"vehicleId": "v1"},
            headers={**fleet.vehicle, "If-None-Match": fleet.etag},
        )
        assert answer.status_code == 304
        scrape = fleet.client.get("/metrics", headers=fleet.op).text
        line = '"path":"/desired-states/latest","status":304'
        eventually(lambda: line in caplog.text, "the access log's line")  # LOG_EVERY_S
    assert 'route="/desired-states/latest",status="304"' in scrape
