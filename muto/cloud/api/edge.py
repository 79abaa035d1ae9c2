"""What uvicorn hands every request to, around the whole app: the refusal of a NUL,
the request metrics and the access log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from muto.cloud.api.responses import error, on_error
from muto.cloud.metrics import UNMATCHED, CloudMetrics, method_label

LOG_EVERY_S = 0.1  # the access log's lines, and the request metrics, at most this late
access_log = logging.getLogger("muto.access")
log = logging.getLogger(__name__)
# What the edge keeps of an answered request until its batch is folded in: the
# endpoint (the route's template is looked up in the batch), method, path, status, seconds.
Answered = tuple[Any, str, str, int, float]


class AccessLine(msgspec.Struct):
    """One request in the access log (a JSON line)."""

    method: str
    path: str
    status: int
    ms: float


_lines = msgspec.json.Encoder()


def nul_refusal(scope: Scope) -> Response | None:
    """The answer to a request with a NUL in its path or query (None: none there)."""
    if "\x00" in scope["path"]:
        return error(404, "not_found", "no resource has a NUL in its path")
    if b"%00" in scope["query_string"]:
        return error(422, "invalid", "a query parameter holds a NUL", {"path": "query"})
    return None


class Edge:
    """Counts, times and logs each request once, whatever answered it, and answers an
    error that nothing behind it answered (one raised in the fast lane) with
    `responses.on_error`, as Starlette's outermost middleware would, then raises it on
    for the server to log.

    PostgreSQL can neither store nor compare text with a NUL in it, so a NUL in the path
    or the query string was a 500 there. No identifier holds one: a NUL in the path is an
    unknown resource (404), in the query an invalid parameter (422).

    The request metrics count and time each request by its route template (`metrics`
    None: not kept). The access log is one JSON line per request (method, path, status,
    duration). A request itself only appends what it was to a batch; every LOG_EVERY_S
    the batch is folded into the metrics and written to the log as one record, and
    before each scrape (`CloudMetrics.settle`) and when the server stops. In process the
    edge took ~3.9 µs of each request with both on its path, and takes ~2.3 µs with its
    share of the batch (the metrics' part: `request_tally`).

    It sits outside Starlette, so that the fleet's steady requests (the fast lane, next
    inside) pass no more wrappers than they need."""

    def __init__(
        self, app: ASGIApp, metrics: CloudMetrics | None, templates: dict[Any, str]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = templates
        self._answered: list[Answered] = []
        if metrics is not None:
            metrics.before_scrape(self.fold)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            try:
                await self.app(scope, receive, send)
            finally:
                if scope["type"] == "lifespan":
                    self.fold()  # the server stops: what is held goes out now
            return
        started = time.perf_counter()
        status = 0  # none sent yet

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await (nul_refusal(scope) or self.app)(scope, receive, sending)
        except Exception as exc:
            if not status:
                await (await on_error(Request(scope, receive), exc))(scope, receive, sending)
            raise
        finally:
            answered = self._answered
            if not answered:
                asyncio.get_running_loop().call_later(LOG_EVERY_S, self.fold)
            answered.append(
                (
                    scope.get("endpoint"),
                    scope["method"],
                    scope["path"],
                    status or 500,
                    time.perf_counter() - started,
                )
            )

    def template(self, endpoint: Any) -> str:
        """The route template of the endpoint the router left in the scope, UNMATCHED
        for none. A Mount whose routes matched none of the path (an unknown /ui/...
        page) leaves its own Router there, which is unhashable (it defines `__eq__`):
        no route answered that request, so it is unmatched too."""
        try:
            return self.templates.get(endpoint, UNMATCHED)
        except TypeError:
            return UNMATCHED

    def fold(self) -> None:
        """The requests answered since the last fold: into the request metrics, and out
        to the access log in one record. A request that cannot be counted or written
        costs only its own line and count, never its batch's: it is counted as
        unmatched if it can be, and the failure is logged once per fold."""
        answered, self._answered = self._answered, []
        if not answered:
            return
        failed: list[tuple[Answered, BaseException]] = []
        if self.metrics is not None:
            observe = self.metrics.requests.observe
            for entry in answered:
                endpoint, sent, _, status, seconds = entry
                method = method_label(sent)
                try:
                    observe(self.template(endpoint), method, status, seconds)
                except Exception as exc:
                    failed.append((entry, exc))
                    with contextlib.suppress(Exception):  # logged below
                        observe(UNMATCHED, method, status, seconds)
        if access_log.isEnabledFor(logging.INFO):
            lines = [AccessLine(m, p, s, round(t * 1000, 2)) for _, m, p, s, t in answered]
            try:
                record = _lines.encode_lines(lines)
            except Exception:
                record = b"".join(
                    self._line(line, entry, failed)
                    for line, entry in zip(lines, answered, strict=True)
                )
            if record:
                access_log.info(record.rstrip(b"\n").decode())
        if failed:
            (_, method, path, status, _), first = failed[0]
            log.error(
                "%d failure(s) counting or logging a batch of %d request(s), the rest kept;"
                " the first: %s %r (%s)",
                len(failed),
                len(answered),
                method,
                path,
                status,
                exc_info=first,
            )

    @staticmethod
    def _line(
        line: AccessLine, entry: Answered, failed: list[tuple[Answered, BaseException]]
    ) -> bytes:
        try:
            return _lines.encode_lines([line])
        except Exception as exc:
            failed.append((entry, exc))
            return b""
