"""The cloud's HTTP API as a vehicle uses it: fetch the latest desired state (ETag), post
reports. Every failure is a value, never an exception: the caller decides what to do.

Every answer is streamed, never read whole: a bundle of more than MAX_BUNDLE_BYTES is
refused (reported as VERIFY_SIGNATURE_FAILED, like any bundle that cannot be verified),
and only the first MAX_ANSWER_BYTES of an answer to a report are read. Each exchange must
finish within `total_timeout_s` (TOTAL_TIMEOUT_S) on top of the per-read timeout, so
neither an endless nor a trickling body holds the agent or its memory. The exchanges are
the agent's own HTTP client's, or an httpx client's when one is given (exchange.py).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlencode

import msgspec

from muto.agent.transport.exchange import Answer, Exchanges, HttpError, exchanges_of
from muto.domain.desired import DesiredStateBundle
from muto.domain.wire import WireError, decode

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("muto.agent")
TIMEOUT_S = 10.0  # connect, and each read: the longest silence tolerated
TOTAL_TIMEOUT_S = 30.0  # a whole exchange, body included
# Two signed envelopes of at most 1 MiB of base64 payload each (dsse.MAX_PAYLOAD_CHARS),
# their signatures and the metadata fit with room to spare.
MAX_BUNDLE_BYTES = 4 << 20
MAX_ANSWER_BYTES = 4 << 10  # of an answer to a report: only its status and a detail count
# Worth retrying: the token may be fixed, the cloud may come back, a limit may lift.
RETRY_STATUSES = frozenset({401, 403, 408, 425, 429})
MAX_RETRY_AFTER_S = 3600.0  # a Retry-After beyond this is taken as this


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
    """The detail of a failure the cloud timed (429/503 with Retry-After): the courier
    sends no report, and the intake asks for no desired state, before `after_s` seconds
    have passed."""

    after_s: float

    def __new__(cls, detail: str, after_s: float) -> RetryLater:
        found = super().__new__(cls, detail)
        found.after_s = after_s
        return found


def retry_after_s(header: str | None) -> float | None:
    """Retry-After in seconds (the delay form; an HTTP date is not sent by muto), at most
    MAX_RETRY_AFTER_S."""
    value = (header or "").strip()
    if not (0 < len(value) <= 9 and value.isascii() and value.isdigit()):
        return None
    return min(float(value), MAX_RETRY_AFTER_S)


def _retryable(status: int) -> bool:
    return status >= 500 or status in RETRY_STATUSES


def _failed(answer: Answer) -> str:
    """Why an answer failed: a RetryLater when it is worth retrying and the cloud said
    when."""
    status = answer.status_code
    after = retry_after_s(answer.headers.get("retry-after")) if _retryable(status) else None
    if after is None:
        return f"HTTP {status}"
    return RetryLater(f"HTTP {status}, retry after {after:g} s", after)


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
        client: httpx.AsyncClient | Exchanges | None = None,
        timeout_s: float = TIMEOUT_S,
        total_timeout_s: float = TOTAL_TIMEOUT_S,
        max_bundle_bytes: int = MAX_BUNDLE_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.vehicle_id = vehicle_id
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._own = client is None  # a shared client (the simulator's) is not ours to close
        self._http = exchanges_of(client, timeout_s)
        self._timeout = timeout_s
        self._total_timeout = total_timeout_s
        self.max_bundle_bytes = max_bundle_bytes

    async def latest(self, etag: str | None) -> Fetched | NotFetched:
        headers = {**self._headers, "Accept-Encoding": "identity"}  # the cap counts wire bytes
        if etag:
            headers["If-None-Match"] = etag
        url = f"{self.base_url}/desired-states/latest?{urlencode({'vehicleId': self.vehicle_id})}"
        try:
            async with (
                asyncio.timeout(self._total_timeout),
                self._http.stream("GET", url, headers=headers, timeout_s=self._timeout) as answer,
            ):
                status = answer.status_code
                if status != 200:
                    return _not_fetched(answer)
                encoded = _encoded(answer)
                body = b"" if encoded else await read_capped(answer, self.max_bundle_bytes)
        except TimeoutError:
            return NotFetched("unreachable", f"no complete answer within {self._total_timeout}s")
        except HttpError as exc:
            return NotFetched("unreachable", str(exc))
        etag = answer.headers.get("etag")
        if encoded:
            problem = f"answered with Content-Encoding {encoded!r}; asked for identity"
            return Fetched(None, etag, None, None, problem)
        if body is None:
            problem = f"response larger than {self.max_bundle_bytes} bytes: not read further"
            return Fetched(None, etag, None, None, problem)
        return _fetched(body, etag)

    async def deliver(self, kind: str, body: bytes) -> tuple[Delivery, str]:
        headers = {
            **self._headers,
            "Content-Type": "application/json",
            "Accept-Encoding": "identity",
        }
        url = f"{self.base_url}/reports/{kind}"
        try:
            async with (
                asyncio.timeout(self._total_timeout),
                self._http.stream(
                    "POST", url, headers=headers, content=body, timeout_s=self._timeout
                ) as answer,
            ):  # leaving it closes the exchange: the rest of the body is never read
                status = answer.status_code
                if 200 <= status < 300:
                    return "ack", f"HTTP {status}"
                if _retryable(status):
                    return "retry", _failed(answer)
                head = await read_head(answer, MAX_ANSWER_BYTES)
        except TimeoutError:
            return "retry", f"no complete answer within {self._total_timeout}s"
        except HttpError as exc:
            return "retry", str(exc)
        return "drop", f"HTTP {status}: {head.decode(errors='replace')[:200]}"

    async def aclose(self) -> None:
        if self._own:
            await self._http.aclose()


def _not_fetched(answer: Answer) -> NotFetched:
    status = answer.status_code
    if status == 304:
        return NotFetched("not_modified")
    if status == 404:
        return NotFetched("none_assigned")
    if status in (401, 403):
        # Not an outage: a misprovisioned token. Say so on every poll until fixed.
        logger.warning("the cloud refuses this vehicle's token (HTTP %s)", status)
    return NotFetched("unreachable", _failed(answer))


def _encoded(response: Answer) -> str | None:
    """The Content-Encoding of an answer that is not identity (we ask for identity): such
    a body is never decoded, so a small compressed answer cannot expand in memory."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    return None if encoding in ("", "identity") else encoding


async def read_capped(response: Answer, limit: int) -> bytes | None:
    """The whole body, or None as soon as it is known to exceed `limit` bytes (by its
    Content-Length, or by counting): never more than `limit` + one chunk in memory.
    Only for identity-encoded answers (see `_encoded`)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in response.body:
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def read_head(response: Answer, limit: int) -> bytes:
    """At most the first `limit` bytes of the body; the rest is left unread (nothing of an
    encoded body: it would be decoded)."""
    head = bytearray()
    if _encoded(response):
        return b""
    async for chunk in response.body:
        head += chunk[: limit - len(head)]
        if len(head) >= limit:
            break
    return bytes(head)


def _fetched(content: bytes, etag: str | None) -> Fetched:
    try:
        latest = msgspec.json.decode(content, type=_Latest)
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
