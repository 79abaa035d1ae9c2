"""The app's edge (muto/cloud/api/app.py, `Edge`): what uvicorn hands every request to.
It counts and logs each request once, whatever answered it, and answers an error that
nothing behind it answered (one raised in the fast lane) with the API's error body."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from muto.cloud.api.edge import LOG_EVERY_S, Edge
from muto.cloud.metrics import CloudMetrics

SCOPE = {
    "type": "http",
    "method": "GET",
    "path": "/desired-states/latest",
    "query_string": b"",
    "headers": [],
    "scheme": "http",
    "server": ("127.0.0.1", 8080),
}


def call(
    app: Any, linger: float = 0.0, scraped: bool = True
) -> tuple[list[Any], CloudMetrics, BaseException | None]:
    """One request through the edge: what it sent, its metrics (as a scrape would see
    them, if `scraped`), what it raised; the event loop runs on for `linger` seconds
    after it."""
    metrics = CloudMetrics()
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    edge = Edge(app, metrics, {app: "/desired-states/latest"})

    async def request() -> None:
        try:
            await edge(dict(SCOPE), receive, send)
        finally:
            await asyncio.sleep(linger)

    raised: BaseException | None = None
    try:
        asyncio.run(request())
    except Exception as exc:
        raised = exc
    if scraped:
        metrics.settle()
    return sent, metrics, raised


def counted(metrics: CloudMetrics, status: str) -> float:
    value = metrics.registry.get_sample_value(
        "muto_http_requests_total",
        {"route": "/desired-states/latest", "method": "GET", "status": status},
    )
    return value or 0.0


async def answers_304(scope: Any, receive: Any, send: Any) -> None:
    scope["endpoint"] = answers_304
    await send({"type": "http.response.start", "status": 304, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def raises(scope: Any, receive: Any, send: Any) -> None:
    scope["endpoint"] = raises
    raise RuntimeError("a bug in the fast lane")


async def raises_after_answering(scope: Any, receive: Any, send: Any) -> None:
    await answers_304(scope, receive, send)
    scope["endpoint"] = raises_after_answering
    raise RuntimeError("after the answer")


def test_an_answered_request_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="muto.access"):
        sent, metrics, raised = call(answers_304, linger=3 * LOG_EVERY_S, scraped=False)
    assert raised is None
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert counted(metrics, "304") == 1  # within LOG_EVERY_S, scraped or not
    (record,) = logged(caplog)
    line = json.loads(record.getMessage())
    assert (line["path"], line["status"]) == ("/desired-states/latest", 304)


def test_the_lines_held_go_out_when_the_server_stops(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await answers_304(scope, receive, send)  # a lifespan app returns at shutdown

    async def serve_then_stop() -> int:
        edge = Edge(app, None, {})
        await edge(dict(SCOPE), receive_nothing, send_nowhere)
        held = len(logged(caplog))  # not yet written: within LOG_EVERY_S
        await edge({"type": "lifespan"}, receive_nothing, send_nowhere)
        return held

    with caplog.at_level(logging.INFO, logger="muto.access"):
        held = asyncio.run(serve_then_stop())
    assert held == 0
    (record,) = logged(caplog)
    assert json.loads(record.getMessage())["status"] == 304


async def receive_nothing() -> Any:
    return {"type": "http.disconnect"}


async def send_nowhere(message: Any) -> None:
    pass


def logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "muto.access"]


def test_an_error_nothing_answered_is_a_500_with_the_api_error_body() -> None:
    sent, metrics, raised = call(raises)
    assert isinstance(raised, RuntimeError)  # raised on, for the server to log
    assert sent[0]["status"] == 500
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert body["error"]["code"] == "internal"
    assert counted(metrics, "500") == 1


def test_an_error_after_the_answer_sends_nothing_more() -> None:
    sent, metrics, raised = call(raises_after_answering)
    assert isinstance(raised, RuntimeError)
    assert [m.get("status") for m in sent] == [304, None]
    assert counted(metrics, "304") == 1


def test_the_requests_of_a_batch_are_one_record_and_each_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = CloudMetrics()
    edge = Edge(answers_304, metrics, {answers_304: "/desired-states/latest"})

    async def three_then_wait() -> None:
        for _ in range(3):
            await edge(dict(SCOPE), receive_nothing, send_nowhere)
        await asyncio.sleep(3 * LOG_EVERY_S)

    with caplog.at_level(logging.INFO, logger="muto.access"):
        asyncio.run(three_then_wait())
    (record,) = logged(caplog)
    lines = [json.loads(line) for line in record.getMessage().splitlines()]
    assert [(line["method"], line["status"]) for line in lines] == [("GET", 304)] * 3
    assert counted(metrics, "304") == 3


class Unlabelable:
    """An endpoint the templates cannot be looked up by (a lookup that raises)."""

    def __hash__(self) -> int:
        raise ValueError("no hash today")


def test_a_request_that_cannot_be_labelled_or_logged_costs_only_itself(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = CloudMetrics()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await answers_304(scope, receive, send)
        if scope["path"] == "/odd":
            scope["endpoint"] = Unlabelable()

    edge = Edge(app, metrics, {answers_304: "/desired-states/latest"})

    async def batch() -> None:
        for path in ("/desired-states/latest", "/odd", "/bad-\udc80", "/desired-states/latest"):
            await edge({**SCOPE, "path": path}, receive_nothing, send_nowhere)
        edge.fold()

    with caplog.at_level(logging.INFO, logger="muto"):
        asyncio.run(batch())
    assert counted(metrics, "304") == 3  # the neighbours, and the bad path's own count
    odd = metrics.registry.get_sample_value(
        "muto_http_requests_total", {"route": "unmatched", "method": "GET", "status": "304"}
    )
    assert odd == 1  # counted, under the bounded label
    (record,) = logged(caplog)
    paths = [json.loads(line)["path"] for line in record.getMessage().splitlines()]
    assert paths == ["/desired-states/latest", "/odd", "/desired-states/latest"]
    (failure,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert failure.name == "muto.cloud.api.edge" and failure.exc_info is not None
    assert "2 failure(s)" in failure.getMessage()
