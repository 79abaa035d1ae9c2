"""The one way tests wait: poll until a condition holds, never a timed assertion. The
timeout only bounds a hang on a loaded machine; a failure names what was awaited (and,
through `say`, what was last seen). Conditions that must prove something did *not*
happen wait on a counted pass of the component (Agent.passes, Notifier.passes, the
controller's ticks), never on a sleep."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

import httpx

WAIT_S = 60.0
# A check that cannot reach a server (still starting, restarting) says "not yet".
NOT_YET: tuple[type[BaseException], ...] = (httpx.HTTPError, OSError)

Say = str | Callable[[], str]


def _said(what: Say) -> str:
    return what() if callable(what) else what


def eventually(
    check: Callable[[], Any],
    what: Say,
    timeout: float = WAIT_S,
    *,
    interval: float = 0.1,
    tolerate: tuple[type[BaseException], ...] = NOT_YET,
) -> Any:
    """Call `check` until it returns something truthy, and return that. Exceptions of
    the `tolerate` types count as "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except tolerate:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {_said(what)}")
        time.sleep(interval)


async def until(
    check: Callable[[], Any],
    what: Say,
    timeout: float = WAIT_S,
    *,
    interval: float = 0.1,
    in_thread: bool = True,
    tolerate: tuple[type[BaseException], ...] = NOT_YET,
) -> Any:
    """`eventually` for a test on an event loop. `check` is called on a worker thread
    (`in_thread`, the default), so a blocking one (a database query, a blocking HTTP
    call) never stalls the agents or bridges sharing the loop; a coroutine it returns is
    awaited on the loop."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = await asyncio.to_thread(check) if in_thread else check()
            if inspect.isawaitable(found):
                found = await found
        except tolerate:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {_said(what)}")
        await asyncio.sleep(interval)
