"""The real app in process (Starlette's TestClient) over a memory store, with an
operator token and one registered vehicle `v1`: for tests of what the API answers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from muto.cloud.api.app import create_app
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause
from muto.cloud.tokens import Role, issue_token
from tests.support.spine import memory_settings


class Api:
    def __init__(self, client: TestClient, op: dict[str, str], plane: ControlPlane) -> None:
        self.client, self.op, self.plane = client, op, plane

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, headers={**self.op, **kw.pop("headers", {})}, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.client.post(path, headers={**self.op, **kw.pop("headers", {})}, **kw)

    def patch(self, path: str, **kw: Any) -> Any:
        return self.client.patch(path, headers={**self.op, **kw.pop("headers", {})}, **kw)


@contextmanager
def operator_api(tmp_path: Path) -> Iterator[Api]:
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
    """A 422 `invalid` whose details name `path`."""
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["details"] == {"path": path}
