"""An online vehicle silent for three heartbeat intervals is shown stale (issue #14, 15)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from muto.domain.presence import DEFAULT_HEARTBEAT_S, shown_presence

T = datetime(2026, 1, 1, tzinfo=UTC)


@given(
    st.sampled_from(["online", "offline", None]),
    st.integers(0, 10_000_000),
    st.none() | st.integers(100, 3_600_000),
)
def test_stale_exactly_when_online_and_silent_for_three_intervals(
    state: str | None, silent_ms: int, heartbeat_ms: int | None
) -> None:
    heartbeat_s = heartbeat_ms / 1000 if heartbeat_ms else None
    shown = shown_presence(state, T, heartbeat_s, T + timedelta(milliseconds=silent_ms))
    interval_ms = heartbeat_ms or DEFAULT_HEARTBEAT_S * 1000
    stale = state == "online" and silent_ms > 3 * interval_ms
    assert shown == ("stale" if stale else state)


def test_never_heard_is_shown_as_stored() -> None:
    assert shown_presence("online", None, 1.0, T + timedelta(days=1)) == "online"
