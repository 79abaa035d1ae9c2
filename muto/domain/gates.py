"""Safety gates: may the vehicle apply a release right now? The vehicle's answer is final;
nothing in the cloud overrides it."""

from __future__ import annotations

from datetime import datetime

from muto.domain.desired import ApplyWindow, Policy
from muto.domain.reasons import ReasonCode
from muto.domain.vehicle_state import MOVING_THRESHOLD_MPS, VehicleState
from muto.domain.window import in_apply_window, vehicle_zone


def evaluate_gates(
    policy: Policy, state: VehicleState, now: datetime, disk_mb_min: float = 0
) -> list[ReasonCode]:
    """Every code that blocks an apply now, in a stable order; [] means apply may proceed.

    All gates are evaluated (not just the first) so a report says everything the vehicle
    is waiting for. Adding a blocking condition never removes a code.
    Raises ValueError for a naive `now`.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got naive {now.isoformat()}")
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
