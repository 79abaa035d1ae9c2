"""An online vehicle silent for three heartbeat intervals is shown stale (issue #14, 15);
the interval a presence announces is bounded as the agent's configuration is, and one
stored before that bound is judged without failing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from muto.domain.desired import AgentConfig
from muto.domain.messages import Presence
from muto.domain.presence import DEFAULT_HEARTBEAT_S, MAX_HEARTBEAT_S, shown_presence
from muto.domain.wire import WireError, convert, decode

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


BEAT = b'{"schema":"muto.presence.v1","vehicleId":"v1","state":"online","heartbeatS":%s}'


@pytest.mark.parametrize("heartbeat", [b"1e14", b"3600.5", b"0", b"-1"])
def test_a_presence_announcing_an_interval_out_of_range_is_refused(heartbeat: bytes) -> None:
    with pytest.raises(WireError) as refused:
        decode(BEAT % heartbeat, Presence)
    assert refused.value.path == "$.heartbeatS"


def test_the_presence_bound_is_the_agent_configs() -> None:
    assert decode(BEAT % str(MAX_HEARTBEAT_S).encode(), Presence).heartbeat_s == MAX_HEARTBEAT_S
    with pytest.raises(WireError):
        convert({"heartbeatS": MAX_HEARTBEAT_S + 1}, AgentConfig)


@given(st.floats(allow_nan=True, allow_infinity=True), st.integers(0, 10_000_000))
def test_a_stored_interval_the_contract_refuses_is_judged_as_none_announced(
    heartbeat_s: float, silent_s: int
) -> None:
    """A store written before presence was bounded may hold 1e14 (or inf, or NaN on
    PostgreSQL): judging it must not overflow, and it counts as the default interval."""
    shown = shown_presence("online", T, heartbeat_s, T + timedelta(seconds=silent_s))
    interval = heartbeat_s if 0 < heartbeat_s <= MAX_HEARTBEAT_S else DEFAULT_HEARTBEAT_S
    assert shown == ("stale" if silent_s > 3 * interval else "online")
