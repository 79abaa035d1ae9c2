"""POST /vehicles/{id}/refresh in a process without an MQTT bridge says why it has none:
an `--role api` process never runs one (docs/deploy.md), though no one passed --no-mqtt;
a process started with --no-mqtt says that."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from muto.cloud.api.app import create_app
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause
from muto.cloud.tokens import Role, issue_token
from tests.support.spine import memory_settings


@pytest.mark.parametrize(
    ("role", "mqtt_url", "said", "not_said"),
    [
        ("api", "mqtt://127.0.0.1:1883", "--role api", "--no-mqtt"),
        ("all", None, "--no-mqtt", "--role api"),
    ],
)
def test_refresh_without_a_bridge_says_why(
    tmp_path: Path, role: str, mqtt_url: str | None, said: str, not_said: str
) -> None:
    settings = replace(memory_settings(tmp_path), role=role, mqtt_url=mqtt_url)
    plane = ControlPlane.open(settings)
    secret, command = issue_token(Role.OPERATOR, None, Cause.of("test"))
    plane.execute(command)
    op = {"Authorization": f"Bearer {secret}"}
    try:
        with TestClient(create_app(settings, plane=plane)) as client:
            assert client.post("/vehicles", json={"vehicleId": "v1"}, headers=op).status_code == 201
            answer = client.post("/vehicles/v1/refresh", headers=op)
    finally:
        plane.close()
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["code"] == "unavailable"
    assert said in error["message"] and not_said not in error["message"]
    assert "cannot reach vehicles" in error["message"]
