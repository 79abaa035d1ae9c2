"""The bench's fleet: vehicles, a release, a desired state each, and tokens, written in
process before the server starts, through the control plane's own write paths."""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause, assign_desired_state, register_release
from muto.cloud.fleet_import import import_vehicles
from muto.cloud.settings import Settings
from muto.cloud.tokens import Role, issue_token
from muto.domain.desired import DesiredStateRequest, StackRef, Target
from muto.domain.release import Artifact, ArtifactType, StackRelease
from muto.domain.requests import VehicleRegistration
from muto.trust.keys import Signer
from muto.trust.releases import manifest_digest, sign_release

# Vehicles onboarded per step (imported, assigned, given tokens): a step's vehicles are
# still in the aggregate cache (20,000) when their desired state is assigned.
WAVE = 5_000


@dataclass(frozen=True)
class Poller:
    vehicle_id: str
    token: str
    etag: str
    revision: str  # of its desired state (one per wave)


@dataclass(frozen=True)
class Fleet:
    operator: str
    pollers: list[Poller]


def seed(settings: Settings, vehicles: int) -> Fleet:
    """A release, then the fleet in waves of WAVE vehicles: registered as operators
    import a fleet (`muto cloud import-vehicles`: a thousand per atomic append), one
    desired state assigned to the wave, a token per vehicle (group committed)."""
    cp = ControlPlane.open(settings)
    try:
        cause = Cause.of("bench")
        timer = Phases(f"seed {vehicles:,} vehicles")
        release = StackRelease(
            stack_name="navstack",
            version="1.0.0",
            artifacts=[
                Artifact(
                    type=ArtifactType.OCI_IMAGE,
                    ref="registry.invalid/navstack@sha256:" + "1" * 64,
                    digest="sha256:" + "1" * 64,
                    size=123_456_789,
                )
            ],
        )
        envelope = sign_release(release, [Signer.generate()])
        cp.execute(register_release(release, manifest_digest(release), envelope, cause))
        secret, command = issue_token(Role.OPERATOR, None, cause)
        cp.execute(command)
        request = DesiredStateRequest(
            target=Target(selector="fleet=bench"), stack=StackRef(name="navstack", version="1.0.0")
        )
        tokens: dict[str, str] = {}
        revisions: dict[str, str] = {}
        for first in range(0, vehicles, WAVE):
            ids = [f"veh-{i:06d}" for i in range(first, min(vehicles, first + WAVE))]
            import_vehicles(cp, [registration(v, i) for i, v in enumerate(ids, first)], cause)
            timer.add("vehicles")
            assigned = cp.execute(assign_desired_state(request, ids, cause, cp.sign), 600).value
            revisions.update(dict.fromkeys(ids, assigned.revision))
            timer.add("assignment")
            issued = {v: issue_token(Role.VEHICLE, v, cause) for v in ids}
            wait_all(cp.writer.submit(command) for _, command in issued.values())
            tokens.update({v: token for v, (token, _) in issued.items()})
            timer.add("tokens")
        cp.projector.catch_up()
        latest = cp.views.desired.latest
        etags = dict(cp.views.store.read(select(latest.c.vehicle_id, latest.c.etag)))
        pollers = [Poller(v, tokens[v], etags[v], revisions[v]) for v in tokens]
        timer.add("views")
        timer.report()
        return Fleet(secret, pollers)
    finally:
        cp.close()


def registration(vehicle_id: str, i: int) -> VehicleRegistration:
    return VehicleRegistration(
        vehicle_id=vehicle_id,
        labels={"fleet": "bench", "model": "m3", "region": f"r{i % 4}"},
        attributes={"os": "ubuntu-22.04", "rosDistro": "humble"},
    )


def wait_all(futures: Iterable[Future[Any]]) -> None:
    for future in list(futures):
        future.result()


class Phases:
    """How long each phase of a long step took, summed over its rounds."""

    def __init__(self, what: str) -> None:
        self.what, self.started = what, time.monotonic()
        self.seconds: dict[str, float] = {}

    def add(self, phase: str) -> None:
        now = time.monotonic()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self.started
        self.started = now

    def report(self) -> None:
        spent = ", ".join(f"{phase} {s:.1f} s" for phase, s in self.seconds.items())
        print(f"{self.what}: {spent}", flush=True)
