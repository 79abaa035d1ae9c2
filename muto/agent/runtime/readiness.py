"""Waiting for readiness: poll a check until it passes, the deadline passes, or the
crash-loop rule trips, whichever comes first."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import HealthModel

# Returns None when ready, else why not (kept for the timeout's detail).
ReadinessCheck = Callable[[], Awaitable[str | None]]
NOT_CHECKED = "no readiness check finished"


async def poll_until_ready(
    check: ReadinessCheck,
    crash_looping: Callable[[], bool],
    health: HealthModel,
    poll_sec: float,
) -> None:
    """Raises ReasonError READINESS_TIMEOUT after health.readiness_timeout_sec or
    CRASH_LOOP_DETECTED; a check still running at the deadline is cancelled."""
    deadline = time.monotonic() + health.readiness_timeout_sec
    why = NOT_CHECKED
    while True:
        if crash_looping():
            raise ReasonError(
                ReasonCode.CRASH_LOOP_DETECTED,
                f"{health.crash_loop_restarts} restarts within {health.crash_loop_window_sec}s",
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            async with asyncio.timeout(remaining):  # not wait_for: it can lose a cancel
                outcome = await check()
        except TimeoutError:
            if why == NOT_CHECKED:  # else the last finished check says more
                why = "readiness check still running at the deadline"
            break
        if outcome is None:
            return
        why = outcome
        await asyncio.sleep(min(poll_sec, max(deadline - time.monotonic(), 0)))
    raise ReasonError(
        ReasonCode.READINESS_TIMEOUT,
        f"not ready after {health.readiness_timeout_sec}s: {why}",
    )
