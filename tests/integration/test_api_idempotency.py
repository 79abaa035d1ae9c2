"""Idempotency-Key through the real server process (`muto cloud serve`), on SQLite and
PostgreSQL (docs/api.md, *Idempotent writes*): a resend gets the first answer and
nothing is written twice; the key with another body is refused and writes nothing;
concurrent requests with one key write once, on one server and on two servers of one
PostgreSQL database; keys survive a restart. The rule itself: tests/unit/test_idempotency.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.api_server import (
    BACKENDS,
    ApiServer,
    database,
    error_of,
    running,
    unique,
    vehicle_body,
)
from tests.support.releases import release_envelope

KEY = "Idempotency-Key"


@dataclass
class Fleet:
    server: ApiServer
    op: httpx.Client

    def vehicle(self) -> str:
        vehicle_id = unique("veh")
        response = self.op.post("/vehicles", json=vehicle_body(vehicle_id))
        assert response.status_code == 201, response.text
        return vehicle_id

    def sequence(self, vehicle_id: str) -> int:
        """The vehicle's latest desired-state sequence: one per revision assigned to it."""
        found = self.op.get("/desired-states/latest", params={"vehicleId": vehicle_id})
        assert found.status_code == 200, found.text
        sequence: int = found.json()["metadata"]["sequence"]
        return sequence

    def events(self, **query: str) -> list[str]:
        found = self.op.get("/audit", params={"limit": 1000, **query})
        assert found.status_code == 200, found.text
        return [e["eventType"] for e in found.json()["data"]]


def prepared(server: ApiServer, op: httpx.Client) -> Fleet:
    fleet = Fleet(server, op)
    assert op.post("/releases", json=release_envelope("core")).status_code in (200, 201)
    return fleet


def assignment(vehicle_id: str, **more: Any) -> dict[str, Any]:
    return {
        "target": {"type": "vehicle", "vehicleId": vehicle_id},
        "stack": {"name": "core", "version": "1.0.0"},
        **more,
    }


def keyed(key: str) -> dict[str, str]:
    return {KEY: key}


@pytest.fixture(scope="module", params=BACKENDS)
def fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    data_dir = tmp_path_factory.mktemp(f"idem-{request.param}")
    with (
        running(request.param, data_dir, "operator") as (server, tokens),
        server.client(tokens["operator"][0]) as op,
    ):
        yield prepared(server, op)


def test_a_resent_assignment_gets_the_first_answer_and_one_revision_is_stored(
    fleet: Fleet,
) -> None:
    vehicle_id, key = fleet.vehicle(), str(uuid.uuid4())
    first = fleet.op.post("/desired-states", json=assignment(vehicle_id), headers=keyed(key))
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    # The same request, written otherwise (key order, spacing), and with another
    # correlation header: the same request all the same.
    body = (
        '{ "stack": {"version": "1.0.0", "name": "core"},'
        '  "target": {"vehicleId": "%s", "type": "vehicle"}}'
    )
    again = fleet.op.post(
        "/desired-states",
        content=body % vehicle_id,
        headers={**keyed(key), "X-Correlation-Id": "another"},
    )
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["data"] == first.json()["data"]  # revision, correlation, sequences
    assert again.json()["metadata"]["position"] >= first.json()["metadata"]["position"]
    assert fleet.sequence(vehicle_id) == 1
    assert fleet.events(vehicleId=vehicle_id).count("Vehicle.DesiredStateAssigned") == 1


def test_the_key_with_another_body_is_refused_and_writes_nothing(fleet: Fleet) -> None:
    vehicle_id, key = fleet.vehicle(), str(uuid.uuid4())
    first = fleet.op.post("/desired-states", json=assignment(vehicle_id), headers=keyed(key))
    assert first.status_code == 201, first.text
    other = assignment(vehicle_id, ttlSec=600)
    error = error_of(fleet.op.post("/desired-states", json=other, headers=keyed(key)), 422)
    assert error["code"] == "invalid"
    assert error["details"] == {"path": "header.Idempotency-Key"}
    assert key in error["message"]
    # ... nor may the key be taken to another write
    token = fleet.op.post("/tokens", json={"role": "operator"}, headers=keyed(key))
    assert error_of(token, 422)["details"] == {"path": "header.Idempotency-Key"}
    assert fleet.sequence(vehicle_id) == 1
    for bad in (b"has space", b"x" * 129, b"", b"caf\xe9", b"tab\tkey"):
        headers = {KEY.encode(): bad}
        refused = fleet.op.post("/desired-states", json=assignment(vehicle_id), headers=headers)
        assert error_of(refused, 422)["details"] == {"path": "header.Idempotency-Key"}, bad
    assert fleet.sequence(vehicle_id) == 1


def test_concurrent_requests_with_one_key_assign_once(fleet: Fleet) -> None:
    vehicle_id, key = fleet.vehicle(), str(uuid.uuid4())

    def post(_: int) -> httpx.Response:
        return fleet.op.post("/desired-states", json=assignment(vehicle_id), headers=keyed(key))

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(post, range(8)))
    assert [a.status_code for a in answers] == [201] * 8, [a.text for a in answers]
    assert len({str(a.json()["data"]) for a in answers}) == 1
    assert sum("idempotent-replayed" not in a.headers for a in answers) == 1
    assert fleet.sequence(vehicle_id) == 1


def test_a_resent_token_request_issues_nothing_and_names_the_token(fleet: Fleet) -> None:
    key, correlation = str(uuid.uuid4()), unique("corr")
    headers = {**keyed(key), "X-Correlation-Id": correlation}
    first = fleet.op.post("/tokens", json={"role": "operator"}, headers=headers)
    assert first.status_code == 201, first.text
    issued = first.json()["data"]
    again = fleet.op.post("/tokens", json={"role": "operator"}, headers=headers)
    error = error_of(again, 409)
    assert error["code"] == "conflict"
    assert error["details"] == {"path": "header.Idempotency-Key", "tokenId": issued["tokenId"]}
    assert issued["token"] not in again.text  # the secret is shown once
    assert fleet.events(correlationId=correlation) == ["AccessToken.Issued", "IdempotencyKey.Used"]
    # the token issued works; its secret is nowhere in the log's answers
    with fleet.server.client(issued["token"]) as holder:
        assert holder.get("/rollouts").status_code == 200
    audit = fleet.op.get("/audit", params={"correlationId": correlation}).text
    assert issued["token"] not in audit


def test_a_resent_rollout_answers_the_rollout_it_started(fleet: Fleet) -> None:
    ring = unique("ring")
    vehicle_id = fleet.vehicle()
    patched = fleet.op.patch(f"/vehicles/{vehicle_id}", json={"labels": {"ring": ring}})
    assert patched.status_code == 200, patched.text
    body = {"selector": f"ring={ring}", "stack": "core", "version": "1.0.0"}
    key = str(uuid.uuid4())
    first = fleet.op.post("/rollouts", json=body, headers=keyed(key))
    assert first.status_code == 201, first.text
    again = fleet.op.post("/rollouts", json=body, headers=keyed(key))
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["data"]["rolloutId"] == first.json()["data"]["rolloutId"]
    # without the key, the same body is a second rollout over busy vehicles: refused
    assert fleet.op.post("/rollouts", json=body).status_code == 409
    assert fleet.sequence(vehicle_id) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_keys_survive_a_restart_of_the_control_plane(backend: str, tmp_path: Path) -> None:
    with database(backend) as url:
        server = ApiServer(tmp_path, url)
        secret = server.issue("operator")["operator"][0]
        server.start()
        try:
            with server.client(secret) as op:
                fleet = prepared(server, op)
                vehicle_id, key = fleet.vehicle(), str(uuid.uuid4())
                first = op.post("/desired-states", json=assignment(vehicle_id), headers=keyed(key))
                assert first.status_code == 201, first.text
            assert server.stop() == 0
            server.start()
            with server.client(secret) as op:
                again = op.post("/desired-states", json=assignment(vehicle_id), headers=keyed(key))
                assert again.status_code == 201, again.text
                assert again.headers["idempotent-replayed"] == "true"
                assert again.json()["data"] == first.json()["data"]
                other = op.post("/desired-states", json=assignment(vehicle_id, ttlSec=60),
                                headers=keyed(key))  # fmt: skip
                assert error_of(other, 422)["details"] == {"path": "header.Idempotency-Key"}
                assert Fleet(server, op).sequence(vehicle_id) == 1
        finally:
            assert server.stop() == 0, server.tail()
            assert server.tracebacks() == []


@pytest.mark.postgres
def test_one_key_sent_to_two_servers_of_one_database_assigns_once(
    postgres_url: str, tmp_path: Path
) -> None:
    """Two `muto cloud serve` processes on one PostgreSQL database, as behind haproxy:
    the requests with one key, sent to both at once, store one revision, and every one
    is answered with it."""
    first = ApiServer(tmp_path / "a", postgres_url, name="a")
    second = ApiServer(tmp_path / "b", postgres_url, name="b")
    secret = first.issue("operator")["operator"][0]
    servers = (first, second)
    try:
        for server in servers:
            server.start()
        with first.client(secret) as op_a, second.client(secret) as op_b:
            fleet = prepared(first, op_a)
            vehicles = [fleet.vehicle() for _ in range(3)]
            for vehicle_id in vehicles:
                key = str(uuid.uuid4())

                def post(i: int, vehicle_id: str = vehicle_id, key: str = key) -> httpx.Response:
                    client = (op_a, op_b)[i % 2]
                    return client.post(
                        "/desired-states", json=assignment(vehicle_id), headers=keyed(key)
                    )

                with ThreadPoolExecutor(max_workers=8) as pool:
                    answers = list(pool.map(post, range(8)))
                assert [a.status_code for a in answers] == [201] * 8, [a.text for a in answers]
                assert len({str(a.json()["data"]) for a in answers}) == 1
                assert sum("idempotent-replayed" not in a.headers for a in answers) == 1
                assert Fleet(second, op_b).sequence(vehicle_id) == 1
                assert Fleet(first, op_a).sequence(vehicle_id) == 1
    finally:
        for server in servers:
            assert server.stop() == 0, server.tail()
            assert server.tracebacks() == []
