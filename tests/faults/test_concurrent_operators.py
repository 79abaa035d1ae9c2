"""Scenario 11: 50 operators at once change the same vehicle or the same rollout, through
the real server: on SQLite one process, on PostgreSQL two processes on one database
(the scale-out path), the operators split between them.

Vehicle: all 50 PATCH with the same If-Match: exactly one wins (200, the next version),
49 get 409 naming both versions; the winner's change is the one stored, once.
Rollout: 50 start overlapping rollouts (one 201, 49 409); 50 pause and resume at once
(every answer 200, the log alternates Paused/Resumed, the view shows the last); 50 roll
it back at once (one rollback: each vehicle gets one rollback revision). Never a 5xx.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.cloud import audit
from tests.faults.runs import backend_runs
from tests.support.api_server import ApiServer, database, unique, vehicle_body
from tests.support.releases import release_envelope
from tests.support.reported_fleet import ReportedFleet

OPERATORS = 50


@contextmanager
def servers(backend: str, tmp: Path) -> Iterator[tuple[list[ApiServer], str]]:
    with database(backend) as url:
        first = ApiServer(tmp / "data", url)
        secret = first.issue("operator")["operator"][0]
        group = [first] + ([ApiServer(tmp / "data", url)] if url else [])
        for server in group:
            server.start()
        try:
            yield group, secret
        finally:
            for server in group:
                assert server.stop() == 0, server.tail()
                assert server.tracebacks() == []


def at_once(
    group: list[ApiServer], secret: str, call: Callable[[httpx.Client, int], Any]
) -> list[httpx.Response]:
    """OPERATORS threads, released together, each with its own connection."""
    start = threading.Barrier(OPERATORS)
    answers: list[httpx.Response] = [httpx.Response(0)] * OPERATORS

    def operator(n: int) -> None:
        with group[n % len(group)].client(secret) as http:
            start.wait()
            answers[n] = call(http, n)

    threads = [threading.Thread(target=operator, args=(n,)) for n in range(OPERATORS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    statuses = Counter(a.status_code for a in answers)
    assert all(s < 500 for s in statuses), statuses
    return answers


# SQLite: 50 writers on one file (the busy lock); PostgreSQL runs the next two here.
@pytest.mark.parametrize(("backend", "count"), backend_runs("sqlite", 2, 20))
def test_fifty_operators_patch_one_vehicle(backend: str, count: int, tmp_path: Path) -> None:
    with servers(backend, tmp_path) as (group, secret), group[0].client(secret) as http:
        vehicle_id = unique("contested")
        version = http.post("/vehicles", json=vehicle_body(vehicle_id)).json()["data"]["version"]
        for _ in range(count):
            answers = at_once(group, secret, lambda c, n, v=version: c.patch(
                f"/vehicles/{vehicle_id}", json={"labels": {"owner": f"op-{n}"}},
                headers={"If-Match": f'"{v}"'}))  # fmt: skip
            statuses = Counter(a.status_code for a in answers)
            assert statuses == {200: 1, 409: OPERATORS - 1}, statuses
            (winner,) = [n for n, a in enumerate(answers) if a.status_code == 200]
            for lost in (a for a in answers if a.status_code == 409):
                details = lost.json()["error"]["details"]
                assert details == {"expectedVersion": version, "actualVersion": version + 1}
            stored = http.get(f"/vehicles/{vehicle_id}").json()["data"]
            assert (stored["labels"]["owner"], stored["version"]) == (f"op-{winner}", version + 1)
            version += 1
        updates = [e for e in audit(http) if e["vehicleId"] == vehicle_id
                   and e["eventType"] != "Vehicle.Registered"]  # fmt: skip
        assert len(updates) == count  # one per round: nothing lost, nothing twice
    print(f"\nscenario 11 vehicle ({backend}, {len(group)} API processes): {count} rounds, "
          f"{OPERATORS} PATCHes, one If-Match: one 200, {OPERATORS - 1} 409 each")  # fmt: skip


def action(rollout_id: str, *actions: str) -> Callable[[httpx.Client, int], httpx.Response]:
    """Operator n posts actions[n % len(actions)] on the rollout."""
    return lambda c, n: c.post(f"/rollouts/{rollout_id}/{actions[n % len(actions)]}")


# PostgreSQL: two processes (the rollout-start lock across them).
@pytest.mark.parametrize(("backend", "count"), backend_runs("postgres", 1, 10))
def test_fifty_operators_on_one_rollout(backend: str, count: int, tmp_path: Path) -> None:
    with servers(backend, tmp_path) as (group, secret), group[0].client(secret) as http:
        for _ in range(count):
            fleet = ReportedFleet(http)
            body = {"selector": f"group={fleet.group}", "stack": fleet.stack, "version": "2.0.0"}
            started = at_once(group, secret, lambda c, n, b=body: c.post("/rollouts", json=b))
            assert Counter(a.status_code for a in started) == {201: 1, 409: OPERATORS - 1}
            (rollout,) = [a.json()["data"] for a in started if a.status_code == 201]
            rollout_id = rollout["rolloutId"]
            toggled = at_once(group, secret, action(rollout_id, "pause", "resume"))
            assert {a.status_code for a in toggled} == {200}
            events = [e["eventType"].rsplit(".", 1)[-1] for e in audit(http)
                      if e["rolloutId"] == rollout_id]  # fmt: skip
            events = [e for e in events if e in ("Paused", "Resumed")]
            assert all(a != b for a, b in itertools.pairwise(events)), events
            assert events[0] == "Paused" or not events
            paused = fleet.get(rollout_id)["paused"]
            assert paused == (bool(events) and events[-1] == "Paused")
            rolled = at_once(group, secret, action(rollout_id, "rollback"))
            assert sum(a.status_code == 200 for a in rolled) >= 1
            assigned = Counter(
                e["vehicleId"] for e in audit(http)
                if e["eventType"] == "Vehicle.DesiredStateAssigned" and e["rolloutId"] == rollout_id
            )  # fmt: skip
            canaries = [m["vehicleId"] for m in rollout["vehicles"] if m["phase"] == "canary"]
            assert assigned == dict.fromkeys(canaries, 2)  # the canary's, one rollback's
    print(f"\nscenario 11 rollout ({backend}, {len(group)} API processes): {count} rollouts, "
          f"{OPERATORS} operators each starting, pausing/resuming and rolling back")  # fmt: skip


# PostgreSQL: two processes allocating one vehicle's sequence.
@pytest.mark.parametrize(("backend", "count"), backend_runs("postgres", 1, 10))
def test_fifty_operators_assign_one_vehicle(backend: str, count: int, tmp_path: Path) -> None:
    """Assignments are not conditional: each gets its own next sequence. One process
    serializes them; across two, a write that kept losing the optimistic race after the
    writer's retries is a 409 (the operator retries), never a 5xx, never a lost one."""
    with servers(backend, tmp_path) as (group, secret), group[0].client(secret) as http:
        vehicle_id, stack = unique("assigned"), unique("stack")
        registered = http.post("/vehicles", json=vehicle_body(vehicle_id, name=vehicle_id))
        assert registered.status_code == 201
        assert http.post("/releases", json=release_envelope(stack)).status_code == 201
        body = {"target": {"selector": f"name={vehicle_id}"},
                "stack": {"name": stack, "version": "1.0.0"}}  # fmt: skip
        won: list[str] = []
        conflicts = 0
        for _ in range(count):
            answers = at_once(group, secret, lambda c, n: c.post("/desired-states", json=body))
            assert {a.status_code for a in answers} <= ({201, 409} if len(group) > 1 else {201})
            won += [a.json()["data"]["desiredStateRevision"] for a in answers
                    if a.status_code == 201]  # fmt: skip
            conflicts += sum(a.status_code == 409 for a in answers)
        stored = [(e["data"]["sequence"], e["data"]["assignment"]["revision"]) for e in audit(http)
                  if e["eventType"] == "Vehicle.DesiredStateAssigned"]  # fmt: skip
        assert [s for s, _ in stored] == list(range(1, len(won) + 1))
        assert sorted(r for _, r in stored) == sorted(won)  # every acknowledged one, once
    print(f"\nscenario 11 assignments ({backend}, {len(group)} API processes): "
          f"{count * OPERATORS} at once: {len(won)} stored with sequences 1..{len(won)}, "
          f"{conflicts} answered 409")  # fmt: skip
