"""A control plane and one vehicle for driving the fast lane (muto.cloud.api.fast)
directly with ASGI messages: the lane's tests for polls, health and reconcile reports."""

from __future__ import annotations

import asyncio
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
