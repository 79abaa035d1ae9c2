"""A second rollout of a release the vehicles already run (docs/rollouts.md,
"Membership": start another rollout for the vehicles the first did not cover) rolls
them back to the release before it, never to that same release (the review's
repro_same_release.sh: a rollback revision naming app@2.0.0 was counted rolled back)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import assign_desired_state, record_reconcile
from muto.cloud.rollouts import roll_back, start_rollout
from muto.domain.desired import StackRef
from muto.domain.model.vehicle import Vehicle
from muto.domain.reports import ReconcileReport, ReconcileStatus
from muto.domain.requests import RolloutRequest
from tests.support.releases import signed_release
from tests.support.spine import (
    cause,
    desired_request,
    memory_settings,
    register_fleet,
    registration,
)


def _converged(cp: ControlPlane, vehicle_id: str, revision: str, version: str, n: int) -> None:
    report = ReconcileReport(
        schema="muto.reconcile-report.v1",
        report_id=f"{vehicle_id}-{n}",
        vehicle_id=vehicle_id,
        desired_state_revision=revision,
        status=ReconcileStatus.CONVERGED,
        running=StackRef(name="core", version=version),
        observed_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # type: ignore[arg-type]
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
