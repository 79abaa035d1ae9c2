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
    operator_client,
)
from tests.support.reported_fleet import ReportedFleet, ok


@pytest.fixture(scope="module", params=BACKENDS)
def op(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    with operator_client(request.param, tmp_path_factory.mktemp(request.param)) as client:
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
    # Given the rollback, none reported on it yet: rolling back, and outstanding.
    assert {m["status"] for m in rolled["vehicles"]} == {"rolling_back"}
    assert rolled["outstandingTotal"] == 4
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


def complete(fleet: ReportedFleet, version: str) -> str:
    """A rollout of `version` over the whole fleet, driven to `completed`."""
    started = fleet.start(version)
    rollout_id: str = started["rolloutId"]
    fleet.report_phase(started, "canary", version)
    in_wave = fleet.until(rollout_id, lambda r: r["state"] == "wave")
    fleet.report_phase(in_wave, "wave", version)
    fleet.until(rollout_id, lambda r: r["state"] == "completed")
    return rollout_id


def test_a_rollback_waits_for_another_active_rollout_and_then_takes_its_release_away(
    op: httpx.Client,
) -> None:
    """Rolling back a finished rollout while a newer one is active on its vehicles is
    refused (the newer one would assign over it, and later roll back to the release
    this rollback took away). Once the newer one is rolled back, its vehicles are on the
    older rollout's release again, and the older rollback takes it away from every one."""
    fleet = ReportedFleet(op)
    first = complete(fleet, "2.0.0")
    second = fleet.start("3.0.0")["rolloutId"]

    refused = error_of(op.post(f"/rollouts/{first}/rollback"), 409)
    assert {d["rolloutId"] for d in refused["details"]} == {second}
    assert {d["vehicleId"] for d in refused["details"]} == set(fleet.ids)
    assert fleet.get(first)["state"] == "completed"  # nothing stored

    ok(op.post(f"/rollouts/{second}/rollback"))  # its canaries: back to 2.0.0
    assert sorted(fleet.running_version(v) for v in fleet.ids) == ["2.0.0"] * 4
    rolled = ok(op.post(f"/rollouts/{first}/rollback"))
    assert rolled["state"] == "rolled_back"
    assert [fleet.running_version(v) for v in fleet.ids] == ["1.0.0"] * 4


def test_a_rollback_leaves_a_vehicle_given_another_release_since(op: httpx.Client) -> None:
    """A vehicle given another release after the rollout finished keeps it; when every
    vehicle has moved on, the rollback is a 409 that says where each one is now."""
    fleet = ReportedFleet(op)
    rollout_id = complete(fleet, "2.0.0")
    moved, stayed = fleet.ids[:1], fleet.ids[1:]
    given = ok(
        op.post(
            "/desired-states",
            json={
                "target": {"type": "vehicle", "vehicleId": moved[0]},
                "stack": {"name": fleet.stack, "version": "3.0.0"},
            },
        ),
        201,
    )
    rolled = ok(op.post(f"/rollouts/{rollout_id}/rollback"))
    # The vehicle that moved on is not shown converged on the release it no longer has.
    assert {m["vehicleId"]: m["status"] for m in rolled["vehicles"]} == {
        **{v: "superseded" for v in moved},
        **{v: "rolling_back" for v in stayed},  # not confirmed yet
    }
    (shown,) = [m for m in rolled["vehicles"] if m["vehicleId"] == moved[0]]
    assert shown["supersededBy"] == given["desiredStateRevision"]
    assert rolled["phases"]["canary"]["superseded"] + rolled["phases"]["wave"]["superseded"] == 1
    assert [fleet.running_version(v) for v in fleet.ids] == ["3.0.0", "1.0.0", "1.0.0", "1.0.0"]

    again = ok(op.post(f"/rollouts/{rollout_id}/rollback"))  # nobody left: a no-op
    assert again == ok(op.get(f"/rollouts/{rollout_id}"))

    other = ReportedFleet(op)
    finished = complete(other, "2.0.0")
    ok(
        op.post(
            "/desired-states",
            json={
                "target": {"selector": f"group={other.group}"},
                "stack": {"name": other.stack, "version": "3.0.0"},
            },
        ),
        201,
    )
    refused = error_of(op.post(f"/rollouts/{finished}/rollback"), 409)
    assert {d["vehicleId"] for d in refused["details"]} == set(other.ids)
    assert {d["rolloutId"] for d in refused["details"]} == {None}
    assert fleet.get(finished)["state"] == "completed"
    assert [other.running_version(v) for v in other.ids] == ["3.0.0"] * 4


def test_a_vehicle_away_during_a_rollback_is_never_rolled_back_onto_what_it_took_away(
    op: httpx.Client,
) -> None:
    """A vehicle still runs (as last reported) the release a rollback took away, because
    it was away and has not fetched the rollback. A later rollout's rollback returns it
    to the rollback's target, not to the release it last reported."""
    fleet = ReportedFleet(op)
    first = complete(fleet, "2.0.0")
    rolled = ok(op.post(f"/rollouts/{first}/rollback"))
    away, back = fleet.ids[0], fleet.ids[1:]
    for member in rolled["vehicles"]:
        if member["vehicleId"] in back:
            fleet.converge([member["vehicleId"]], member["revision"], "1.0.0")
    second = fleet.start("3.0.0")["rolloutId"]
    ok(op.post(f"/rollouts/{second}/rollback"))
    assert [fleet.running_version(v) for v in fleet.ids] == ["1.0.0"] * 4, away
