"""How a step's awaited adapter call ends: finished despite cancellation, and any
exception turned into a reason code."""

from __future__ import annotations

import asyncio
from typing import Any

from muto.agent.clock import Clock
from muto.agent.journal.events import CrashLoopDetected, Event, ReadinessTimedOut
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode


async def settle(task: asyncio.Future[Any]) -> bool:
    """Wait for `task` to finish even if we are cancelled meanwhile; True if we were."""
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            cancelled = True
    return cancelled


def failure_of(task: asyncio.Future[None], code: ReasonCode) -> ReasonError | None:
    exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
    return None if exc is None else as_reason(exc, code)


def as_reason(exc: BaseException, code: ReasonCode) -> ReasonError:
    """An adapter's unexpected exception still fails with a code, never a traceback."""
    if isinstance(exc, ReasonError):
        return exc
    return ReasonError(code, f"{type(exc).__name__}: {exc}")


def not_ready(key: str, reason: ReasonError, clock: Clock) -> Event:
    if reason.code == ReasonCode.CRASH_LOOP_DETECTED:
        return CrashLoopDetected(
            at=clock.now(), release_key=key, during="readiness", detail=reason.detail
        )
    return ReadinessTimedOut(at=clock.now(), release_key=key, detail=reason.detail)
