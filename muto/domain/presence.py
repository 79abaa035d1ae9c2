"""When an online vehicle counts as stale: silent for three heartbeat intervals.

Presence events record changes only (online, offline); heartbeats are periodic and
update a read model instead (the cloud's time of the last one and the interval the
vehicle announced), so staleness is judged when someone asks, never stored as an event.
"""

from __future__ import annotations

from datetime import datetime, timedelta

STALE_AFTER_HEARTBEATS = 3
DEFAULT_HEARTBEAT_S = 30.0  # AgentConfig's default: agents that do not announce theirs
# The longest heartbeat interval: AgentConfig's cap, and the most a presence may announce.
MAX_HEARTBEAT_S = 3600


def shown_presence(
    state: str | None, last_heard: datetime | None, heartbeat_s: float | None, now: datetime
) -> str | None:
    """`state`, except "stale" for an online vehicle last heard more than three of its
    heartbeat intervals before `now`."""
    if state != "online" or last_heard is None:
        return state
    silent = now - last_heard
    allowed = timedelta(seconds=STALE_AFTER_HEARTBEATS * announced(heartbeat_s))
    return "stale" if silent > allowed else state


def announced(heartbeat_s: float | None) -> float:
    """The interval to judge by: a stored interval the contract refuses (out of range,
    kept before presence was bounded) counts as none announced, so it cannot overflow
    the judgement of the whole fleet's listing (NaN fails the comparison too)."""
    if heartbeat_s is not None and 0 < heartbeat_s <= MAX_HEARTBEAT_S:
        return heartbeat_s
    return DEFAULT_HEARTBEAT_S
