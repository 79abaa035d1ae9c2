"""Safety gates: may the vehicle apply a release right now? The vehicle's answer is final;
nothing in the cloud overrides it: the gates judge the stricter of the vehicle's own
safety floor (its local provisioning) and the desired state's policy, so the cloud may
tighten a gate, never loosen it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from muto.domain.desired import ApplyWindow, Policy
from muto.domain.reasons import ReasonCode
from muto.domain.vehicle_state import MOVING_THRESHOLD_MPS, VehicleState
from muto.domain.window import in_apply_window, vehicle_zone
from muto.domain.wire import Wire


class SafetyFloor(Wire, frozen=True, kw_only=True):
    """The least the vehicle's own gates demand, whatever the desired state's policy says.
    Its defaults are the safe ones; only the vehicle's provisioning may loosen them (a
    test rig), never the cloud. The agent says its floor in its `agent/metadata`
    snapshot, so that an operator sees a loosened vehicle."""

    require_vehicle_stationary: bool = True
    deny_if_autonomous_mode: bool = True
    require_battery_pct_min: Annotated[float, msgspec.Meta(ge=0, le=100)] = 0

    def __post_init__(self) -> None:
        if not 0 <= self.require_battery_pct_min <= 100:  # `not`: NaN fails it too
            raise ValueError(
                "the battery minimum must be between 0 and 100 "
                f"(got {self.require_battery_pct_min:g})"
            )

    @property
    def loosened(self) -> list[str]:
        """The gates this vehicle's own provisioning turned off, in the fleet's words."""
        return [
            gate
            for gate, off in (
                ("applies while moving", not self.require_vehicle_stationary),
                ("applies in autonomous mode", not self.deny_if_autonomous_mode),
            )
            if off
        ]


DEFAULT_FLOOR = SafetyFloor()  # a vehicle provisioned without loosening anything


def stricter(policy: Policy, floor: SafetyFloor) -> Policy:
    """The policy the gates judge: each gate as strict as the stricter of the two (either
    may demand a standstill or a manual vehicle; the higher battery minimum). The apply
    window is the policy's: the floor has none."""
    return msgspec.structs.replace(
        policy,
        require_vehicle_stationary=policy.require_vehicle_stationary
        or floor.require_vehicle_stationary,
        deny_if_autonomous_mode=policy.deny_if_autonomous_mode or floor.deny_if_autonomous_mode,
        require_battery_pct_min=max(policy.require_battery_pct_min, floor.require_battery_pct_min),
    )


def evaluate_gates(
    policy: Policy,
    state: VehicleState,
    now: datetime,
    disk_mb_min: float = 0,
    floor: SafetyFloor = DEFAULT_FLOOR,
) -> list[ReasonCode]:
    """Every code that blocks an apply now, in a stable order; [] means apply may proceed.

    `policy` is the desired state's, `floor` the vehicle's own: the stricter of the two is
    judged (a caller that leaves `floor` out gets the safe defaults). All gates are
    evaluated (not just the first) so a report says everything the vehicle is waiting
    for. Adding a blocking condition never removes a code.
    Raises ValueError for a naive `now`.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got naive {now.isoformat()}")
    policy = stricter(policy, floor)
    zone_known = _zone_known(state.timezone)
    checks = (
        (
            ReasonCode.DENY_MOVING,
            policy.require_vehicle_stationary and state.speed_mps > MOVING_THRESHOLD_MPS,
        ),
        (ReasonCode.DENY_AUTONOMOUS_MODE, policy.deny_if_autonomous_mode and state.autonomous_mode),
        (ReasonCode.DENY_LOW_BATTERY, state.battery_pct < policy.require_battery_pct_min),
        (
            ReasonCode.DENY_OUTSIDE_WINDOW,
            not _window_open(policy.apply_window, now, state, zone_known),
        ),
        (
            ReasonCode.INSUFFICIENT_DISK,
            state.free_disk_mb is not None and state.free_disk_mb < disk_mb_min,
        ),
        (
            ReasonCode.UNTRUSTED_CLOCK,
            not state.clock_trusted or (_needs_clock(policy.apply_window) and not zone_known),
        ),
    )
    return [code for code, blocks in checks if blocks]


def _needs_clock(window: ApplyWindow | None) -> bool:
    return window is not None and window.start_local != window.end_local


def _window_open(
    window: ApplyWindow | None, now: datetime, state: VehicleState, zone_known: bool
) -> bool:
    if not _needs_clock(window):
        return True
    # Fail closed: a window judged by an untrusted clock or an unknown zone stays shut.
    if not (state.clock_trusted and zone_known):
        return False
    return in_apply_window(window, now, state.timezone)


def _zone_known(timezone: str) -> bool:
    try:
        vehicle_zone(timezone)
    except ValueError:
        return False
    return True
