"""Publishes retained desired/notify messages from the outbox while the link is up.

It follows the event log by polling (the same loop serves SQLite, which has no
subscriptions, and PostgreSQL written by other API processes). Each pass publishes one
coalesced batch, waits for every PUBACK, then stores the position (see outbox.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiomqtt

from muto.cloud.mqtt.outbox import Due, Outbox
from muto.domain.messages import TOPICS, DesiredNotify, Leaf, vehicle_topic
from muto.domain.wire import encode

logger = logging.getLogger("muto.mqtt")
SPEC = TOPICS[Leaf.DESIRED_NOTIFY]


class Notifier:
    def __init__(self, outbox: Outbox, tenant: str, poll_s: float = 0.2) -> None:
        self.outbox = outbox
        self.tenant = tenant
        self.poll_s = poll_s
        self.published = 0  # notifies acknowledged by the broker since start
        self.passes = 0  # passes over the outbox finished (tests wait on them, not on time)
        self._position: int | None = None

    async def run(self, client: aiomqtt.Client, stop: asyncio.Event, flush_s: float) -> None:
        """Publish what is due until `stop` is set; then a last pass of at most `flush_s`
        seconds (what it cannot finish stays due: the position was not advanced)."""
        self._position = None  # re-read: the last session may have ended mid-advance
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
        except TimeoutError:
            logger.warning("stopping with notifies still due: they are published next start")

    async def _publish_due(self, client: aiomqtt.Client) -> bool:
        """One batch; True when it moved the position (more may be due)."""
        if not await asyncio.to_thread(self.outbox.is_leader):
            return False
        if self._position is None:
            self._position = await asyncio.to_thread(self.outbox.position)
        due: Due = await asyncio.to_thread(self.outbox.due, self._position)
        if due.through <= self._position:
            return False
        # One message per vehicle topic in a batch, so their order does not matter; the
        # first failure cancels the rest (the link is down: all of them are retried).
        try:
            async with asyncio.TaskGroup() as publishing:
                for notify in due.notifies:
                    publishing.create_task(self._publish(client, notify))
        except* aiomqtt.MqttError as failed:
            raise failed.exceptions[0] from None
        await asyncio.to_thread(self.outbox.advance, due.through)
        self._position = due.through
        self.published += len(due.notifies)
        if due.notifies:
            logger.info("published %d notifies through %d", len(due.notifies), due.through)
        return True

    async def _publish(self, client: aiomqtt.Client, notify: DesiredNotify) -> None:
        topic = vehicle_topic(self.tenant, notify.vehicle_id, Leaf.DESIRED_NOTIFY)
        await client.publish(topic, encode(notify), qos=SPEC.qos, retain=SPEC.retained)
