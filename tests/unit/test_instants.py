"""A time a person names: one reading for the audit, the API and the journal tools."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from muto.domain.instants import InstantError, parse_instant

OFFSETS = st.builds(
    timezone,
    st.timedeltas(
        min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
    ),
)


@given(st.datetimes(timezones=OFFSETS))
def test_a_time_with_its_offset_is_that_instant(at: datetime) -> None:
    parsed = parse_instant(at.isoformat())
    assert parsed == at and parsed.utcoffset() == at.utcoffset()


def test_z_and_offsets() -> None:
    assert parse_instant("2026-03-03T14:02:00Z") == datetime(2026, 3, 3, 14, 2, tzinfo=UTC)
    east = parse_instant("2026-03-03T15:02:00+01:00")
    assert east.utcoffset() == timedelta(hours=1)
    assert east == datetime(2026, 3, 3, 14, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("2026-03-03T14:02", "2026-03-03T14:02:00Z"),
        ("2026-03-03", "2026-03-03T00:00:00Z"),
        ("2026-03-03 14:02:00", "2026-03-03T14:02:00Z"),
    ],
)
def test_a_time_without_an_offset_is_refused_saying_how_to_write_it(
    text: str, written: str
) -> None:
    with pytest.raises(InstantError, match=f"'{text}' has no UTC offset.*e.g. {written} for UTC"):
        parse_instant(text)
    assert parse_instant(written)  # the hint is a time it reads


def test_on_the_vehicle_a_time_without_an_offset_is_local() -> None:
    local = parse_instant("2026-03-03T14:02", local_if_no_offset=True)
    assert local.utcoffset() is not None
    assert local.replace(tzinfo=None) == datetime(2026, 3, 3, 14, 2)
    assert local == datetime(2026, 3, 3, 14, 2).astimezone()


@pytest.mark.parametrize("text", ["garbage", "", "14:02 on 3 March", "2026-13-01T00:00Z"])
def test_garbage_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(InstantError, match=r"is not an ISO 8601 time, e\.g\. 2026-01-01T00:00:00Z"):
        parse_instant(text)
