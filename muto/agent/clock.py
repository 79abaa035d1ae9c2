"""The agent's clocks: wall time (timezone-aware, for gates, expiry and reports) and a
monotonic one (for durations). Injectable, so a simulator can run faster than real time."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()
