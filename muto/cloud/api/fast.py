"""The fleet's two steady requests, answered without Starlette's routing: a poll whose
`If-None-Match` names the vehicle's current ETag (304), and a health report that changes
nothing. At a fleet's rate these are most requests, and the router, the request and
exception wrappers cost more than their answer (docs/api.md, "Performance").

Inside the access log and the request metrics (Edge, RequestMetrics), so both see these
requests as any other. Only an answer that needs nothing but memory is given here: the
caller's token known to the token cache, the ETag or health status known to its
memory. Everything else, before anything is changed, goes on to the app (a body read
here is handed on as it came), which answers it by the same rules. The responses are
the handlers' own (`desired.not_modified`, `responses.ok`), a refusal by the rate
limiter is `responses.on_error`'s, like every other."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from muto.cloud.api import desired, reports
from muto.cloud.api.context import bearer_secret, may_act_on
from muto.cloud.api.responses import ok, on_error
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.ratelimit import RateLimited
from muto.cloud.tokens import Principal
from muto.domain.reports import HealthReport
from muto.domain.wire import WireError, decode

POLL = "/desired-states/latest"
HEALTH = "/reports/health"


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
        headers = _headers(scope)
        declared = headers.get(b"content-length", b"")
        limit = cp.settings.max_body_bytes
        if not (declared.isdigit() and int(declared) <= limit):
            await self.app(scope, receive, send)
            return
        data, replay = await _read(receive)
        try:
            report = decode(data, HealthReport)
        except WireError:
            report = None
        who = _known(cp, headers, report.vehicle_id) if report else None
        if report is None or who is None or not cp.ingest.unchanged(report):
            await self.app(scope, replay, send)
            return
        scope["endpoint"] = reports.health
        if await _limited(cp, who, scope, receive, send):
            return
        try:  # written after all if a transition evicted the status just now
            transition = await cp.ingest.health(report, who.actor)
        except Exception as exc:  # answered as the app answers it
            await (await on_error(Request(scope, receive), exc))(scope, receive, send)
            return
        answer = ok({"reportId": report.report_id, "transition": transition})
        await answer(scope, receive, send)


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
    data = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return data, replay
