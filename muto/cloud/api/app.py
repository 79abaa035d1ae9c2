"""The Starlette application: an explicit route table, the control plane in lifespan
state, one structured log line per request."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from muto.cloud.api import (
    artifacts,
    audit,
    desired,
    health,
    refresh,
    releases,
    reports,
    rollouts,
    tokens,
    vehicles,
)
from muto.cloud.api.fast import FastLane
from muto.cloud.api.responses import error, exception_handlers, on_error
from muto.cloud.artifacts.store import ArtifactStore, DirectoryArtifacts, MemoryArtifacts
from muto.cloud.bootstrap import ControlPlane, Extension, serving
from muto.cloud.dashboard import mount as dashboard
from muto.cloud.metrics import UNMATCHED, CloudMetrics, route_templates, scrape
from muto.cloud.settings import Settings

LOG_EVERY_S = 0.1  # the access log's lines go out at most this late
SPEC = Path(__file__).resolve().parents[3] / "spec" / "api.yaml"
access_log = logging.getLogger("muto.access")


async def openapi(_: Request) -> Response:
    return Response(SPEC.read_bytes(), media_type="application/yaml")


# Every role serves these (a worker serves nothing else).
PROBES = [
    Route("/livez", health.livez, methods=["GET"]),
    Route("/readyz", health.readyz, methods=["GET"]),
    Route("/healthz", health.healthz, methods=["GET"]),
]
WORKER = [*PROBES, Route("/metrics", scrape, methods=["GET"])]
# The fleet's steady traffic first: the router tries the paths in this order.
ROUTES = [
    Route("/desired-states/latest", desired.latest, methods=["GET"]),
    Route("/reports/reconcile", reports.reconcile, methods=["POST"]),
    Route("/reports/health", reports.health, methods=["POST"]),
    *PROBES,
    Route("/openapi.yaml", openapi, methods=["GET"]),
    Route("/vehicles", vehicles.register, methods=["POST"]),
    Route("/vehicles", vehicles.listing, methods=["GET"]),
    Route("/vehicles/{vehicle_id}", vehicles.one, methods=["GET"]),
    Route("/vehicles/{vehicle_id}", vehicles.patch, methods=["PATCH"]),
    Route("/vehicles/{vehicle_id}/refresh", refresh.refresh, methods=["POST"]),
    Route("/releases", releases.register, methods=["POST"]),
    Route("/releases", releases.listing, methods=["GET"]),
    Route("/releases/{stack}/{version}", releases.one, methods=["GET"]),
    Route("/desired-states", desired.create, methods=["POST"]),
    Route("/rollouts", rollouts.create, methods=["POST"]),
    Route("/rollouts", rollouts.listing, methods=["GET"]),
    Route("/rollouts/{rollout_id}", rollouts.one, methods=["GET"]),
    Route("/rollouts/{rollout_id}/pause", rollouts.pause_rollout, methods=["POST"]),
    Route("/rollouts/{rollout_id}/resume", rollouts.resume_rollout, methods=["POST"]),
    Route("/rollouts/{rollout_id}/rollback", rollouts.rollback_rollout, methods=["POST"]),
    Route("/tokens", tokens.issue, methods=["POST"]),
    Route("/tokens/{token_id}/revoke", tokens.revoke, methods=["POST"]),
    Route("/audit", audit.timeline, methods=["GET"]),
    Route("/audit/records", audit.records, methods=["GET"]),
    Route("/audit/verify", audit.verify, methods=["GET"]),
    Route("/metrics", scrape, methods=["GET"]),
    Route("/artifacts/{digest}", artifacts.upload, methods=["PUT"]),
    Route("/artifacts/{digest}", artifacts.download, methods=["GET", "HEAD"]),
]


def resources(routes: Sequence[Route]) -> list[Route]:
    """One Starlette route per path, whatever the number of entries in the table: with
    one route per method, a request with another method matched only the first entry,
    and its 405 listed that entry's methods in `Allow`, not the path's."""
    by_path: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}
    for route in routes:
        for method in route.methods or ():
            by_path.setdefault(route.path, {})[method] = route.endpoint
    return [Route(path, _by_method(table), methods=list(table)) for path, table in by_path.items()]


def _by_method(
    table: dict[str, Callable[[Request], Awaitable[Response]]],
) -> Callable[[Request], Awaitable[Response]]:
    if len(set(table.values())) == 1:
        return next(iter(table.values()))

    async def endpoint(request: Request) -> Response:
        return await table[request.method](request)

    return endpoint


class Edge:
    """What uvicorn hands every request to, around the whole app: the refusal of a NUL,
    the request metrics and the access log, from one timer and one look at the status.

    PostgreSQL can neither store nor compare text with a NUL in it, so a NUL in the path
    or the query string was a 500 there. No identifier holds one: a NUL in the path is an
    unknown resource (404), in the query an invalid parameter (422).

    The request metrics count and time each request by its route template (`metrics`
    None: not kept). The access log is one JSON line per request (method, path, status,
    duration); the lines of the requests answered within LOG_EVERY_S go out in one write
    (one log record), and what is left when the server stops goes out then: at a few
    thousand requests a second a record per line, or even per turn of the event loop,
    cost more than most handlers.

    It sits outside Starlette, so that the fleet's steady requests (the fast lane, next
    inside) pass no more wrappers than they need: an error the app behind did not answer
    (one raised in the fast lane) is answered here as Starlette's outermost middleware
    answers it, with `responses.on_error`, and raised on for the server to log."""

    def __init__(
        self, app: ASGIApp, metrics: CloudMetrics | None, templates: dict[Any, str]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = templates
        self._lines: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            try:
                await self.app(scope, receive, send)
            finally:
                if scope["type"] == "lifespan" and self._lines:
                    self._write()  # the server stops: the last lines go out now
            return
        started = time.perf_counter()
        status = 0  # none sent yet

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._refuse_nul(scope, receive, sending)
        except Exception as exc:
            if not status:
                await (await on_error(Request(scope, receive), exc))(scope, receive, sending)
            raise
        finally:
            self._observe(scope, status or 500, time.perf_counter() - started)

    async def _refuse_nul(self, scope: Scope, receive: Receive, send: Send) -> None:
        if "\x00" in scope["path"]:
            answer = error(404, "not_found", "no resource has a NUL in its path")
        elif b"%00" in scope["query_string"]:
            answer = error(422, "invalid", "a query parameter holds a NUL", {"path": "query"})
        else:
            await self.app(scope, receive, send)
            return
        await answer(scope, receive, send)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        if self.metrics is not None:
            route = self.templates.get(scope.get("endpoint"), UNMATCHED)
            self.metrics.observe_request(route, scope["method"], status, seconds)
        if access_log.isEnabledFor(logging.INFO):
            line = {
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "ms": round(seconds * 1000, 2),
            }
            if not self._lines:
                asyncio.get_running_loop().call_later(LOG_EVERY_S, self._write)
            self._lines.append(msgspec.json.encode(line))

    def _write(self) -> None:
        lines, self._lines = self._lines, []
        if lines:
            access_log.info(b"\n".join(lines).decode())


def create_app(
    settings: Settings,
    plane: ControlPlane | None = None,
    extensions: Sequence[Extension] = (),
) -> Edge:
    """The app of one serving process; the control plane is run by `bootstrap.serving`
    (`plane`: a shared one; `extensions`: e.g. `bootstrap.duties(settings)`). What the
    extensions yield is merged into the request state, and the duties held (`leases`)
    into the state's `leases`, which /readyz reports.

    `settings.role`: `api` and `all` serve the API; `worker` only the probes and metrics."""

    metrics = CloudMetrics()

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with serving(settings, plane, extensions) as (cp, extra):
            state = {"plane": cp, "metrics": metrics, "artifacts": artifact_store(settings)}
            detach = metrics.attach(cp, extra.get("bridge"), extra.get("controller"))
            try:
                yield {**state, **extra}
            finally:
                detach()

    # A worker answers its probes and its metrics; the API and the dashboard are the
    # api role's.
    routes = [*resources(ROUTES), dashboard()] if settings.serves_api else resources(WORKER)
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=exception_handlers())
    inner: ASGIApp = FastLane(app) if settings.serves_api else app
    return Edge(inner, metrics, route_templates(routes))


def artifact_store(settings: Settings) -> ArtifactStore:
    if settings.is_memory and settings.artifact_dir is None:
        return MemoryArtifacts()
    return DirectoryArtifacts(settings.artifact_dir or settings.data_dir / "artifacts")
