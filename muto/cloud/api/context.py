"""Per-request access to the control plane and the caller's identity."""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, ParamSpec, TypeVar

import anyio
from starlette.requests import Request

from muto.cloud.api.numbers import whole_number
from muto.cloud.api.responses import Unauthorized, read_body
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.errors import Forbidden, Invalid
from muto.cloud.idempotency import HEADER, Answer, KeyedRequest, recorded
from muto.cloud.tokens import MISS, Principal, Role
from muto.cloud.writer import Written
from muto.domain.wire import REFERENCE_PATTERN, decode
from muto.projections.store import READERS

T = TypeVar("T")
P = ParamSpec("P")
REFERENCE = re.compile(REFERENCE_PATTERN)
OPEN = Principal("open", Role.OPERATOR, None)  # when auth is switched off (local dev)


def plane(request: Request) -> ControlPlane:
    # The lifespan state as uvicorn hands it to each request; `request.state` would
    # wrap it in a new object on every call.
    cp: ControlPlane = request.scope["state"]["plane"]
    return cp


async def off_loop(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a database read in a worker thread. The event loop serves every request: a
    slow query on it (a heavy selector, a big audit page) delayed /healthz and every
    vehicle's poll by the query's whole duration. At most READERS at once, so that each
    finds a kept view connection."""
    return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=_readers())


_READERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


def _readers() -> anyio.CapacityLimiter:
    """The reads' limiter of the running loop (a limiter belongs to one loop)."""
    loop = asyncio.get_running_loop()
    limiter = _READERS.get(loop)
    if limiter is None:
        limiter = _READERS[loop] = anyio.CapacityLimiter(READERS)
    return limiter


async def principal(request: Request) -> Principal:
    cp = plane(request)
    if not cp.settings.auth:
        return OPEN
    secret = bearer_secret(request.headers.get("authorization", ""))
    if secret is None:
        raise Unauthorized("a bearer token is required")
    found = cp.auth.cached(secret)  # most requests: a token seen seconds ago
    if found is MISS:
        found = await off_loop(cp.auth.authenticate, secret)
    if not isinstance(found, Principal):
        raise Unauthorized("unknown or revoked token")
    cp.limits.check(found)
    return found


async def operator(request: Request) -> Principal:
    who = await principal(request)
    if who.role is not Role.OPERATOR:
        raise Forbidden("this endpoint needs an operator token")
    return who


async def operator_or_vehicle(request: Request, vehicle_id: str) -> Principal:
    """Operators may act on any vehicle; a vehicle token only on its own vehicle."""
    return acting_on(await principal(request), vehicle_id)


def bearer_secret(header: str) -> str | None:
    """The token of an `Authorization: Bearer ...` header; None without one."""
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return secret.strip() or None


def may_act_on(who: Principal, vehicle_id: str) -> bool:
    """Operators may act on any vehicle; a vehicle token only on its own vehicle."""
    return who.role is not Role.VEHICLE or who.vehicle_id == vehicle_id


def acting_on(who: Principal, vehicle_id: str) -> Principal:
    if not may_act_on(who, vehicle_id):
        raise Forbidden(f"this token is bound to vehicle {who.vehicle_id!r}, not {vehicle_id!r}")
    return who


async def body(request: Request, kind: type[T]) -> T:
    return decode(await read_body(request, plane(request).settings.max_body_bytes), kind)


def correlation(request: Request) -> str | None:
    """The X-Correlation-Id header, held to the same rule as the bodies' correlationId:
    it ends up in an indexed column of the audit view."""
    raw = request.headers.get("x-correlation-id")
    if raw is not None and not REFERENCE.match(raw):
        raise Invalid(
            "X-Correlation-Id must be 1-128 printable ASCII characters without spaces",
            {"path": "header.X-Correlation-Id"},
        )
    return raw


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = whole_number(raw, low, high)
    if value is None:
        raise Invalid(
            f"query parameter {name!r} must be an integer in [{low}, {high}]",
            {"path": f"query.{name}"},
        )
    return value


def idempotency_key(request: Request) -> str | None:
    """The Idempotency-Key header (muto.cloud.idempotency), held to a correlation id's
    rule: 1-128 printable ASCII characters without spaces. Checked before the body."""
    raw = request.headers.get("idempotency-key")
    if raw is not None and not REFERENCE.match(raw):
        raise Invalid(
            f"{HEADER} must be 1-128 printable ASCII characters without spaces "
            "(a UUID, say): it names one request, and a resend of it with the same key "
            "is answered as the first was",
            {"path": f"header.{HEADER}"},
        )
    return raw


def keyed(request: Request, who: Principal, key: str | None, decoded: Any) -> KeyedRequest | None:
    """The request as its key names it (sender, method, path, decoded body); None
    without a key."""
    if key is None:
        return None
    return KeyedRequest.of(key, who.actor, request.method, request.url.path, decoded)


async def write_once(
    request: Request, key: KeyedRequest | None, write: Callable[[], Awaitable[Written[Answer]]]
) -> Written[Answer]:
    """A keyed write's answer: the stored one when the key already answers this request
    (looked up before `write` runs any check, and again by its command, atomically),
    else `write()`'s. A replayed answer is given once the views show the log as it is
    now, at or past the keyed write (read-your-writes holds for a resend, on whichever
    process it lands); its `position` is that one."""
    cp = plane(request)
    if key is not None:
        found = await off_loop(recorded, cp.log, key, cp.clock())
        if found is not None:
            return await _shown(request, found)
    written = await write()
    if written.value.replayed:
        return await _shown(request, written.value)
    return written


async def _shown(request: Request, answer: Answer) -> Written[Answer]:
    cp = plane(request)
    position = await off_loop(cp.log.position)
    try:
        await cp.projector.reach(position, cp.writes.views_timeout)
    except TimeoutError:
        return Written(answer, position, views_current=False)
    return Written(answer, position)


def replayed(answer: Answer) -> dict[str, str] | None:
    """The header that tells a client its answer is a resend's (Stripe's name)."""
    return {"Idempotent-Replayed": "true"} if answer.replayed else None
