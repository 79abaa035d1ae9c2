"""Apply windows: the vehicle-local hours in which an apply may start."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from muto.domain.desired import ApplyWindow


def in_apply_window(window: ApplyWindow | None, now: datetime, timezone: str) -> bool:
    """Is `now` inside `window`, read on the wall clock of `timezone`?

    No window is always open; equal start and end is open all day; start < end is
    [start, end); start > end crosses midnight: open from start, or before end.
    Raises ValueError for a naive `now` or an unknown time zone.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        # A naive time would be read in the host's zone, not the vehicle's: refuse it.
        raise ValueError(f"now must be timezone-aware, got naive {now.isoformat()}")
    local = now.astimezone(vehicle_zone(timezone))
    if window is None:
        return True
    start, end = parse_hhmm(window.start_local), parse_hhmm(window.end_local)
    # The wall clock, not the instant: a 02:00 window means 02:00 on the clock on the
    # wall, including on DST days (a skipped hour simply never matches).
    wall = local.time().replace(tzinfo=None)
    if start == end:
        return True
    if start < end:
        return start <= wall < end
    return wall >= start or wall < end


def vehicle_zone(timezone: str) -> ZoneInfo:
    """The IANA zone named `timezone`; ValueError naming it when it is not one."""
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {timezone!r}") from None


def parse_hhmm(text: str) -> time:
    hours, _, minutes = text.partition(":")
    try:
        return time(int(hours), int(minutes))
    except ValueError:
        raise ValueError(f"invalid HH:MM time {text!r}") from None
