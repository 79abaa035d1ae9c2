"""The courier: delivers the journal's outbox to the cloud, strictly in order.

Invariants: only the oldest report is ever in flight; it leaves the outbox only when
the sink acknowledged it (ReportDelivered) or refused it for good (ReportDropped), so
a restart resends exactly what was not acknowledged; after a failure the courier waits
(capped, jittered backoff) unless woken by news (a new report, a reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field
from typing import Protocol

from muto.agent.clock import Clock
from muto.agent.journal import Journal
from muto.agent.journal.events import ReportDelivered, ReportDropped
from muto.agent.kill import KillSwitch
from muto.agent.transport.http import Delivery, RetryLater

logger = logging.getLogger("muto.agent")


class ReportSink(Protocol):
    async def deliver(self, kind: str, body: bytes) -> tuple[Delivery, str]: ...


@dataclass
class Courier:
    journal: Journal
    sink: ReportSink | None  # None: nowhere to deliver (reports wait in the journal)
    clock: Clock
    via: str = "http"
    kill: KillSwitch = field(default_factory=KillSwitch)
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    delivered: int = 0
    woken: asyncio.Event = field(default_factory=asyncio.Event)  # news: try now
    _busy: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The cloud's Retry-After: nothing is sent before this monotonic time, even when
    # woken by a new report.
    _not_before: float = 0.0

    def wake(self) -> None:
        self.woken.set()

    async def run(self) -> None:
        failures = 0
        while True:
            self.woken.clear()
            try:
                delivered = await self.drain()
            except Exception:  # a sink's bug or a journal that cannot write: back off
                logger.exception("delivering reports failed")
                delivered = False
            failures = 0 if delivered else failures + 1
            delay = None
            if failures:
                ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** min(failures - 1, 16))
                delay = ceiling * self.rng.uniform(0.5, 1.0)
                delay = max(delay, self._not_before - self.clock.monotonic())
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel
            # that lands as the event is set, and the agent never stops.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.woken.wait()

    async def flare(self, kind: str, body: bytes) -> bool:
        """Deliver one report that is not in the journal, because the journal could not
        take it (a full disk): once, best effort, so that the cloud hears why the vehicle
        is stuck instead of nothing. Not retried; the agent sends a newer one at its next
        health tick while the journal still refuses. The outbox, when it can move again,
        goes on in order: the report's journal place (its number the last position) puts it
        after every report queued before it and before the next (report_order)."""
        if self.sink is None or self.clock.monotonic() < self._not_before:
            return False
        try:
            verdict, detail = await self.sink.deliver(kind, body)
        except Exception as exc:  # best effort: the next tick tries again
            logger.debug("an unjournaled %s report was not delivered: %s", kind, exc)
            return False
        if verdict != "ack":
            logger.debug("an unjournaled %s report was not delivered: %s", kind, detail)
            if isinstance(detail, RetryLater):  # the cloud asked to wait: so does the outbox
                self._not_before = self.clock.monotonic() + detail.after_s
        return verdict == "ack"

    async def drain(self) -> bool:
        """Deliver until the outbox is empty (True) or a delivery must wait (False)."""
        if self.sink is None:
            return not self.journal.state.outbox
        async with self._busy:
            if self.clock.monotonic() < self._not_before:
                return False  # the cloud asked us to wait
            while self.journal.state.outbox:
                head = next(iter(self.journal.state.outbox.values()))
                self.kill("deliver")
                verdict, detail = await self.sink.deliver(head.kind, bytes(head.body))
                if verdict == "retry":
                    logger.debug("report %s not delivered yet: %s", head.report_id, detail)
                    if isinstance(detail, RetryLater):  # capped by retry_after_s
                        self._not_before = self.clock.monotonic() + detail.after_s
                    return False
                if head.report_id not in self.journal.state.outbox:
                    continue  # superseded while in flight (a newer health report)
                if verdict == "ack":
                    self.journal.append(
                        ReportDelivered(at=self.clock.now(), report_id=head.report_id, via=self.via)
                    )
                    self.delivered += 1
                else:
                    logger.warning("report %s refused for good: %s", head.report_id, detail)
                    self.journal.append(
                        ReportDropped(at=self.clock.now(), report_id=head.report_id, reason=detail)
                    )
                self.kill("deliver:done")
            return True
