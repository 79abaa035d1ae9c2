"""What the vehicle knows about itself at one instant: the inputs of the safety gates."""

from __future__ import annotations

from typing import Annotated

import msgspec

from muto.domain.wire import Wire

Speed = Annotated[float, msgspec.Meta(ge=0)]
Battery = Annotated[float, msgspec.Meta(ge=0, le=100)]


class VehicleState(Wire, frozen=True, kw_only=True):
    """Written by other on-board processes (a JSON state file, `StateFile`) or by the
    simulator."""

    speed_mps: Speed = 0.0
    autonomous_mode: bool = False
    battery_pct: Battery = 100.0
    timezone: str = "UTC"
    free_disk_mb: Annotated[float, msgspec.Meta(ge=0)] | None = None  # None: measure
    model: str | None = None
    os: str | None = None
    ros_distro: str | None = None
    clock_trusted: bool = True


# Above this speed the vehicle counts as moving (GPS/odometry noise at standstill).
MOVING_THRESHOLD_MPS = 0.1


class StateFile(VehicleState, frozen=True, kw_only=True):
    """The state file as read: it must state every input of the motion and battery
    gates. A file that leaves one out is refused like an unreadable one (fail closed),
    never read as the defaults: a stationary, manual, fully charged vehicle."""

    speed_mps: Speed
    autonomous_mode: bool
    battery_pct: Battery
