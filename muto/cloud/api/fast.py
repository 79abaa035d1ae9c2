"""The fleet's steady requests, answered without Starlette's routing: a poll whose
`If-None-Match` names the vehicle's current ETag (304), a health report that changes
nothing, and a reconcile report from a vehicle whose token is known. At a fleet's rate
these are most requests, and the router, the request and exception wrappers cost more
than their answer (docs/api.md, "Performance").

Inside the access log and the request metrics (app.Edge), so both see these requests
as any other. Only a request whose caller's token is known to the token cache,
whose body decodes (the app's Structs, within the app's size limit) and, for a poll or a
health report, whose answer is known to memory is taken here. Everything else, before
anything is changed, goes on to the app (a body read here is handed on as it came),
which answers it by the same rules. A reconcile report is stored by the same call as
the app's (`Ingest.reconcile`: the writer, then read-your-writes). The responses are
the handlers' own (`desired.not_modified`, `reports.recorded`, `reports.health_answer`);
a refusal by the rate limiter or a failed write is `responses.on_error`'s, like every
other."""

from __future__ import annotations

from typing import TypeVar

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from muto.cloud.api import desired, reports
from muto.cloud.api.context import bearer_secret, may_act_on
from muto.cloud.api.responses import on_error
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.ratelimit import RateLimited
from muto.cloud.tokens import Principal
from muto.domain.reports import HealthReport, ReconcileReport
from muto.domain.wire import WireError, decode

POLL = "/desired-states/latest"
HEALTH = "/reports/health"
RECONCILE = "/reports/reconcile"
R = TypeVar("R", HealthReport, ReconcileReport)


class FastLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            if path == POLL and method == "GET":
                if await self._poll(scope, receive, send):
                    return
            elif path == HEALTH and method == "POST":
                await self._health(scope, receive, send)
                return
            elif path == RECONCILE and method == "POST":
                await self._reconcile(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _poll(self, scope: Scope, receive: Receive, send: Send) -> bool:
        query: bytes = scope["query_string"]
        if not query.startswith(b"vehicleId=") or any(c in query for c in b"&%+"):
            return False
        vehicle_id = query[10:].decode("latin-1")
        cp: ControlPlane = scope["state"]["plane"]
        headers = _headers(scope)
        who = _known(cp, headers, vehicle_id)
        recent = cp.caches.etags.recent(vehicle_id) if who and vehicle_id else None
        if who is None or recent is None or recent not in _etags(headers):
            return False
        scope["endpoint"] = desired.latest  # the route, for the request metrics
        if await _limited(cp, who, scope, receive, send):
            return True
        await desired.not_modified(recent)(scope, receive, send)
        return True

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        cp: ControlPlane = scope["state"]["plane"]
        report, who, replay = await _report(cp, scope, receive, HealthReport)
        if report is None or who is None or not cp.ingest.unchanged(report):
            await self.app(scope, replay, send)
            return
        scope["endpoint"] = reports.health
        if await _limited(cp, who, scope, receive, send):
            return
        transition = False
        if not cp.ingest.keep_if_unchanged(report):
            try:  # written after all: a transition evicted the status just now
                transition = await cp.ingest.health(report, who.actor)
            except Exception as exc:  # answered as the app answers it
                await _failed(exc, scope, receive, send)
                return
        await reports.health_answer(report, transition)(scope, receive, send)

    async def _reconcile(self, scope: Scope, receive: Receive, send: Send) -> None:
        cp: ControlPlane = scope["state"]["plane"]
        report, who, replay = await _report(cp, scope, receive, ReconcileReport)
        if report is None or who is None:
            await self.app(scope, replay, send)
            return
        scope["endpoint"] = reports.reconcile
        if await _limited(cp, who, scope, receive, send):
            return
        try:
            written = await cp.ingest.reconcile(report, who.actor)
        except Exception as exc:
            await _failed(exc, scope, receive, send)
            return
        await reports.recorded(report, written)(scope, receive, send)


async def _report(
    cp: ControlPlane, scope: Scope, receive: Receive, kind: type[R]
) -> tuple[R | None, Principal | None, Receive]:
    """The body as `kind` (None: over the app's limit, not read, or not decoding), its
    caller if known and allowed to act on its vehicle, and a `receive` that hands on
    whatever was read, for the app."""
    headers = _headers(scope)
    declared = headers.get(b"content-length", b"")
    if not (declared.isdigit() and int(declared) <= cp.settings.max_body_bytes):
        return None, None, receive
    data, replay = await _read(receive)
    try:
        report = decode(data, kind)
    except WireError:
        return None, None, replay
    return report, _known(cp, headers, report.vehicle_id), replay


async def _failed(exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
    """A write that raised, answered as the app answers it."""
    await (await on_error(Request(scope, receive), exc))(scope, receive, send)


def _headers(scope: Scope) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        found.setdefault(name, value)  # the first, as Starlette's Headers.get
    return found


def _known(cp: ControlPlane, headers: dict[bytes, bytes], vehicle_id: str) -> Principal | None:
    """The caller, if its token is in the token cache and it may act on the vehicle."""
    if not cp.settings.auth:
        return None
    secret = bearer_secret(headers.get(b"authorization", b"").decode("latin-1"))
    found = cp.auth.cached(secret) if secret is not None else None
    if not isinstance(found, Principal) or not may_act_on(found, vehicle_id):
        return None
    return found


def _etags(headers: dict[bytes, bytes]) -> set[str]:
    header = headers.get(b"if-none-match")
    return desired.asked_etags(header.decode("latin-1") if header else None)


async def _limited(
    cp: ControlPlane, who: Principal, scope: Scope, receive: Receive, send: Send
) -> bool:
    """Count the request against its token's allowance; True when refused (answered)."""
    try:
        cp.limits.check(who)
    except RateLimited as exc:
        await (await on_error(Request(scope, receive), exc))(scope, receive, send)
        return True
    return False


async def _read(receive: Receive) -> tuple[bytes, Receive]:
    """The whole body, and a `receive` that hands it on as it came."""
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    data = b"".join([m.get("body", b"") for m in messages if m["type"] == "http.request"])

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return data, replay
