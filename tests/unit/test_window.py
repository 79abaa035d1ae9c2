from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muto.domain.desired import ApplyWindow
from muto.domain.window import in_apply_window

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]


def window(start: str, end: str) -> ApplyWindow:
    return ApplyWindow(start_local=start, end_local=end)


def utc(hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(2024, 1, 15, hh, mm, ss, tzinfo=UTC)


def test_no_window_is_always_open() -> None:
    assert in_apply_window(None, utc(12, 0), "UTC")


def test_equal_start_and_end_is_open_all_day() -> None:
    assert all(in_apply_window(window("03:00", "03:00"), utc(h, 30), "UTC") for h in range(24))


@pytest.mark.parametrize(
    ("hh", "mm", "ss", "inside"),
    [(1, 59, 59, False), (2, 0, 0, True), (4, 59, 59, True), (5, 0, 0, False), (12, 0, 0, False)],
)
def test_a_daytime_window_is_start_inclusive_end_exclusive(
    hh: int, mm: int, ss: int, inside: bool
) -> None:
    assert in_apply_window(window("02:00", "05:00"), utc(hh, mm, ss), "UTC") is inside


@pytest.mark.parametrize(
    ("hh", "mm", "inside"),
    [(21, 59, False), (22, 0, True), (23, 59, True), (0, 0, True), (3, 59, True), (4, 0, False)],
)
def test_a_window_crossing_midnight(hh: int, mm: int, inside: bool) -> None:
    assert in_apply_window(window("22:00", "04:00"), utc(hh, mm), "UTC") is inside


def test_the_vehicle_local_clock_decides() -> None:
    # 01:30 UTC in January is 02:30 in Berlin and 20:30 (the day before) in New York.
    assert in_apply_window(window("02:00", "05:00"), utc(1, 30), "Europe/Berlin")
    assert not in_apply_window(window("02:00", "05:00"), utc(1, 30), "America/New_York")
    assert not in_apply_window(window("02:00", "05:00"), utc(1, 30), "UTC")


def test_the_offset_of_now_does_not_matter_only_the_instant() -> None:
    instant = utc(1, 30)
    elsewhere = instant.astimezone(ZoneInfo("Asia/Tokyo"))
    for zone in ZONES:
        assert in_apply_window(window("02:00", "05:00"), instant, zone) == in_apply_window(
            window("02:00", "05:00"), elsewhere, zone
        )


def test_a_skipped_dst_hour_never_matches() -> None:
    # Berlin springs forward at 01:00 UTC on 2024-03-31: 02:00-03:00 local never happens.
    start = datetime(2024, 3, 30, 22, 0, tzinfo=UTC)
    minutes = (start + timedelta(minutes=m) for m in range(8 * 60))
    assert not any(in_apply_window(window("02:00", "03:00"), t, "Europe/Berlin") for t in minutes)


def test_a_repeated_dst_hour_matches_twice() -> None:
    # New York falls back at 06:00 UTC on 2024-11-03: 01:00-02:00 local happens twice.
    first, second = (
        datetime(2024, 11, 3, 5, 30, tzinfo=UTC),
        datetime(2024, 11, 3, 6, 30, tzinfo=UTC),
    )
    assert in_apply_window(window("01:00", "02:00"), first, "America/New_York")
    assert in_apply_window(window("01:00", "02:00"), second, "America/New_York")


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        in_apply_window(window("02:00", "05:00"), datetime(2024, 1, 1, 3, 0), "UTC")
    with pytest.raises(ValueError, match="timezone-aware"):
        in_apply_window(None, datetime(2024, 1, 1, 3, 0), "UTC")


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "../etc/passwd", "Europe", "zone.tab"])
def test_an_unknown_time_zone_is_named(zone: str) -> None:
    with pytest.raises(ValueError, match="unknown time zone") as caught:
        in_apply_window(window("02:00", "05:00"), utc(3, 0), zone)
    assert repr(zone) in str(caught.value)


hhmm = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59))
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
)
zones = st.sampled_from(ZONES)


@settings(deadline=None)
@given(hhmm, hhmm, instants, zones)
def test_crossing_midnight_is_the_complement_of_the_inner_window(
    start: str, end: str, now: datetime, zone: str
) -> None:
    if start == end:
        return
    late, early = max(start, end), min(start, end)
    crossing = in_apply_window(window(late, early), now, zone)
    assert crossing is not in_apply_window(window(early, late), now, zone)


@settings(deadline=None)
@given(hhmm, hhmm, instants, zones)
def test_agrees_with_walking_the_window_minute_by_minute(
    start: str, end: str, now: datetime, zone: str
) -> None:
    def minute(text: str) -> int:
        return int(text[:2]) * 60 + int(text[3:])

    open_minutes, m = set(), minute(start)
    while True:
        open_minutes.add(m)
        m = (m + 1) % 1440
        if m in (minute(end), minute(start)):
            break
    if start == end:
        open_minutes = set(range(1440))
    local = now.astimezone(ZoneInfo(zone))
    expected = local.hour * 60 + local.minute in open_minutes
    assert in_apply_window(window(start, end), now, zone) is expected


dst_days = st.datetimes(
    min_value=datetime(2024, 3, 9), max_value=datetime(2024, 4, 1), timezones=st.just(UTC)
) | st.datetimes(
    min_value=datetime(2024, 10, 26), max_value=datetime(2024, 11, 4), timezones=st.just(UTC)
)


@settings(deadline=None)
@given(hhmm, hhmm, dst_days, st.sampled_from(["Europe/Berlin", "America/New_York"]))
def test_dst_transitions_do_not_crash(start: str, end: str, now: datetime, zone: str) -> None:
    assert isinstance(in_apply_window(window(start, end), now, zone), bool)
