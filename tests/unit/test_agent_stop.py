"""An agent's loops stop when cancelled, even when the cancel lands as they are woken:
on Python 3.11 `asyncio.wait_for` swallows such a cancel, and the loop ran on for ever
(an agent stopped right after a rollback notify hung in Agent.stop)."""

from __future__ import annotations

import asyncio

from muto.agent.clock import SystemClock
from muto.agent.journal import Journal
from muto.agent.transport.courier import Courier


class Waiting(Courier):
    """A courier whose deliveries must wait (the cloud unreachable): it backs off with
    a timeout between attempts."""

    async def drain(self) -> bool:
        return False


def test_the_courier_stops_when_cancelled_as_it_is_woken() -> None:
    async def scenario() -> None:
        courier = Waiting(journal=Journal.memory(), sink=None, clock=SystemClock())
        running = asyncio.create_task(courier.run())
        for _ in range(3):  # it drained and now waits for a wake
            await asyncio.sleep(0)
        courier.wake()
        running.cancel()
        done, _ = await asyncio.wait({running}, timeout=5)
        assert running in done, "the courier kept running after it was cancelled"
        assert running.cancelled()

    asyncio.run(scenario())
