"""The cloud's MQTT bridge: one broker link carrying the notifier and the listener.

Runs as one asyncio task in a process that does duties (`--role worker` or `all`). It
connects only while it holds the listener lease: the cloud's persistent MQTT session
(its client id, the reports queued for it) belongs to one process of a deployment at a
time; a standby takes the session over when the holder dies. The link ends at once
when the lease is lost. The notifier's lease is taken within a session and given back
whenever one ends, so that it goes with the listener lease: a process that left the
broker holds neither, and the next holder of the listener lease publishes. While the
broker is unreachable it retries with capped, jittered exponential backoff and the API
keeps serving; `connected` says whether the link is up (GET /healthz shows it). `stop()`
publishes the notifies still due, waits for their acknowledgements (at most `flush_s`),
then disconnects cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

import aiomqtt

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.mqtt.link import Backoff, cloud_client
from muto.cloud.mqtt.listener import Listener
from muto.cloud.mqtt.notifier import Notifier
from muto.cloud.mqtt.outbox import Outbox
from muto.domain.broker import Broker
from muto.domain.messages import Leaf, RefreshRequest, RefreshResult, vehicle_topic
from muto.domain.wire import encode
from muto.projections.locks import Lease, Lock

logger = logging.getLogger("muto.mqtt")
LEASE_CHECK_S = 1.0  # a standby asks for the lease, a holder checks it, this often


class LeaseLost(Exception):
    pass


class Bridge:
    def __init__(
        self,
        plane: ControlPlane,
        *,
        backoff: Backoff | None = None,
        poll_s: float = 0.2,
        flush_s: float = 5.0,
    ) -> None:
        settings = plane.settings
        if not settings.mqtt_url:
            raise ValueError("the MQTT bridge needs settings.mqtt_url")
        self.address = Broker.parse(settings.mqtt_url)
        # Fixed per deployment, so the broker keeps its session (and queues reports)
        # across restarts and hands it to the standby: only the listener lease's holder
        # connects. Two deployments on one broker need distinct ids (?clientId=).
        self.client_id = self.address.client_id or f"muto-cloud-{settings.tenant}"
        self.backoff = backoff or Backoff()
        self.flush_s = flush_s
        self._stop = asyncio.Event()
        self.outbox = Outbox(plane)
        self.notifier = Notifier(self.outbox, settings.tenant, poll_s)
        self.listener = Listener(plane, stopping=self._stop)
        self.lease = Lease(plane.views.store.engine, Lock.LISTENER)
        self.connected = False
        self._client: aiomqtt.Client | None = None  # while connected
        self.connections = 0  # successful connects since start
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="muto-mqtt-bridge")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            # The flush is bounded inside the session; this bound covers a connect
            # attempt that hangs (an unreachable broker) and the clean disconnect.
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.flush_s + 5)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        await asyncio.to_thread(self.outbox.release)
        await asyncio.to_thread(self.lease.release)

    async def refresh(self, vehicle_id: str, timeout_s: float) -> RefreshResult | None:
        """Ask a vehicle to re-publish its snapshots (`cmd/refresh`, read-only) and wait
        for its `evt/refresh_result` with the same request id: None if it did not answer
        within `timeout_s`. ConnectionError when the broker link is down."""
        client = self._client
        if client is None:
            raise ConnectionError("the control plane is not connected to its MQTT broker")
        request_id = f"refresh-{uuid.uuid4().hex[:16]}"
        answer: asyncio.Future[RefreshResult] = asyncio.get_running_loop().create_future()
        self.listener.refreshes[request_id] = (vehicle_id, answer)
        try:
            topic = vehicle_topic(self.listener.tenant, vehicle_id, Leaf.CMD_REFRESH)
            await client.publish(
                topic,
                encode(RefreshRequest(schema="muto.refresh-request.v1", request_id=request_id)),
                qos=1,
            )
            return await asyncio.wait_for(answer, timeout_s)
        except TimeoutError:
            return None
        except aiomqtt.MqttError as exc:
            raise ConnectionError(f"the refresh could not be published: {exc}") from None
        finally:
            self.listener.refreshes.pop(request_id, None)

    async def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            if not await asyncio.to_thread(self.lease.held):  # another process holds it
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), LEASE_CHECK_S)
                continue
            session: aiomqtt.Client | None = None
            try:
                session = cloud_client(self.address, self.client_id)
                async with session as client:
                    # Subscribe on every connect: a broker restarted without persistence
                    # has forgotten the session. Re-subscribing makes the broker resend the
                    # retained presences, harmless: presence stores changes of state only.
                    await client.subscribe(self.listener.filters())
                    attempt = 0
                    self.connected = True
                    self._client = client
                    self.connections += 1
                    logger.info("connected to the broker as %s", self.client_id)
                    await self._session(client)
            except Exception as exc:  # every failure ends in a reconnect, never a dead bridge
                causes = _leaves(exc)
                if any(isinstance(e, LeaseLost) for e in causes):
                    logger.warning("lost the listener lease: left the broker")
                    continue
                if all(isinstance(e, aiomqtt.MqttError) for e in causes):
                    logger.warning("broker link down: %s", "; ".join(map(_say, causes)))
                else:
                    logger.exception("MQTT session failed")
            finally:
                self.connected = False
                self._client = None
                # aiomqtt (2.5.1, client.py:786-792) leaves paho's socket open when the
                # CONNACK never comes (or the connect is cancelled): close it here.
                if session is not None:
                    session._client._sock_close()
                # Out of the session, the notifier cannot publish: its lease goes back, for
                # whoever holds the listener lease next (kept, it would stop every notify).
                await asyncio.to_thread(self.outbox.release)
            if self._stop.is_set():
                break
            delay = self.backoff.delay(attempt)
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _session(self, client: aiomqtt.Client) -> None:
        async with asyncio.TaskGroup() as tasks:
            listening = tasks.create_task(self.listener.run(client))
            watching = tasks.create_task(self._keep_lease())
            await self.notifier.run(client, self._stop, self.flush_s)
            watching.cancel()
            # Stopping: let the message in hand be stored and acknowledged first; what is
            # still queued is unacknowledged, so the broker redelivers it next session.
            async with self.listener.busy:
                listening.cancel()

    async def _keep_lease(self) -> None:
        """End the session (and so every act of it) as soon as the lease is lost."""
        while True:
            await asyncio.sleep(LEASE_CHECK_S)
            if not await asyncio.to_thread(self.lease.held):
                raise LeaseLost()


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) task-group errors."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _say(exc: BaseException) -> str:
    return f"{exc} ({exc.__cause__})" if exc.__cause__ else str(exc)
