"""What the vehicle knows about itself at one instant: the inputs of the safety gates."""

from __future__ import annotations

from typing import Annotated

import msgspec

from muto.domain.wire import Wire


class VehicleState(Wire, frozen=True, kw_only=True):
    """Written by other on-board processes (a JSON state file) or by the simulator."""

    speed_mps: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    autonomous_mode: bool = False
    battery_pct: Annotated[float, msgspec.Meta(ge=0, le=100)] = 100.0
    timezone: str = "UTC"
    free_disk_mb: Annotated[float, msgspec.Meta(ge=0)] | None = None  # None: measure
    model: str | None = None
    os: str | None = None
    ros_distro: str | None = None
    clock_trusted: bool = True


# Above this speed the vehicle counts as moving (GPS/odometry noise at standstill).
MOVING_THRESHOLD_MPS = 0.1
