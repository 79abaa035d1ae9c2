"""A deterministic demo fleet, so the API can be explored without vehicles: 24 vehicles
over 3 regions and 2 models, two signed releases, and a finished rollout of 1.0.0 with
the reports a real fleet would have sent (one vehicle deferred, then converged)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause, record_reconcile, register_release, register_vehicle
from muto.cloud.controller import RolloutController
from muto.cloud.queries import rollout_candidates
from muto.cloud.rollouts import start_rollout
from muto.cloud.settings import Settings
from muto.domain.desired import StackRef
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact, ArtifactType, Compatibility, HealthModel, StackRelease
from muto.domain.reports import ReconcileReport, ReconcileStatus, Timings
from muto.domain.requests import RolloutRequest, RolloutThresholds, VehicleRegistration
from muto.domain.rollout_rules import Candidate, pick_canaries
from muto.domain.selectors import parse_selector
from muto.trust.keys import load_or_create_key_pair
from muto.trust.releases import manifest_digest, sign_release

REGIONS = ("eu-west", "us-east", "ap-south")
MODELS = ("vehicle-v3", "vehicle-v4")
PER_GROUP = 4


def demo_vehicles() -> list[VehicleRegistration]:
    return [
        VehicleRegistration(
            vehicle_id=f"{model}-{region}-{n:02d}",
            labels={"model": model, "region": region, "ring": "1" if n == 0 else "2"},
            attributes={"os": "ubuntu-22.04", "rosDistro": "humble"},
        )
        for region in REGIONS
        for model in MODELS
        for n in range(PER_GROUP)
    ]


def demo_release(version: str) -> StackRelease:
    digest = "sha256:" + (version.replace(".", "") * 64)[:64].ljust(64, "0")
    return StackRelease(
        stack_name="autonomy-core",
        version=version,
        artifacts=[
            Artifact(
                type=ArtifactType.OCI_IMAGE,
                ref=f"registry.example/autonomy-core:{version}",
                digest=digest,
                size=512 * 1024 * 1024,
            )
        ],
        compatibility=Compatibility(
            vehicle_models=list(MODELS), os=["ubuntu-22.04"], ros_distro=["humble"]
        ),
        health_model=HealthModel(readiness_timeout_sec=180),
    )


def _report(
    plane: ControlPlane,
    vehicle_id: str,
    revision: str,
    status: ReconcileStatus,
    codes: list[ReasonCode],
    n: int,
) -> None:
    report = ReconcileReport(
        schema="muto.reconcile-report.v1",
        report_id=f"seed-{vehicle_id}-{n}",
        vehicle_id=vehicle_id,
        desired_state_revision=revision,
        status=status,
        reason_codes=codes,
        running=StackRef(name="autonomy-core", version="1.0.0")
        if status is ReconcileStatus.CONVERGED
        else None,
        timings=Timings(apply_sec=48, readiness_sec=61),
        observed_at=datetime.now(UTC),
    )
    plane.execute(record_reconcile(report, f"vehicle:{vehicle_id}"))


def seed_demo_fleet(settings: Settings) -> dict[str, Any]:
    plane = ControlPlane.open(settings)
    try:
        cause = Cause.of("seed", "seed-demo-fleet")
        for registration in demo_vehicles():
            plane.execute(register_vehicle(registration, cause))
        keys = settings.data_dir / "keys"
        signer = load_or_create_key_pair(keys / "release.key", keys / "release.pub")
        for version in ("1.0.0", "1.1.0"):
            release = demo_release(version)
            plane.execute(
                register_release(
                    release, manifest_digest(release), sign_release(release, [signer]), cause
                )
            )
        if plane.queries.rollout_exists("seed-rollout-1"):
            return _summary(plane)
        ids = plane.queries.vehicle_ids(parse_selector("model=vehicle-v3"))
        canaries, wave = pick_canaries(
            Candidate(r["vehicle_id"], r["labels"]["region"], r["labels"]["model"])
            for r in rollout_candidates(plane.queries, ids)
        )
        request = RolloutRequest(
            selector="model=vehicle-v3",
            stack="autonomy-core",
            version="1.0.0",
            rollout_id="seed-rollout-1",
            thresholds=RolloutThresholds(bake_sec=0),  # seeded history: nothing to watch
        )
        plane.execute(start_rollout(request, canaries, wave, cause, plane.sign, plane.clock))
        controller = RolloutController(plane)
        deferred = wave[0]
        for members in (canaries, wave):  # each phase is assigned once the last passed
            assigned = plane.queries.rollout("seed-rollout-1").vehicles
            by_id = {v.vehicle_id: v.revision for v in assigned if v.revision}
            for vehicle_id in members:
                if vehicle_id == deferred:
                    _report(
                        plane,
                        vehicle_id,
                        by_id[vehicle_id],
                        ReconcileStatus.BLOCKED,
                        [ReasonCode.DENY_OUTSIDE_WINDOW],
                        1,
                    )
                _report(plane, vehicle_id, by_id[vehicle_id], ReconcileStatus.CONVERGED, [], 2)
            controller.tick()
        controller.tick()  # the bake (0 s) is over: completed
        return _summary(plane)
    finally:
        plane.close()


def _summary(plane: ControlPlane) -> dict[str, Any]:
    rollout = plane.queries.rollout("seed-rollout-1")
    return {
        "vehicles": plane.queries.vehicles(None).total,
        "releases": len(plane.queries.releases()),
        "rollout": f"{rollout.rollout_id} {rollout.state}",
        "data dir": str(plane.settings.data_dir),
    }
