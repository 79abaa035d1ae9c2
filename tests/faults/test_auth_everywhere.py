"""Scenario 13, HTTP: every operation of spec/api.yaml (but /healthz and /openapi.yaml,
which declare no security) on the real server: without a token 401; with a revoked
token 401; with a vehicle token, what the operation's `x-muto-access` says: 403
`forbidden` for operator-only operations (even with the token of the vehicle the request
names) and for another vehicle's token on `own-vehicle` operations, and neither 401 nor
403 where the spec admits the token. A token revoked over the API is refused at once by
the process that revoked it and, on PostgreSQL with two API processes, by the other
(the 5 s promise itself: tests/integration/test_revocation_reach.py, without a stopwatch).
(MQTT: test_mqtt_subtrees.py.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from muto.cloud.api.app import SPEC
from tests.faults.runs import cases
from tests.support.api_server import (
    ApiServer,
    database,
    health_body,
    reconcile_body,
    vehicle_body,
)
from tests.support.waits import eventually

PATH_VALUES = {"vehicle_id": "veh-a", "rollout_id": "ro-none", "token_id": "tok-none",
               "stack": "core", "version": "1.0.0", "digest": "sha256:" + "0" * 64}  # fmt: skip
BODIES: dict[str, Any] = {
    "/reports/reconcile": reconcile_body("veh-a", "rep-auth"),
    "/reports/health": health_body("veh-a", "health-auth"),
}
# Far below the token cache's 60 s: a refusal within it comes from the revocation
# reaching the process, not from the cached token expiring. Only a bound on a hang.
HEARD_S = 30.0


ACCESS = {"operator", "own-vehicle", "any-token"}


def secured() -> list[tuple[str, str, str]]:
    """(method, concrete path, x-muto-access) of every operation that needs a token."""
    spec = yaml.safe_load(SPEC.read_text())
    found = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and operation.get("security") != []:
                access = operation.get("x-muto-access")
                assert access in ACCESS, f"{method} {path}: x-muto-access is {access!r}"
                concrete = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)
                found.append((method.upper(), concrete, access))
    return found


def ask(http: httpx.Client, method: str, path: str) -> httpx.Response:
    if path == "/desired-states/latest":
        path += "?vehicleId=veh-a"
    return http.request(method, path, json=BODIES.get(path, {}))


@contextmanager
def deployment(backend: str, tmp: Path) -> Iterator[tuple[list[ApiServer], dict[str, str]]]:
    """Started servers (two on PostgreSQL) and tokens: operator, veh-a, veh-b."""
    with database(backend) as url:
        first = ApiServer(tmp / "data", url)
        issued = first.issue("operator", "veh-b")
        group = [first] + ([ApiServer(tmp / "data", url)] if url else [])
        for server in group:
            server.start()
        try:
            operator = issued["operator"][0]
            with first.client(operator) as http:
                assert http.post("/vehicles", json=vehicle_body("veh-a")).status_code == 201
                assert http.post("/vehicles", json=vehicle_body("veh-b")).status_code == 201
                tokens = {"operator": operator, "veh-b": issued["veh-b"][0]}
                body = {"role": "vehicle", "vehicleId": "veh-a"}
                tokens["veh-a"] = http.post("/tokens", json=body).json()["data"]["token"]
            yield group, tokens
        finally:
            for server in group:
                assert server.stop() == 0, server.tail()
                assert server.tracebacks() == []


def revoke(server: ApiServer, operator: str, used_on: list[ApiServer]) -> str:
    """A new veh-a token, used once on `used_on` (so cached there as good), then revoked
    over the API on `server`, which refuses it at once."""
    with server.client(operator) as http:
        issued = http.post("/tokens", json={"role": "vehicle", "vehicleId": "veh-a"}).json()
        secret, token_id = issued["data"]["token"], issued["data"]["tokenId"]
        for other in used_on:
            with other.client(secret) as vehicle:
                assert vehicle.get("/vehicles/veh-a").status_code == 200
        assert http.post(f"/tokens/{token_id}/revoke").status_code == 200
    with server.client(secret) as vehicle:  # the very next request
        assert vehicle.get("/vehicles/veh-a").status_code == 401
    return secret


def refused(server: ApiServer, secret: str) -> None:
    with server.client(secret) as vehicle:
        eventually(
            lambda: vehicle.get("/vehicles/veh-a").status_code == 401,
            f"{server.url} to refuse the revoked token",
            HEARD_S,
            interval=0.05,
        )


def assert_forbidden(answer: httpx.Response, method: str, path: str) -> None:
    assert answer.status_code == 403, (method, path, answer.text)
    assert answer.json()["error"]["code"] == "forbidden", (method, path, answer.text)


def assert_admitted(answer: httpx.Response, method: str, path: str) -> None:
    """Past authorization: whatever the operation answers next (200, 404, 422...)."""
    assert answer.status_code not in (401, 403), (method, path, answer.text)


@pytest.mark.parametrize("backend", cases(["sqlite"], ["postgres"]))
def test_every_operation_refuses_missing_foreign_and_revoked_tokens(
    backend: str, tmp_path: Path
) -> None:
    with deployment(backend, tmp_path) as (group, tokens):
        tokens["revoked"] = revoke(group[0], tokens["operator"], group)
        for server in group[1:]:  # cached there as good until it hears the revocation
            refused(server, tokens["revoked"])
        checked = 0
        for server in group:
            for method, path, access in secured():
                with server.client() as anonymous:
                    answer = ask(anonymous, method, path)
                    assert answer.status_code == 401, (method, path, answer.text)
                    assert answer.headers["www-authenticate"] == "Bearer"
                with server.client(tokens["veh-a"]) as own:  # the vehicle the request names
                    answer = ask(own, method, path)
                    if access == "operator":
                        assert_forbidden(answer, method, path)
                    else:
                        assert_admitted(answer, method, path)
                with server.client(tokens["veh-b"]) as other:
                    answer = ask(other, method, path)
                    if access == "any-token":
                        assert_admitted(answer, method, path)
                    else:
                        assert_forbidden(answer, method, path)
                with server.client(tokens["revoked"]) as revoked:
                    answer = ask(revoked, method, path)
                    assert answer.status_code == 401, (method, path, answer.text)
                checked += 4
        with group[0].client(tokens["veh-a"]) as own:  # the checks did not lock veh-a out
            assert ask(own, "GET", "/vehicles/veh-a").status_code == 200
    tokens_tried = "no token, own vehicle's, another vehicle's, revoked"
    print(f"\nscenario 13 HTTP ({backend}, {len(group)} API processes): {len(secured())} "
          f"operations x ({tokens_tried}): {checked} checks")  # fmt: skip
