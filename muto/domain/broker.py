"""Where the MQTT broker is, as one URL: `mqtt://[user:password@]host[:port][?clientId=ID]`,
or `mqtts://` for TLS (default ports 1883 and 8883). The cloud and the agent both take
their broker this way, so credentials and the client id travel in one setting."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

# The cloud's broker user in the shipped ACL (deploy/mosquitto/acl): it reads and writes
# every vehicle's topics, and a vehicle logs in under its own id, so no vehicle may be
# registered under this id (or under the user in the cloud's own MQTT URL).
CLOUD_USER = "muto-cloud"


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    client_id: str | None = None  # None: the client's own default

    @classmethod
    def parse(cls, url: str) -> Broker:
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
