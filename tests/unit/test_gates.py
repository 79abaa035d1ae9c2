from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muto.domain.desired import ApplyWindow, Policy
from muto.domain.gates import SafetyFloor, evaluate_gates, stricter
from muto.domain.reasons import SAFETY_GATE_CODES, ReasonCode
from muto.domain.vehicle_state import MOVING_THRESHOLD_MPS, VehicleState
from muto.domain.window import in_apply_window

ORDER = [
    ReasonCode.DENY_MOVING,
    ReasonCode.DENY_AUTONOMOUS_MODE,
    ReasonCode.DENY_LOW_BATTERY,
    ReasonCode.DENY_OUTSIDE_WINDOW,
    ReasonCode.INSUFFICIENT_DISK,
    ReasonCode.UNTRUSTED_CLOCK,
]
NIGHT = ApplyWindow(start_local="02:00", end_local="05:00")
STRICT = Policy(apply_window=NIGHT, require_battery_pct_min=35)
AT_3AM = datetime(2024, 1, 15, 3, 0, tzinfo=UTC)
AT_NOON = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
PARKED = VehicleState(free_disk_mb=9000)


def test_a_parked_charged_vehicle_in_its_window_may_apply() -> None:
    assert evaluate_gates(STRICT, PARKED, AT_3AM, disk_mb_min=8000) == []


def test_every_blocking_code_is_reported_in_a_stable_order() -> None:
    state = VehicleState(
        speed_mps=3.0, autonomous_mode=True, battery_pct=10, free_disk_mb=100, clock_trusted=False
    )
    assert evaluate_gates(STRICT, state, AT_NOON, disk_mb_min=8000) == ORDER


def test_gate_codes_are_the_safety_gate_codes() -> None:
    assert set(ORDER) == SAFETY_GATE_CODES


@pytest.mark.parametrize(
    ("state", "code"),
    [
        (msgspec.structs.replace(PARKED, speed_mps=0.5), ReasonCode.DENY_MOVING),
        (msgspec.structs.replace(PARKED, autonomous_mode=True), ReasonCode.DENY_AUTONOMOUS_MODE),
        (msgspec.structs.replace(PARKED, battery_pct=34.9), ReasonCode.DENY_LOW_BATTERY),
        (msgspec.structs.replace(PARKED, free_disk_mb=7999), ReasonCode.INSUFFICIENT_DISK),
    ],
)
def test_each_gate_blocks_alone(state: VehicleState, code: ReasonCode) -> None:
    assert evaluate_gates(STRICT, state, AT_3AM, disk_mb_min=8000) == [code]


LENIENT = Policy(
    require_vehicle_stationary=False, deny_if_autonomous_mode=False, require_battery_pct_min=0
)
# What a test rig's own provisioning may set (`muto agent run --allow-apply-while-moving
# --allow-apply-in-autonomous-mode`); never the cloud.
RIG = SafetyFloor(require_vehicle_stationary=False, deny_if_autonomous_mode=False)


def test_a_policy_cannot_switch_the_vehicles_own_gates_off() -> None:
    """Review defect 1: a desired state with a lenient policy applied on a vehicle doing
    25 m/s in autonomous mode at 3 % battery."""
    state = VehicleState(speed_mps=25, autonomous_mode=True, battery_pct=3)
    assert evaluate_gates(LENIENT, state, AT_NOON) == [
        ReasonCode.DENY_MOVING,
        ReasonCode.DENY_AUTONOMOUS_MODE,
    ]
    floor = SafetyFloor(require_battery_pct_min=20)
    assert evaluate_gates(LENIENT, state, AT_NOON, floor=floor) == [
        ReasonCode.DENY_MOVING,
        ReasonCode.DENY_AUTONOMOUS_MODE,
        ReasonCode.DENY_LOW_BATTERY,
    ]


def test_the_vehicles_own_provisioning_may_loosen_its_floor() -> None:
    state = VehicleState(speed_mps=20, autonomous_mode=True, battery_pct=1)
    assert evaluate_gates(LENIENT, state, AT_NOON, floor=RIG) == []
    # ...and the policy may still tighten it again.
    assert evaluate_gates(Policy(), state, AT_NOON, floor=RIG) == [
        ReasonCode.DENY_MOVING,
        ReasonCode.DENY_AUTONOMOUS_MODE,
    ]


def test_the_stricter_of_floor_and_policy_field_by_field() -> None:
    floor = SafetyFloor(deny_if_autonomous_mode=False, require_battery_pct_min=40)
    policy = Policy(
        apply_window=NIGHT, require_vehicle_stationary=False, require_battery_pct_min=30
    )
    assert stricter(policy, floor) == Policy(
        apply_window=NIGHT,
        require_vehicle_stationary=True,
        deny_if_autonomous_mode=True,
        require_battery_pct_min=40,
    )


@pytest.mark.parametrize("minimum", [-1.0, 100.5, float("nan")])
def test_a_floor_battery_minimum_is_a_percentage(minimum: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        SafetyFloor(require_battery_pct_min=minimum)


def test_standstill_noise_is_not_moving() -> None:
    state = msgspec.structs.replace(PARKED, speed_mps=MOVING_THRESHOLD_MPS)
    assert evaluate_gates(STRICT, state, AT_3AM) == []


def test_battery_exactly_at_the_minimum_passes() -> None:
    state = msgspec.structs.replace(PARKED, battery_pct=35)
    assert evaluate_gates(STRICT, state, AT_3AM) == []


def test_outside_the_window_in_vehicle_local_time() -> None:
    berlin = msgspec.structs.replace(PARKED, timezone="Europe/Berlin")
    # 03:00 UTC is 04:00 in Berlin (inside); 04:30 UTC is 05:30 (outside).
    assert evaluate_gates(STRICT, berlin, AT_3AM) == []
    late = datetime(2024, 1, 15, 4, 30, tzinfo=UTC)
    assert evaluate_gates(STRICT, berlin, late) == [ReasonCode.DENY_OUTSIDE_WINDOW]


def test_unknown_free_disk_does_not_block() -> None:
    state = msgspec.structs.replace(PARKED, free_disk_mb=None)
    assert evaluate_gates(STRICT, state, AT_3AM, disk_mb_min=8000) == []


def test_an_untrusted_clock_blocks_and_keeps_the_window_shut() -> None:
    state = msgspec.structs.replace(PARKED, clock_trusted=False)
    assert evaluate_gates(STRICT, state, AT_3AM) == [
        ReasonCode.DENY_OUTSIDE_WINDOW,
        ReasonCode.UNTRUSTED_CLOCK,
    ]
    assert evaluate_gates(Policy(), state, AT_3AM) == [ReasonCode.UNTRUSTED_CLOCK]


def test_an_unknown_time_zone_cannot_judge_a_window() -> None:
    state = msgspec.structs.replace(PARKED, timezone="Mars/Olympus_Mons")
    assert evaluate_gates(STRICT, state, AT_3AM) == [
        ReasonCode.DENY_OUTSIDE_WINDOW,
        ReasonCode.UNTRUSTED_CLOCK,
    ]
    # Without a window (or with an all-day one) there is nothing to judge.
    assert evaluate_gates(Policy(), state, AT_3AM) == []
    all_day = Policy(apply_window=ApplyWindow(start_local="04:00", end_local="04:00"))
    assert evaluate_gates(all_day, state, AT_3AM) == []


def test_naive_now_is_refused_even_without_a_window() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate_gates(Policy(), PARKED, datetime(2024, 1, 1, 3, 0))


# -- properties ---------------------------------------------------------------------------

hhmm = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.sampled_from([0, 30]))
windows = st.none() | st.builds(ApplyWindow, start_local=hhmm, end_local=hhmm)
policies = st.builds(
    Policy,
    apply_window=windows,
    require_vehicle_stationary=st.booleans(),
    deny_if_autonomous_mode=st.booleans(),
    require_battery_pct_min=st.sampled_from([0.0, 35.0, 50.0, 100.0]),
)
states = st.builds(
    VehicleState,
    speed_mps=st.sampled_from([0.0, MOVING_THRESHOLD_MPS, 0.2, 15.0]),
    autonomous_mode=st.booleans(),
    battery_pct=st.sampled_from([0.0, 34.9, 35.0, 80.0, 100.0]),
    timezone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Nowhere/Atlantis"]),
    free_disk_mb=st.none() | st.sampled_from([0.0, 500.0, 8000.0, 20000.0]),
    clock_trusted=st.booleans(),
)
floors = st.builds(
    SafetyFloor,
    require_vehicle_stationary=st.booleans(),
    deny_if_autonomous_mode=st.booleans(),
    require_battery_pct_min=st.sampled_from([0.0, 20.0, 35.0, 100.0]),
)
instants = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2025, 1, 1), timezones=st.just(UTC)
)
disk_minimums = st.sampled_from([0.0, 1000.0, 8000.0])


def conditions(
    policy: Policy, state: VehicleState, now: datetime, disk_mb_min: float, floor: SafetyFloor
) -> dict[ReasonCode, bool]:
    """Each gate on its own, written out plainly (the oracle for the properties): the
    floor's demand or the policy's, whichever is stricter."""
    stationary = policy.require_vehicle_stationary or floor.require_vehicle_stationary
    manual = policy.deny_if_autonomous_mode or floor.deny_if_autonomous_mode
    battery_min = max(policy.require_battery_pct_min, floor.require_battery_pct_min)
    window = policy.apply_window
    judged = window is not None and window.start_local != window.end_local
    zone_ok = state.timezone != "Nowhere/Atlantis"
    window_open = not judged or (
        state.clock_trusted and zone_ok and in_apply_window(window, now, state.timezone)
    )
    return {
        ReasonCode.DENY_MOVING: stationary and state.speed_mps > 0.1,
        ReasonCode.DENY_AUTONOMOUS_MODE: manual and state.autonomous_mode,
        ReasonCode.DENY_LOW_BATTERY: state.battery_pct < battery_min,
        ReasonCode.DENY_OUTSIDE_WINDOW: not window_open,
        ReasonCode.INSUFFICIENT_DISK: (
            state.free_disk_mb is not None and state.free_disk_mb < disk_mb_min
        ),
        ReasonCode.UNTRUSTED_CLOCK: not state.clock_trusted or (judged and not zone_ok),
    }


@settings(deadline=None, max_examples=300)
@given(policies, states, instants, disk_minimums, floors)
def test_empty_exactly_when_every_gate_is_clear(
    policy: Policy, state: VehicleState, now: datetime, disk_mb_min: float, floor: SafetyFloor
) -> None:
    codes = evaluate_gates(policy, state, now, disk_mb_min, floor)
    expected = conditions(policy, state, now, disk_mb_min, floor)
    assert codes == [code for code in ORDER if expected[code]]
    assert (codes == []) is not any(expected.values())


WORSENINGS = [
    "moving",
    "autonomous",
    "low_battery",
    "untrusted_clock",
    "unknown_zone",
    "low_disk",
    "stricter_policy",
    "narrow_window",
]


def worsen(
    which: str, policy: Policy, state: VehicleState, disk_mb_min: float
) -> tuple[Policy, VehicleState, float]:
    replace = msgspec.structs.replace
    match which:
        case "moving":
            state = replace(state, speed_mps=state.speed_mps + 1)
        case "autonomous":
            state = replace(state, autonomous_mode=True)
        case "low_battery":
            state = replace(state, battery_pct=state.battery_pct / 2)
        case "untrusted_clock":
            state = replace(state, clock_trusted=False)
        case "unknown_zone":
            state = replace(state, timezone="Nowhere/Atlantis")
        case "low_disk":
            disk_mb_min += 5000
        case "stricter_policy":
            policy = replace(
                policy,
                require_vehicle_stationary=True,
                deny_if_autonomous_mode=True,
                require_battery_pct_min=max(policy.require_battery_pct_min, 50.0),
            )
        case "narrow_window":
            # The first minute of a window is open only when the whole window is.
            start = policy.apply_window.start_local if policy.apply_window else "03:17"
            h, m = divmod(int(start[:2]) * 60 + int(start[3:]) + 1, 60)
            end = f"{h % 24:02d}:{m:02d}"
            policy = replace(policy, apply_window=ApplyWindow(start_local=start, end_local=end))
    return policy, state, disk_mb_min


@settings(deadline=None, max_examples=300)
@given(policies, states, instants, disk_minimums, st.sampled_from(WORSENINGS), floors)
def test_adding_a_blocking_condition_never_removes_a_code(
    policy: Policy,
    state: VehicleState,
    now: datetime,
    disk_mb_min: float,
    which: str,
    floor: SafetyFloor,
) -> None:
    before = evaluate_gates(policy, state, now, disk_mb_min, floor)
    worse_policy, worse_state, worse_disk = worsen(which, policy, state, disk_mb_min)
    after = evaluate_gates(worse_policy, worse_state, now, worse_disk, floor)
    assert set(before) <= set(after)


@settings(deadline=None, max_examples=300)
@given(policies, states, instants, disk_minimums, floors, floors)
def test_a_stricter_floor_never_removes_a_code(
    policy: Policy,
    state: VehicleState,
    now: datetime,
    disk_mb_min: float,
    floor: SafetyFloor,
    other: SafetyFloor,
) -> None:
    tighter = SafetyFloor(
        require_vehicle_stationary=floor.require_vehicle_stationary
        or other.require_vehicle_stationary,
        deny_if_autonomous_mode=floor.deny_if_autonomous_mode or other.deny_if_autonomous_mode,
        require_battery_pct_min=max(floor.require_battery_pct_min, other.require_battery_pct_min),
    )
    before = evaluate_gates(policy, state, now, disk_mb_min, floor)
    assert set(before) <= set(evaluate_gates(policy, state, now, disk_mb_min, tighter))


# -- the vehicle's floor and the cloud's policy --------------------------------------------

NO_FLOOR = SafetyFloor(require_vehicle_stationary=False, deny_if_autonomous_mode=False)


def as_policy(floor: SafetyFloor, window: ApplyWindow | None) -> Policy:
    """The floor's demands as a policy of their own (under the same window)."""
    return Policy(
        apply_window=window,
        require_vehicle_stationary=floor.require_vehicle_stationary,
        deny_if_autonomous_mode=floor.deny_if_autonomous_mode,
        require_battery_pct_min=floor.require_battery_pct_min,
    )


@settings(deadline=None, max_examples=300)
@given(policies, floors, states, instants, disk_minimums)
def test_the_stricter_policy_blocks_for_everything_either_one_blocks_for(
    policy: Policy, floor: SafetyFloor, state: VehicleState, now: datetime, disk_mb_min: float
) -> None:
    merged = evaluate_gates(policy, state, now, disk_mb_min, floor)
    by_policy = evaluate_gates(policy, state, now, disk_mb_min, NO_FLOOR)
    by_floor = evaluate_gates(
        as_policy(floor, policy.apply_window), state, now, disk_mb_min, NO_FLOOR
    )
    assert set(by_policy) <= set(merged)
    assert set(by_floor) <= set(merged)
    assert set(merged) == set(by_policy) | set(by_floor)  # and for nothing else


@settings(deadline=None, max_examples=300)
@given(policies, states, instants, disk_minimums)
def test_with_the_default_floor_no_policy_lets_a_moving_or_autonomous_vehicle_apply(
    policy: Policy, state: VehicleState, now: datetime, disk_mb_min: float
) -> None:
    codes = evaluate_gates(policy, state, now, disk_mb_min)
    assert (ReasonCode.DENY_MOVING in codes) is (state.speed_mps > MOVING_THRESHOLD_MPS)
    assert (ReasonCode.DENY_AUTONOMOUS_MODE in codes) is state.autonomous_mode


@settings(deadline=None, max_examples=300)
@given(policies, floors, floors)
def test_stricter_only_tightens(policy: Policy, floor: SafetyFloor, other: SafetyFloor) -> None:
    merged = stricter(policy, floor)
    assert merged.apply_window == policy.apply_window
    for p in (policy, as_policy(floor, policy.apply_window)):
        assert merged.require_vehicle_stationary >= p.require_vehicle_stationary
        assert merged.deny_if_autonomous_mode >= p.deny_if_autonomous_mode
        assert merged.require_battery_pct_min >= p.require_battery_pct_min
    assert stricter(merged, floor) == merged  # the floor once is the floor
    # Floors in either order give the same policy.
    assert stricter(stricter(policy, floor), other) == stricter(stricter(policy, other), floor)
    assert stricter(policy, NO_FLOOR) == policy
