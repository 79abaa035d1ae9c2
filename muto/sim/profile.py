"""A simulation profile: what the simulated fleet looks like and how releases behave."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec
import yaml

from muto.agent.runtime.simulated import SimulatedBehaviour
from muto.domain.wire import Wire, convert


class Behaviour(Wire, frozen=True, kw_only=True):
    """How one release behaves on every simulated vehicle."""

    apply_sec: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    apply_fails: bool = False
    readiness_timeout: bool = False
    crash_loop: bool = False

    def simulated(self) -> SimulatedBehaviour:
        if self.crash_loop:
            # Restarts every half second and would be ready only much later: the
            # crash-loop rule (3 restarts in 60 s) trips during the readiness check.
            return SimulatedBehaviour(
                apply_sec=self.apply_sec, ready_after_sec=30.0, restart_every_sec=0.5
            )
        return SimulatedBehaviour(
            apply_sec=self.apply_sec,
            apply_fails=self.apply_fails,
            ready_after_sec=None if self.readiness_timeout else 0.0,
        )


class SimProfile(Wire, frozen=True, kw_only=True):
    # on every simulated vehicle
    labels: dict[str, str] = msgspec.field(default_factory=lambda: {"fleet": "demo"})
    regions: list[str] = msgspec.field(default_factory=lambda: ["eu-west", "us-east", "ap-south"])
    models: list[str] = msgspec.field(default_factory=lambda: ["vehicle-v3", "vehicle-v4"])
    os: str = "ubuntu-22.04"
    ros_distro: str = "humble"
    # stack@version -> behaviour; releases not listed apply instantly and run well.
    releases: dict[str, Behaviour] = {}
    poll_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    health_every_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    reports_via: str = "http"

    def behaviours(self) -> dict[str, SimulatedBehaviour]:
        return {key: b.simulated() for key, b in self.releases.items()}


def load_profile(path: Path | None) -> SimProfile:
    if path is None:
        return SimProfile()
    return convert(yaml.safe_load(path.read_text()) or {}, SimProfile)


def vehicle_ids(profile: SimProfile, count: int) -> list[tuple[str, str, str]]:
    """(vehicle id, region, model), spread round-robin over the groups."""
    groups = [(r, m) for r in profile.regions for m in profile.models]
    return [
        (
            f"{groups[i % len(groups)][1]}-{groups[i % len(groups)][0]}-{i:05d}",
            *groups[i % len(groups)],
        )
        for i in range(count)
    ]
