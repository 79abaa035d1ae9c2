"""Rollouts through the real server (its in-process controller moves them), on SQLite
and PostgreSQL: canaries, the canary gate, the wave, pause/resume, fleet rollback to
each vehicle's previous release, and the 409 on overlapping rollouts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.api_server import (
    BACKENDS,
    error_of,
    running,
)
from tests.support.reported_fleet import ReportedFleet, ok


@pytest.fixture(scope="module", params=BACKENDS)
def op(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    with (
        running(request.param, tmp_path_factory.mktemp(request.param), "operator") as (
            server,
            tokens,
        ),
        server.client(tokens["operator"][0]) as client,
    ):
        yield client


def phases(rollout: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    for m in rollout["vehicles"]:
        found.setdefault(m["phase"], []).append((m["vehicleId"].rsplit("-", 2)[-2], m["status"]))
    return found


def test_canaries_then_the_wave_then_completed(op: httpx.Client) -> None:
    fleet = ReportedFleet(op)
    rollout = fleet.start("2.0.0")
    rollout_id = rollout["rolloutId"]
    assert rollout["state"] == "canary" and rollout["paused"] is False
    # one canary per region-model, assigned at once; the wave waits
    assert phases(rollout) == {
        "canary": [("eu", "assigned"), ("us", "assigned")],
        "wave": [("eu", "pending"), ("us", "pending")],
    }
    assert rollout["phases"]["canary"]["targeted"] == 2
    canaries = [m["vehicleId"] for m in rollout["vehicles"] if m["phase"] == "canary"]
    assert [fleet.running_version(v) for v in canaries] == ["2.0.0", "2.0.0"]

    overlapping = op.post(
        "/rollouts",
        json={
            "selector": f"group={fleet.group} AND region=eu",
            "stack": fleet.stack,
            "version": "3.0.0",
        },
    )
    assert {d["rolloutId"] for d in error_of(overlapping, 409)["details"]} == {rollout_id}

    fleet.report_phase(rollout, "canary", "2.0.0")
    in_wave = fleet.until(rollout_id, lambda r: r["state"] == "wave")
    assert [d["event"] for d in in_wave["decisions"]] == ["CanaryGatePassed"]
    assert phases(in_wave)["wave"] == [("eu", "assigned"), ("us", "assigned")]

    fleet.report_phase(in_wave, "wave", "2.0.0")
    done = fleet.until(rollout_id, lambda r: r["state"] == "completed")
    assert [d["reasonCode"] for d in done["decisions"]] == [
        "CANARY_GATE_PASSED",
        "WAVE_GATE_PASSED",
        "BAKE_COMPLETED",
    ]
    assert done["phases"]["wave"]["converged"] == 2
    assert [fleet.running_version(v) for v in fleet.ids] == ["2.0.0"] * 4
    # a finished rollout can no longer be paused or resumed
    for action in ("pause", "resume"):
        refused = error_of(op.post(f"/rollouts/{rollout_id}/{action}"), 409)
        assert refused["code"] == "rollout_final"
    listed = ok(op.get("/rollouts"))
    assert rollout_id in [r["rolloutId"] for r in listed]


def test_pause_resume_and_rollback_to_the_previous_release(op: httpx.Client) -> None:
    fleet = ReportedFleet(op)
    rollout_id = fleet.start("2.0.0")["rolloutId"]

    paused = ok(op.post(f"/rollouts/{rollout_id}/pause"))
    assert paused["paused"] is True
    assert ok(op.post(f"/rollouts/{rollout_id}/pause"))["paused"] is True  # idempotent
    fleet.report_phase(paused, "canary", "2.0.0")
    assert fleet.get(rollout_id)["state"] == "canary"  # read right after: still held
    resumed = ok(op.post(f"/rollouts/{rollout_id}/resume"))
    assert resumed["paused"] is False
    fleet.until(rollout_id, lambda r: r["state"] == "wave")

    rolled = ok(op.post(f"/rollouts/{rollout_id}/rollback"))
    assert rolled["state"] == "rolled_back"
    assert {m["status"] for m in rolled["vehicles"]} == {"rolled_back"}
    # a rollback is a new, higher revision pointing at the release each vehicle ran before
    assert [fleet.running_version(v) for v in fleet.ids] == ["1.0.0"] * 4
    rollbacks = [
        e
        for e in ok(op.get("/audit", params={"rolloutId": rollout_id}))
        if e["eventType"] == "Rollout.RolledBack"
    ]
    again = op.post(f"/rollouts/{rollout_id}/rollback")
    assert again.status_code == 200 and again.json()["metadata"]["position"] is None
    after = [
        e
        for e in ok(op.get("/audit", params={"rolloutId": rollout_id}))
        if e["eventType"] == "Rollout.RolledBack"
    ]
    assert after == rollbacks
    # the vehicles are free for the next rollout
    assert fleet.start("3.0.0")["state"] == "canary"


def test_unknown_rollouts_are_404(op: httpx.Client) -> None:
    assert error_of(op.get("/rollouts/ro-nope"), 404)["code"] == "not_found"
    for action in ("pause", "resume", "rollback"):
        assert error_of(op.post(f"/rollouts/ro-nope/{action}"), 404)
    nobody = op.post("/rollouts", json={"selector": "group=nobody", "stack": "s", "version": "1"})
    assert error_of(nobody, 422)["details"] == {"selector": "group=nobody"}
