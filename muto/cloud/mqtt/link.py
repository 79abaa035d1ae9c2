"""The cloud's broker link: its MQTT client (the broker's URL is muto.domain.broker's),
and how long to wait between attempts."""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass

import aiomqtt

from muto.domain.broker import Broker

KEEPALIVE_S = 30
PENDING_PUBLISHES = 1000  # at least the notifier's batch (outbox.BATCH)


def cloud_client(broker: Broker, client_id: str) -> aiomqtt.Client:
    """A persistent-session MQTT 3.1.1 client: the broker keeps our subscriptions and
    queues QoS 1 reports for us while the cloud is down (clean_session=False)."""
    client = aiomqtt.Client(
        broker.host,
        broker.port,
        username=broker.username,
        password=broker.password,
        identifier=client_id,
        clean_session=False,
        keepalive=KEEPALIVE_S,
        tls_context=ssl.create_default_context() if broker.tls else None,
    )
    # Acknowledge a report only once it is stored, so a crash between receipt and
    # ingest makes the broker redeliver it. aiomqtt has no API for this yet
    # (empicano/aiomqtt#345); paho's manual ack is the documented workaround.
    client._client.manual_ack_set(True)
    # The notifier publishes a whole batch at once; aiomqtt warns above this many
    # unacknowledged calls.
    client.pending_calls_threshold = PENDING_PUBLISHES
    return client


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter: attempt n waits a random time between half
    and all of min(cap, base * 2**n), so a fleet of clouds does not reconnect in step."""

    base_s: float = 0.5
    cap_s: float = 30.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(attempt, 32))
        return ceiling * random.uniform(0.5, 1.0)
