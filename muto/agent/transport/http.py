"""The cloud's HTTP API as a vehicle uses it: fetch the latest desired state (ETag), post
reports. Every failure is a value, never an exception: the caller decides what to do."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx
import msgspec

from muto.domain.desired import DesiredStateBundle
from muto.domain.wire import WireError, decode

logger = logging.getLogger("muto.agent")
TIMEOUT_S = 10.0
# Worth retrying: the token may be fixed, the cloud may come back, a limit may lift.
RETRY_STATUSES = frozenset({401, 403, 408, 425, 429})


@dataclass(frozen=True)
class Fetched:
    bundle: DesiredStateBundle | None  # None: the body did not decode (`problem` says why)
    etag: str | None
    revision: str | None  # from the response metadata: unverified, for reports only
    sequence: int | None
    problem: str | None = None


@dataclass(frozen=True)
class NotFetched:
    why: Literal["not_modified", "none_assigned", "unreachable"]
    detail: str = ""


class _Latest(msgspec.Struct):
    data: msgspec.Raw
    metadata: dict[str, Any] = {}


Delivery = Literal["ack", "retry", "drop"]


class RetryLater(str):
    """The detail of a "retry" the cloud timed (429/503 with Retry-After): the courier
    sends nothing to it before `after_s` seconds have passed."""

    after_s: float

    def __new__(cls, detail: str, after_s: float) -> RetryLater:
        found = super().__new__(cls, detail)
        found.after_s = after_s
        return found


def retry_after_s(header: str | None) -> float | None:
    """Retry-After in seconds (the delay form; an HTTP date is not sent by muto)."""
    value = (header or "").strip()
    if not (0 < len(value) <= 9 and value.isascii() and value.isdigit()):
        return None
    return float(value)


class CloudPort(Protocol):
    """What an agent needs from the cloud: CloudClient over HTTP, or an in-process fake
    (tests, a simulator that skips the network)."""

    async def latest(self, etag: str | None) -> Fetched | NotFetched: ...

    async def deliver(self, kind: str, body: bytes) -> tuple[Delivery, str]: ...

    async def aclose(self) -> None: ...


class CloudClient:
    def __init__(
        self,
        base_url: str,
        vehicle_id: str,
        token: str | None,
        *,
        client: httpx.AsyncClient | None = None,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.vehicle_id = vehicle_id
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._own = client is None  # a shared client (the simulator's) is not ours to close
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self._timeout = timeout_s

    @property
    def host(self) -> str:
        return httpx.URL(self.base_url).netloc.decode()

    async def latest(self, etag: str | None) -> Fetched | NotFetched:
        headers = dict(self._headers)
        if etag:
            headers["If-None-Match"] = etag
        try:
            response = await self._client.get(
                f"{self.base_url}/desired-states/latest",
                params={"vehicleId": self.vehicle_id},
                headers=headers,
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            return NotFetched("unreachable", f"{type(exc).__name__}: {exc}")
        if response.status_code == 304:
            return NotFetched("not_modified")
        if response.status_code == 404:
            return NotFetched("none_assigned")
        if response.status_code in (401, 403):
            # Not an outage: a misprovisioned token. Say so on every poll until fixed.
            logger.warning("the cloud refuses this vehicle's token (HTTP %s)", response.status_code)
        if response.status_code != 200:
            return NotFetched("unreachable", f"HTTP {response.status_code}")
        return _fetched(response)

    async def deliver(self, kind: str, body: bytes) -> tuple[Delivery, str]:
        try:
            response = await self._client.post(
                f"{self.base_url}/reports/{kind}",
                content=body,
                headers={**self._headers, "Content-Type": "application/json"},
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            return "retry", f"{type(exc).__name__}: {exc}"
        status = response.status_code
        if 200 <= status < 300:
            return "ack", f"HTTP {status}"
        if status >= 500 or status in RETRY_STATUSES:
            after = retry_after_s(response.headers.get("retry-after"))
            if after is not None:
                return "retry", RetryLater(f"HTTP {status}, retry after {after:g} s", after)
            return "retry", f"HTTP {status}"
        return "drop", f"HTTP {status}: {response.text[:200]}"

    async def aclose(self) -> None:
        if self._own:
            await self._client.aclose()


def _fetched(response: httpx.Response) -> Fetched:
    etag = response.headers.get("etag")
    try:
        latest = msgspec.json.decode(response.content, type=_Latest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return Fetched(None, etag, None, None, f"malformed response: {exc}")
    meta = latest.metadata
    revision = meta.get("revision") if isinstance(meta.get("revision"), str) else None
    sequence = meta.get("sequence") if isinstance(meta.get("sequence"), int) else None
    try:
        bundle = decode(bytes(latest.data), DesiredStateBundle)
    except WireError as exc:
        return Fetched(None, etag, revision, sequence, f"malformed bundle: {exc}")
    return Fetched(bundle, etag, revision, sequence)
