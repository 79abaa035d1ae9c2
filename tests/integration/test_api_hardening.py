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
from tests.support.spine import memory_settings

HUGE = "9" * 5000  # beyond Python's 4,300-digit int() limit


class Api:
    def __init__(self, client: TestClient, op: dict[str, str], plane: ControlPlane) -> None:
        self.client, self.op, self.plane = client, op, plane

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, headers={**self.op, **kw.pop("headers", {})}, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.client.post(path, headers={**self.op, **kw.pop("headers", {})}, **kw)

    def patch(self, path: str, **kw: Any) -> Any:
        return self.client.patch(path, headers={**self.op, **kw.pop("headers", {})}, **kw)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    plane = ControlPlane.open(memory_settings(tmp_path))
    secret, command = issue_token(Role.OPERATOR, None, Cause.of("test"))
    plane.execute(command)
    try:
        with TestClient(create_app(plane.settings, plane=plane)) as client:
            found = Api(client, {"Authorization": f"Bearer {secret}"}, plane)
            assert found.post("/vehicles", json={"vehicleId": "v1"}).status_code == 201
            yield found
    finally:
        plane.close()


def invalid(response: Any, path: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["details"] == {"path": path}


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
