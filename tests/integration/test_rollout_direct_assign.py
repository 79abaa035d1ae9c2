"""A direct desired-state assignment and an active rollout never overwrite each other
(docs/rollouts.md, "A vehicle in an active rollout is the rollout's"): POST
/desired-states to a member of an active rollout is a 409 naming it, decided inside the
write, on SQLite and PostgreSQL; an assignment that slipped past (a race) supersedes the
member: the wave never assigns over it, the gate never judges it, a rollback never takes
it away. And a member's failure on the rollout's revision reported after its rollback is
still recorded on its row."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from muto.cloud.commands import assign_desired_state
from muto.cloud.commands import desired as desired_commands
from muto.cloud.errors import Conflict
from muto.domain.reports import ReconcileStatus
from tests.support.api_server import BACKENDS, error_of, operator_client
from tests.support.reported_fleet import ReportedFleet, ok
from tests.support.rollout_plane import CANARY, CRASH_LOOP, NEW, OLD, Plane
from tests.support.spine import cause, desired_request, memory_settings, sqlite_settings


@pytest.fixture(scope="module", params=BACKENDS)
def op(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    with operator_client(request.param, tmp_path_factory.mktemp(request.param)) as client:
        yield client


def assign(op: httpx.Client, target: dict[str, Any], stack: str, version: str) -> httpx.Response:
    return op.post(
        "/desired-states", json={"target": target, "stack": {"name": stack, "version": version}}
    )


def members(rollout: dict[str, Any], phase: str) -> list[str]:
    return [m["vehicleId"] for m in rollout["vehicles"] if m["phase"] == phase]


def test_a_direct_assignment_to_a_member_of_an_active_rollout_is_a_409(op: httpx.Client) -> None:
    """Paused in canary (A), in the wave (C) and baking (B): by vehicle and by selector,
    refused whole, naming the rollout and how to proceed; after the rollout, accepted."""
    fleet = ReportedFleet(op)
    rollout = fleet.start("2.0.0")
    rollout_id = rollout["rolloutId"]
    wave = members(rollout, "wave")
    ok(op.post(f"/rollouts/{rollout_id}/pause"))

    refused = error_of(
        assign(op, {"type": "vehicle", "vehicleId": wave[0]}, fleet.stack, "3.0.0"), 409
    )
    assert refused["code"] == "conflict"
    assert rollout_id in refused["message"] and "roll it back" in refused["message"]
    assert refused["details"] == [
        {"vehicleId": wave[0], "rolloutId": rollout_id, "rolloutState": "canary"}
    ]
    by_selector = error_of(
        assign(op, {"selector": f"group={fleet.group}"}, fleet.stack, "3.0.0"), 409
    )
    assert {d["vehicleId"] for d in by_selector["details"]} == set(fleet.ids)
    assert [fleet.running_version(v) for v in fleet.ids] == [
        "2.0.0" if v in members(rollout, "canary") else "1.0.0" for v in fleet.ids
    ]  # nothing assigned

    ok(op.post(f"/rollouts/{rollout_id}/resume"))
    fleet.report_phase(rollout, "canary", "2.0.0")
    in_wave = fleet.until(rollout_id, lambda r: r["state"] == "wave")
    refused = error_of(
        assign(op, {"type": "vehicle", "vehicleId": wave[0]}, fleet.stack, "3.0.0"), 409
    )
    assert refused["details"][0]["rolloutState"] == "wave"

    fleet.report_phase(in_wave, "wave", "2.0.0")
    done = fleet.until(rollout_id, lambda r: r["state"] in ("baking", "completed"))
    if done["state"] == "baking":
        error_of(assign(op, {"type": "vehicle", "vehicleId": wave[0]}, fleet.stack, "3.0.0"), 409)
    fleet.until(rollout_id, lambda r: r["state"] == "completed")
    ok(assign(op, {"type": "vehicle", "vehicleId": wave[0]}, fleet.stack, "3.0.0"), 201)
    assert fleet.running_version(wave[0]) == "3.0.0"


def test_a_member_that_left_or_a_vehicle_in_a_final_rollout_is_free(op: httpx.Client) -> None:
    fleet = ReportedFleet(op)
    rollout = fleet.start("2.0.0")
    rollout_id = rollout["rolloutId"]
    ok(op.post(f"/rollouts/{rollout_id}/rollback"))  # ends it
    canary = members(rollout, "canary")[0]
    ok(assign(op, {"type": "vehicle", "vehicleId": canary}, fleet.stack, "3.0.0"), 201)


# -- defence in depth: an assignment that raced the refusal ---------------------------


@pytest.fixture
def slipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A direct assignment that slipped past the refusal (a race it cannot see: a
    rollout started in another process that the views did not show yet)."""
    monkeypatch.setattr(desired_commands, "refuse_rollout_members", lambda *_: None, raising=False)


def direct(plane: Plane, vehicle_ids: list[str], release: Any) -> str:
    command = assign_desired_state(
        desired_request("model=m3", release), vehicle_ids, cause("op"), plane.cp.sign
    )
    revision: str = plane.cp.writer.execute(command).value.revision
    plane.cp.projector.catch_up()
    return revision


@pytest.fixture(params=["memory", "sqlite"])
def plane(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Plane]:
    settings = memory_settings(tmp_path) if request.param == "memory" else sqlite_settings(tmp_path)
    found = Plane(settings)
    try:
        yield found
    finally:
        found.cp.close()


def test_the_command_itself_refuses_a_member_without_the_views(plane: Plane) -> None:
    """The refusal is the write's: a member the rollout assigned is found through its
    own desired state even when the caller names no rollout."""
    with pytest.raises(Conflict) as refused:
        direct(plane, [CANARY], OLD)
    assert refused.value.details == [
        {"vehicleId": CANARY, "rolloutId": "ro-1", "rolloutState": "canary"}
    ]
    with pytest.raises(Conflict):  # a pending wave member, through the hint the API gives
        plane.cp.writer.execute(
            assign_desired_state(
                desired_request("model=m3", OLD), ["v1"], cause("op"), plane.cp.sign,
                active_rollouts=["ro-1"],
            )
        )  # fmt: skip


def test_a_member_superseded_is_not_judged_nor_outstanding(plane: Plane, slipped: None) -> None:
    """(C) assigned just after the rollout's assignment: shown superseded by that
    revision at once, not assigned/outstanding, not counted by the gate."""
    revision = direct(plane, [CANARY], OLD)
    rollout = plane.cp.queries.rollout("ro-1")
    (member,) = [m for m in rollout.vehicles if m.vehicle_id == CANARY]
    assert (str(member.status), member.superseded_by) == ("superseded", revision)
    assert rollout.phases["canary"].superseded == 1
    assert rollout.phases["canary"].assigned == 0
    assert CANARY not in {m.vehicle_id for m in rollout.outstanding}
    plane.report(plane.canary, 9, ReconcileStatus.CONVERGED)  # a late report on ours
    (member,) = [m for m in plane.cp.queries.rollout("ro-1").vehicles if m.vehicle_id == CANARY]
    assert str(member.status) == "superseded"


# -- item 2: a late failure on the rollout's own revision -----------------------------


def member_of(plane: Plane) -> tuple[str, list[str], dict[str, int]]:
    plane.cp.projector.catch_up()
    rollout = plane.cp.queries.rollout("ro-1")
    (found,) = [m for m in rollout.vehicles if m.vehicle_id == CANARY]
    return (
        str(found.status),
        [str(c) for c in found.reason_codes],
        rollout.phases["canary"].rolled_back_by,
    )


@pytest.mark.parametrize("rollback_report_first", [True, False])
def test_a_crash_loop_on_the_rollouts_revision_after_its_rollback_is_on_the_row(
    plane: Plane, rollback_report_first: bool
) -> None:
    """The agent accepts the rollback revision, then files the crash loop of the release
    it ran under the rollout's revision (a178c4e): the member's row and rolledBackBy
    show it, in either order and after a rebuild; the rollout stays as decided."""
    plane.report(plane.canary, 1, ReconcileStatus.CONVERGED)
    rollback = plane.roll_back()
    plane.cp.projector.catch_up()
    state = plane.cp.queries.rollout("ro-1").state
    if rollback_report_first:
        plane.report(rollback, 2, ReconcileStatus.CONVERGED)
    plane.report(plane.canary, 3, ReconcileStatus.ROLLED_BACK)  # CRASH_LOOP_DETECTED
    if not rollback_report_first:
        plane.report(rollback, 4, ReconcileStatus.CONVERGED)
    codes = [str(c) for c in CRASH_LOOP]
    assert member_of(plane) == ("rolled_back", codes, dict.fromkeys(codes, 1))
    assert plane.cp.queries.rollout("ro-1").state == state
    plane.assert_rebuild_equal()


def test_a_late_failure_waits_behind_a_refused_rollback(plane: Plane) -> None:
    """A member refusing its rollback revision shows the refusal; the late crash loop is
    kept and shown once the rollback takes."""
    plane.report(plane.canary, 1, ReconcileStatus.CONVERGED)
    rollback = plane.roll_back()
    plane.report(rollback, 2, ReconcileStatus.REJECTED)
    plane.report(plane.canary, 3, ReconcileStatus.ROLLED_BACK)
    assert member_of(plane)[:2] == ("rolling_back", ["DESIRED_STATE_EXPIRED"])
    plane.report(rollback, 4, ReconcileStatus.CONVERGED)
    assert member_of(plane)[:2] == ("rolled_back", [str(c) for c in CRASH_LOOP])
    plane.assert_rebuild_equal()


def test_a_late_converged_on_the_rollouts_revision_changes_nothing(plane: Plane) -> None:
    plane.report(plane.canary, 5, ReconcileStatus.ROLLED_BACK)
    rollback = plane.roll_back()
    plane.report(plane.canary, 1, ReconcileStatus.CONVERGED)  # older, delivered late
    assert member_of(plane)[:2] == ("rolling_back", [])
    plane.report(rollback, 2, ReconcileStatus.CONVERGED)
    codes = [str(c) for c in CRASH_LOOP]
    assert member_of(plane)[:2] == ("rolled_back", codes)


_ = NEW  # the rollout's release (the Plane's)


def test_the_wave_never_assigns_over_a_newer_intent(plane: Plane, slipped: None) -> None:
    """(A) assigned while paused in canary (the assignment raced the refusal): the wave
    leaves it alone and records it superseded; the others get the wave."""
    from datetime import UTC, datetime

    from muto.cloud.rollouts import decide
    from muto.domain.model.rollout import Rollout
    from muto.domain.model.vehicle import Vehicle
    from muto.domain.rollout_rules import Member, MemberStatus, Verdict, evaluate_phase

    revision = direct(plane, ["v1"], OLD)
    passed = evaluate_phase([Member(CANARY, MemberStatus.CONVERGED)], 95.0, False)
    clock = lambda: datetime.now(UTC)  # noqa: E731
    command = decide("ro-1", "canary", Verdict.PASS, passed, cause("c"), plane.cp.sign, clock)
    assert plane.cp.writer.execute(command).value is True
    plane.cp.projector.catch_up()
    rollout = plane.cp.log.repository.get(Rollout.create_id("ro-1"))
    assert rollout.superseded == {"v1": revision}
    assert "v1" not in rollout.assigned and "v2" in rollout.assigned
    v1 = plane.cp.log.repository.get(Vehicle.create_id("v1"))
    assert v1.assignment["revision"] == revision  # the operator's intent stands
    shown = {
        m.vehicle_id: (str(m.status), m.superseded_by)
        for m in plane.cp.queries.rollout("ro-1").vehicles
    }
    assert shown["v1"] == ("superseded", revision)
    assert shown["v2"] == ("assigned", None)


def test_a_failing_gate_first_records_members_superseded(plane: Plane, slipped: None) -> None:
    """A failure the views computed while counting a member superseded meanwhile is not
    carried out: the member is recorded superseded, the gate judged again next tick."""
    from datetime import UTC, datetime

    from muto.cloud.rollouts import decide
    from muto.domain.model.rollout import Rollout
    from muto.domain.rollout_rules import Member, MemberStatus, Verdict, evaluate_phase

    revision = direct(plane, [CANARY], OLD)
    failed = evaluate_phase([Member(CANARY, MemberStatus.ASSIGNED)], 95.0, True)
    clock = lambda: datetime.now(UTC)  # noqa: E731
    command = decide("ro-1", "canary", Verdict.FAIL, failed, cause("c"), plane.cp.sign, clock)
    assert plane.cp.writer.execute(command).value is False
    rollout = plane.cp.log.repository.get(Rollout.create_id("ro-1"))
    assert rollout.state == "canary" and rollout.superseded == {CANARY: revision}
    assert rollout.rolled_back == []


# -- one rule for "superseded": the view and the aggregate agree ----------------------


def pass_canary(plane: Plane) -> Any:
    """The canary gate passed (the wave assigned), and the rollout aggregate after."""
    from datetime import UTC, datetime

    from muto.cloud.rollouts import decide
    from muto.domain.model.rollout import Rollout
    from muto.domain.rollout_rules import Member, MemberStatus, Verdict, evaluate_phase

    passed = evaluate_phase([Member(CANARY, MemberStatus.CONVERGED)], 95.0, False)
    clock = lambda: datetime.now(UTC)  # noqa: E731
    command = decide("ro-1", "canary", Verdict.PASS, passed, cause("c"), plane.cp.sign, clock)
    assert plane.cp.writer.execute(command).value is True
    plane.cp.projector.catch_up()
    return plane.cp.log.repository.get(Rollout.create_id("ro-1"))


def shown_superseded(plane: Plane) -> dict[str, str | None]:
    plane.cp.projector.catch_up()
    return {
        m.vehicle_id: m.superseded_by
        for m in plane.cp.queries.rollout("ro-1").vehicles
        if str(m.status) == "superseded"
    }


def test_another_rollouts_rollback_supersedes_a_pending_member_in_view_and_aggregate(
    plane: Plane,
) -> None:
    """An operator rollback of an older rollout gives a pending wave member of ro-1 a
    revision (it is another rollout's, not ro-1's): a newer intent. The view shows it
    superseded at once, the wave leaves it alone, and the aggregate records the same."""
    rollback = plane.cp.writer.execute(
        assign_desired_state(
            desired_request("model=m3", OLD), ["v1"], cause("op"), plane.cp.sign,
            rollout_id="ro-old", phase="rollback",
        )
    ).value.revision  # fmt: skip
    assert shown_superseded(plane) == {"v1": rollback}
    rollout = pass_canary(plane)
    assert rollout.superseded == {"v1": rollback} == shown_superseded(plane)
    assert "v1" not in rollout.assigned and "v2" in rollout.assigned
    plane.assert_rebuild_equal()


def test_a_pending_member_is_superseded_by_the_stores_order_not_the_clocks(
    plane: Plane, slipped: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A direct assignment written after the rollout started by a process whose clock is
    behind (its desired state's creation time is before the rollout's) is newer all the
    same: the store ordered it after the start."""
    from datetime import UTC, datetime

    from muto.domain.model.desired_state import DesiredState

    behind = staticmethod(lambda: datetime(2020, 1, 1, tzinfo=UTC))
    with monkeypatch.context() as clock:
        clock.setattr(DesiredState.Created, "create_timestamp", behind, raising=False)
        revision = direct(plane, ["v1"], OLD)
    assert shown_superseded(plane) == {"v1": revision}
    rollout = pass_canary(plane)
    assert rollout.superseded == {"v1": revision} == shown_superseded(plane)
    assert "v1" not in rollout.assigned
