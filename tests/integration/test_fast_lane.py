"""The fast lane (muto.cloud.api.fast) answers a poll with the current ETag and a health
report that changes nothing from memory, by the app's rules, and hands every other
request on to the app untouched (its body too)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from muto.cloud.api.app import create_app
from muto.cloud.api.fast import FastLane
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause
from muto.cloud.tokens import Role, issue_token
from tests.support.api_server import health_body, unique
from tests.support.releases import signed_release
from tests.support.spine import sqlite_settings


class Fleet:
    """A control plane with vehicle v1 (its own token), a desired state
    assigned, its ETag remembered and its health status known."""

    def __init__(self, tmp_path: Path) -> None:
        settings = sqlite_settings(tmp_path)
        self.plane = ControlPlane.open(settings)
        secret, command = issue_token(Role.OPERATOR, None, Cause.of("test"))
        self.plane.execute(command)
        self.op = {"Authorization": f"Bearer {secret}"}
        self.client = TestClient(create_app(settings, plane=self.plane))

    def prepare(self) -> None:
        c, op = self.client, self.op
        assert c.post("/vehicles", json={"vehicleId": "v1"}, headers=op).status_code == 201
        c.post("/releases", json=signed_release(version="1.0.0").body(), headers=op)
        assign = {
            "target": {"type": "vehicle", "selector": "v1"},
            "stack": {"name": "core", "version": "1.0.0"},
        }
        assert c.post("/desired-states", json=assign, headers=op).status_code == 201
        token = c.post("/tokens", json={"role": "vehicle", "vehicleId": "v1"}, headers=op)
        self.vehicle = {"Authorization": f"Bearer {token.json()['data']['token']}"}
        first = c.get("/desired-states/latest", params={"vehicleId": "v1"}, headers=self.vehicle)
        self.etag = first.headers["etag"]  # remembered now, and the token cached
        self.report("degraded")  # a transition: the next unchanged one is written once
        self.report("degraded")  # ... and remembered

    def report(self, status: str) -> dict[str, Any]:
        body = health_body("v1", unique("h"), status)
        answer = self.client.post("/reports/health", json=body, headers=self.vehicle)
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found


class Behind:
    """The app behind the lane: records what reached it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def call(lane: FastLane, plane: ControlPlane, request: dict[str, Any]) -> list[Any]:
    """One request through the lane alone, its body in two chunks."""
    body: bytes = request.pop("body", b"")
    chunks = [body[: len(body) // 2], body[len(body) // 2 :]]
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i == 0}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "query_string": b"", "state": {"plane": plane}, **request}
    asyncio.run(lane(scope, receive, send))
    return sent


def headers(fleet: Fleet, extra: dict[str, str], body: bytes = b"") -> list[tuple[bytes, bytes]]:
    found = {**fleet.vehicle, **extra, "content-length": str(len(body))}
    return [(k.lower().encode(), v.encode()) for k, v in found.items()]


@pytest.fixture
def fleet(tmp_path: Path) -> Any:
    found = Fleet(tmp_path)
    with found.client:
        found.prepare()
        yield found
    found.plane.close()


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
        scrape = fleet.client.get("/metrics", headers=fleet.op).text  # the line is out now
    assert '"path":"/desired-states/latest","status":304' in caplog.text
    assert 'route="/desired-states/latest",status="304"' in scrape
