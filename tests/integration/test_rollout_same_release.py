"""A second rollout of a release the vehicles already run (docs/rollouts.md,
"Membership": start another rollout for the vehicles the first did not cover) rolls
them back to the release before it, never to that same release (the review's
repro_same_release.sh: a rollback revision naming app@2.0.0 was counted rolled back);
and never to a release an earlier rollback took away."""

from __future__ import annotations

from pathlib import Path

import msgspec

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import assign_desired_state, record_reconcile
from muto.cloud.rollouts import roll_back, start_rollout
from muto.domain.desired import StackRef
from muto.domain.model.rollout import Rollout
from muto.domain.model.vehicle import Vehicle
from muto.domain.reasons import ReasonCode
from muto.domain.reports import ReconcileStatus
from muto.domain.requests import RolloutRequest
from tests.support.releases import SignedRelease, signed_release
from tests.support.spine import (
    cause,
    desired_request,
    memory_settings,
    reconcile_report,
    register_fleet,
    registration,
)


def _converged(cp: ControlPlane, vehicle_id: str, revision: str, version: str, n: int) -> None:
    running = StackRef(name="core", version=version)
    report = reconcile_report(vehicle_id, f"{vehicle_id}-{n}", revision=revision, running=running)
    cp.execute(record_reconcile(report, f"vehicle:{vehicle_id}"))


def test_a_second_rollout_of_a_release_rolls_back_to_the_release_before_it(
    tmp_path: Path,
) -> None:
    cp = ControlPlane.open(memory_settings(tmp_path))
    try:
        ids = ["v-eu-m3-1", "v-eu-m3-2"]
        register_fleet(cp, [registration(v, ring="1") for v in ids])
        old, new = signed_release(version="1.0.0"), signed_release(version="2.0.0")
        cp.execute(old.register())
        cp.execute(new.register())
        # v1 ran 1.0.0, then 2.0.0 (the first rollout's, here a direct assignment);
        # v2 ran nothing before 2.0.0.
        n = 0
        for release, version, vehicles in ((old, "1.0.0", ids[:1]), (new, "2.0.0", ids)):
            given = cp.execute(
                assign_desired_state(desired_request("ring=1", release), vehicles, cause(), cp.sign)
            ).value
            for vehicle_id in vehicles:
                n += 1
                _converged(cp, vehicle_id, given.revision, version, n)
        request = RolloutRequest(
            selector="ring=1", stack="core", version="2.0.0", rollout_id="ro-2"
        )
        cp.execute(start_rollout(request, ids[:1], ids[1:], cause(), cp.sign, cp.clock))
        assert cp.execute(roll_back("ro-2", cause(), cp.sign, cp.clock)).value == 1
        vehicle: Vehicle = cp.log.repository.get(Vehicle.create_id(ids[0]))
        assert vehicle.assignment is not None
        assert (vehicle.assignment["phase"], vehicle.assignment["releaseKey"]) == (
            "rollback",
            "core@1.0.0",
        )
        cp.projector.catch_up()
        view = msgspec.to_builtins(cp.queries.rollout("ro-2"))
        assert {m["vehicleId"]: m["status"] for m in view["vehicles"]} == {
            ids[0]: "rolling_back",  # not rolled back before it says so
            ids[1]: "not_assigned",
        }
    finally:
        cp.close()


CAR = "v-eu-m3-1"


def rolled_back_while_away(cp: ControlPlane) -> tuple[SignedRelease, SignedRelease]:
    """CAR ran w (1.0.0); rollout r1 of y (2.0.0) converged on it and was rolled back to
    w while it was away (no report on the rollback revision). Registers 3.0.0 and 4.0.0
    too, and returns them."""
    register_fleet(cp, [registration(CAR, ring="1")])
    w, y, third, fourth = (signed_release(version=f"{n}.0.0") for n in (1, 2, 3, 4))
    for release in (w, y, third, fourth):
        cp.execute(release.register())
    given = cp.execute(
        assign_desired_state(desired_request("ring=1", w), [CAR], cause(), cp.sign)
    ).value
    _converged(cp, CAR, given.revision, "1.0.0", 1)
    r1 = RolloutRequest(selector="ring=1", stack="core", version="2.0.0", rollout_id="r1")
    cp.execute(start_rollout(r1, [CAR], [], cause(), cp.sign, cp.clock))
    vehicle: Vehicle = cp.log.repository.get(Vehicle.create_id(CAR))
    assert vehicle.assignment is not None
    _converged(cp, CAR, vehicle.assignment["revision"], "2.0.0", 2)
    assert cp.execute(roll_back("r1", cause(), cp.sign, cp.clock)).value == 1
    return third, fourth


def test_a_rollback_taken_while_away_is_never_undone_by_a_later_rollouts_rollback(
    tmp_path: Path,
) -> None:
    """The review's case: the vehicle ran w (1.0.0); rollout R1 of y (2.0.0) failed on it
    and was rolled back to w while it was away (it still reports y, on R1's revision);
    the operator then assigned x (3.0.0) directly. Rollout R2 of z (4.0.0), started
    before it reports again, rolls it back to x, never to y: y is what R1 took away."""
    cp = ControlPlane.open(memory_settings(tmp_path))
    try:
        car, (x, _) = CAR, rolled_back_while_away(cp)
        # Away: no report on the rollback revision; then x, assigned directly.
        cp.execute(assign_desired_state(desired_request("ring=1", x), [car], cause(), cp.sign))
        r2 = RolloutRequest(selector="ring=1", stack="core", version="4.0.0", rollout_id="r2")
        cp.execute(start_rollout(r2, [car], [], cause(), cp.sign, cp.clock))
        rollout: Rollout = cp.log.repository.get(Rollout.create_id("r2"))
        assert rollout.previous_releases == {car: "core@3.0.0"}
        assert cp.execute(roll_back("r2", cause(), cp.sign, cp.clock)).value == 1
        vehicle: Vehicle = cp.log.repository.get(Vehicle.create_id(car))
        assert vehicle.assignment is not None
        assert (vehicle.assignment["phase"], vehicle.assignment["releaseKey"]) == (
            "rollback",
            "core@3.0.0",
        )
    finally:
        cp.close()


def test_a_rollback_never_taken_is_still_what_a_later_rollout_rolls_back_to(
    tmp_path: Path,
) -> None:
    """The vehicle ran w (1.0.0); rollout R1 of y (2.0.0) was rolled back to w while it
    was away; z (3.0.0) was assigned to it directly before it took that rollback. It
    failed on z and went back to y, its own known good, and said so on z's revision.
    Rollout R3 of q (4.0.0) rolls it back to w, never to y: y is what R1 took away."""
    cp = ControlPlane.open(memory_settings(tmp_path))
    try:
        car, (z, _) = CAR, rolled_back_while_away(cp)
        given = cp.execute(
            assign_desired_state(desired_request("ring=1", z), [car], cause(), cp.sign)
        ).value
        failed = reconcile_report(
            car,
            f"{car}-3",
            ReconcileStatus.ROLLED_BACK,
            revision=given.revision,
            reason_codes=[ReasonCode.CRASH_LOOP_DETECTED, ReasonCode.ROLLBACK_APPLIED],
            running=StackRef(name="core", version="2.0.0"),
        )
        cp.execute(record_reconcile(failed, f"vehicle:{car}"))
        r3 = RolloutRequest(selector="ring=1", stack="core", version="4.0.0", rollout_id="r3")
        cp.execute(start_rollout(r3, [car], [], cause(), cp.sign, cp.clock))
        rollout: Rollout = cp.log.repository.get(Rollout.create_id("r3"))
        assert rollout.previous_releases == {car: "core@1.0.0"}
    finally:
        cp.close()


def test_a_member_that_refuses_its_revision_as_stale_is_not_failed(tmp_path: Path) -> None:
    """A rejection for STALE_REVISION (the vehicle took a later document: a cloud restored
    from a backup re-issues the revision above it) is no verdict on the member: it stays
    assigned, and its report on the re-issue counts."""
    cp = ControlPlane.open(memory_settings(tmp_path))
    try:
        car = "v-eu-m3-1"
        register_fleet(cp, [registration(car, ring="1")])
        cp.execute(signed_release(version="1.0.0").register())
        request = RolloutRequest(selector="ring=1", stack="core", version="1.0.0", rollout_id="r")
        cp.execute(start_rollout(request, [car], [], cause(), cp.sign, cp.clock))
        vehicle: Vehicle = cp.log.repository.get(Vehicle.create_id(car))
        assert vehicle.assignment is not None
        revision = vehicle.assignment["revision"]
        stale = reconcile_report(
            car, f"{car}-1", ReconcileStatus.REJECTED, revision=revision,
            reason_codes=[ReasonCode.STALE_REVISION],
        )  # fmt: skip
        cp.execute(record_reconcile(stale, f"vehicle:{car}"))
        cp.projector.catch_up()
        view = msgspec.to_builtins(cp.queries.rollout("r"))
        assert [m["status"] for m in view["vehicles"]] == ["assigned"]
        _converged(cp, car, revision, "1.0.0", 2)
        cp.projector.catch_up()
        view = msgspec.to_builtins(cp.queries.rollout("r"))
        assert [m["status"] for m in view["vehicles"]] == ["converged"]
    finally:
        cp.close()
