"""The broker link: where the broker is (one URL), and how long to wait between attempts.

`mqtt://user:password@host:1883?clientId=muto-cloud-a` (or `mqtts://` for TLS): the cloud
user's credentials and the client id travel in the URL so that Settings keeps one field.
"""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import aiomqtt

KEEPALIVE_S = 30
PENDING_PUBLISHES = 1000  # at least the notifier's batch (outbox.BATCH)


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool
    client_id: str | None  # None: the bridge's default, `muto-cloud-<tenant>`

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"not an MQTT broker URL (mqtt:// or mqtts://): {url!r}")
        tls = parts.scheme == "mqtts"
        ids = parse_qs(parts.query).get("clientId")
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            client_id=ids[0] if ids else None,
        )

    def client(self, client_id: str) -> aiomqtt.Client:
        """A persistent-session MQTT 3.1.1 client: the broker keeps our subscriptions and
        queues QoS 1 reports for us while the cloud is down (clean_session=False)."""
        client = aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self.password,
            identifier=client_id,
            clean_session=False,
            keepalive=KEEPALIVE_S,
            tls_context=ssl.create_default_context() if self.tls else None,
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
