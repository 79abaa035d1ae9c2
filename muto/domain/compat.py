"""Can this release run on this vehicle at all? (As opposed to: may it be applied now,
which is the safety gates' question.)"""

from __future__ import annotations

from dataclasses import dataclass

from muto.domain.reasons import ReasonCode
from muto.domain.release import StackRelease
from muto.domain.vehicle_state import VehicleState


@dataclass(frozen=True)
class VehicleFacts:
    """What a vehicle reports about its platform; None means not reported."""

    model: str | None = None
    os: str | None = None
    ros_distro: str | None = None
    free_disk_mb: float | None = None

    @classmethod
    def of(cls, state: VehicleState) -> VehicleFacts:
        return cls(state.model, state.os, state.ros_distro, state.free_disk_mb)


def check_compatibility(release: StackRelease, facts: VehicleFacts) -> list[ReasonCode]:
    """Every reason `release` cannot run on the vehicle, in a stable order; [] = compatible.

    An empty list in the release's compatibility means "any". Values compare exactly.
    """
    allowed = release.compatibility
    codes = [
        code
        for code, accepted, actual in (
            (ReasonCode.INCOMPATIBLE_MODEL, allowed.vehicle_models, facts.model),
            (ReasonCode.INCOMPATIBLE_OS, allowed.os, facts.os),
            (ReasonCode.INCOMPATIBLE_ROS, allowed.ros_distro, facts.ros_distro),
        )
        # Unknown (None) fails a restricted attribute: a release that names its platforms
        # must not land on a vehicle that cannot show it is one of them.
        if accepted and actual not in accepted
    ]
    # Unknown free disk is not a verdict: the agent measures it before applying.
    disk = facts.free_disk_mb
    if disk is not None and disk < release.resource_profile.disk_mb_min:
        codes.append(ReasonCode.INSUFFICIENT_DISK)
    return codes
