"""Publishes retained desired/notify messages from the outbox while the link is up.

It follows the event log by polling (the same loop serves SQLite, which has no
subscriptions, and PostgreSQL written by other API processes). Each pass publishes one
coalesced batch, waits for every PUBACK, then stores the position (see outbox.py).

A pass that finds no assignment (the log moved by reports) publishes nothing and moves
the position in memory only, storing it at most every `idle_store_s`: during a wave,
storing it on every pass was a write transaction per report, in a loop that never
slept, competing with the reports for the database's one writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiomqtt

from muto.cloud.mqtt.outbox import Due, Outbox
from muto.domain.messages import TOPICS, DesiredNotify, Leaf, vehicle_topic
from muto.domain.wire import encode

logger = logging.getLogger("muto.mqtt")
SPEC = TOPICS[Leaf.DESIRED_NOTIFY]


class Notifier:
    def __init__(
        self, outbox: Outbox, tenant: str, poll_s: float = 0.2, idle_store_s: float = 1.0
    ) -> None:
        self.outbox = outbox
        self.tenant = tenant
        self.poll_s = poll_s
        self.idle_store_s = idle_store_s
        self.published = 0  # notifies acknowledged by the broker since start
        self.passes = 0  # passes over the outbox finished (tests wait on them, not on time)
        self._position: int | None = None
        self._stored: int | None = None  # the position last stored
        self._stored_at = 0.0  # monotonic

    async def run(self, client: aiomqtt.Client, stop: asyncio.Event, flush_s: float) -> None:
        """Publish what is due until `stop` is set; then a last pass of at most `flush_s`
        seconds (what it cannot finish stays due: the position was not advanced)."""
        # Re-read: the last session may have ended mid-advance.
        self._position = self._stored = None
        while not stop.is_set():
            try:
                busy = await self._publish_due(client)
            except aiomqtt.MqttError:
                raise  # the link is down: the bridge reconnects
            except Exception:  # a database hiccup: logged, retried on the next tick
                logger.exception("notifier pass failed")
                self._position = None
                busy = False
            self.passes += 1
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_s)
        try:
            async with asyncio.timeout(flush_s):
                while await self._publish_due(client):
                    pass
                await self._store(force=True)
        except TimeoutError:
            logger.warning("stopping with notifies still due: they are published next start")

    async def _publish_due(self, client: aiomqtt.Client) -> bool:
        """One batch; True when it published some (more may be due)."""
        if not await asyncio.to_thread(self.outbox.is_leader):
            return False
        if self._position is None:
            self._position = self._stored = await asyncio.to_thread(self.outbox.position)
        due: Due = await asyncio.to_thread(self.outbox.due, self._position)
        if due.through <= self._position:
            await self._store(force=False)  # an idle position not stored yet
            return False
        if not due.notifies:  # only other events: nothing to publish, nothing was due
            self._position = due.through
            await self._store(force=False)
            return False
        # One message per vehicle topic in a batch, so their order does not matter; the
        # first failure cancels the rest (the link is down: all of them are retried).
        try:
            async with asyncio.TaskGroup() as publishing:
                for notify in due.notifies:
                    publishing.create_task(self._publish(client, notify))
        except* aiomqtt.MqttError as failed:
            raise failed.exceptions[0] from None
        self._position = due.through
        await self._store(force=True)
        self.published += len(due.notifies)
        if due.notifies:
            logger.info("published %d notifies through %d", len(due.notifies), due.through)
        return True

    async def _store(self, force: bool) -> None:
        """Store the position reached (every notify up to it was acknowledged)."""
        position = self._position
        if position is None or position == self._stored:
            return
        if not force and time.monotonic() - self._stored_at < self.idle_store_s:
            return
        await asyncio.to_thread(self.outbox.advance, position)
        self._stored, self._stored_at = position, time.monotonic()

    async def _publish(self, client: aiomqtt.Client, notify: DesiredNotify) -> None:
        topic = vehicle_topic(self.tenant, notify.vehicle_id, Leaf.DESIRED_NOTIFY)
        await client.publish(topic, encode(notify), qos=SPEC.qos, retain=SPEC.retained)
