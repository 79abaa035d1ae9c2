from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from muto.domain.compat import VehicleFacts, check_compatibility
from muto.domain.reasons import ReasonCode
from muto.domain.release import StackRelease
from muto.domain.vehicle_state import VehicleState
from tests.support.releases import stack_release

ORDER = [
    ReasonCode.INCOMPATIBLE_MODEL,
    ReasonCode.INCOMPATIBLE_OS,
    ReasonCode.INCOMPATIBLE_ROS,
    ReasonCode.INSUFFICIENT_DISK,
]


def release(
    models: list[str] | None = None,
    os: list[str] | None = None,
    ros: list[str] | None = None,
    disk_mb_min: int = 0,
) -> StackRelease:
    return stack_release(
        "autonomy-core",
        "1.0.0",
        [],
        models=models or [],
        os=os or [],
        ros_distros=ros or [],
        disk_mb_min=disk_mb_min,
    )


SEED_RELEASE = release(["vehicle-v3"], ["ubuntu-22.04"], ["humble"], 8000)
SEED_VEHICLE = VehicleFacts("vehicle-v3", "ubuntu-22.04", "humble", 9000.0)


def test_a_matching_vehicle_is_compatible() -> None:
    assert check_compatibility(SEED_RELEASE, SEED_VEHICLE) == []


def test_empty_lists_mean_any() -> None:
    assert check_compatibility(release(), VehicleFacts("anything", "any-os", "jazzy", 1.0)) == []
    assert check_compatibility(release(), VehicleFacts()) == []


def test_each_mismatch_has_its_code_in_a_stable_order() -> None:
    facts = VehicleFacts("vehicle-v2", "ubuntu-20.04", "foxy", 10.0)
    assert check_compatibility(SEED_RELEASE, facts) == ORDER


def test_an_unknown_attribute_fails_a_restricted_release() -> None:
    assert check_compatibility(SEED_RELEASE, VehicleFacts(free_disk_mb=9000.0)) == ORDER[:3]


def test_unknown_free_disk_is_not_a_verdict() -> None:
    facts = VehicleFacts("vehicle-v3", "ubuntu-22.04", "humble", None)
    assert check_compatibility(SEED_RELEASE, facts) == []


def test_disk_exactly_at_the_minimum_is_enough() -> None:
    facts = VehicleFacts("vehicle-v3", "ubuntu-22.04", "humble", 8000.0)
    assert check_compatibility(SEED_RELEASE, facts) == []


def test_facts_come_from_the_vehicle_state() -> None:
    state = VehicleState(model="m", os="o", ros_distro="r", free_disk_mb=5.0)
    assert VehicleFacts.of(state) == VehicleFacts("m", "o", "r", 5.0)


names = st.sampled_from(["a", "b", "c"])
restrictions = st.lists(names, max_size=3, unique=True)
maybe_names = st.none() | names
disks = st.none() | st.floats(min_value=0, max_value=20_000, allow_nan=False)


@settings(deadline=None)
@given(
    restrictions,
    restrictions,
    restrictions,
    st.integers(0, 20_000),
    maybe_names,
    maybe_names,
    maybe_names,
    disks,
)
def test_each_code_appears_exactly_when_its_rule_fails(
    models: list[str],
    oses: list[str],
    distros: list[str],
    disk_min: int,
    model: str | None,
    os: str | None,
    distro: str | None,
    disk: float | None,
) -> None:
    codes = check_compatibility(
        release(models, oses, distros, disk_min), VehicleFacts(model, os, distro, disk)
    )
    expected = {
        ReasonCode.INCOMPATIBLE_MODEL: bool(models) and model not in models,
        ReasonCode.INCOMPATIBLE_OS: bool(oses) and os not in oses,
        ReasonCode.INCOMPATIBLE_ROS: bool(distros) and distro not in distros,
        ReasonCode.INSUFFICIENT_DISK: disk is not None and disk < disk_min,
    }
    assert codes == [code for code in ORDER if expected[code]]
