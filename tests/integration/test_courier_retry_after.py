"""The agent honours Retry-After (#14 item 8): the real courier and HTTP
client against `muto cloud serve` with a low per-vehicle rate limit. After a 429 the
next delivery waits at least the Retry-After the cloud sent, however short the
courier's own backoff, and every report still arrives once, in order; a fetch over the
limit carries the cloud's Retry-After to the intake."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from muto.agent.clock import SystemClock
from muto.agent.journal import Journal
from muto.agent.journal.events import ReportDelivered, ReportDropped, ReportQueued
from muto.agent.transport.courier import Courier
from muto.agent.transport.http import CloudClient, Delivery, Fetched, NotFetched, RetryLater
from muto.domain.reports import ReconcileReport, ReconcileStatus
from muto.domain.wire import encode
from tests.support.api_server import ApiServer, vehicle_body

REPORTS = 6


@dataclass
class Recording:
    """The real client, and when each delivery was tried and how it went."""

    client: CloudClient
    tries: list[tuple[float, str, str]] = field(default_factory=list)

    async def deliver(self, kind: str, body: bytes) -> tuple[Delivery, str]:
        verdict, detail = await self.client.deliver(kind, body)
        self.tries.append((time.monotonic(), verdict, detail))
        return verdict, detail


def queued(n: int) -> ReportQueued:
    now = datetime.now(UTC)
    report = ReconcileReport(
        schema="muto.reconcile-report.v1",
        report_id=f"rep-{n}",
        vehicle_id="v1",
        status=ReconcileStatus.CONVERGED,
        observed_at=now,
    )
    body = msgspec.Raw(encode(report))
    return ReportQueued(
        at=now, report_id=report.report_id, kind="reconcile", body=body, revision=None,
        status="converged", codes=[],
    )  # fmt: skip


@contextmanager
def limited_cloud(tmp_path: Path) -> Iterator[tuple[ApiServer, str]]:
    """`muto cloud serve` with vehicle v1 registered, at 2 requests/s, burst 2: the
    bucket's wait is at most 0.5 s, sent rounded up (1 s); yields v1's token."""
    limits = ("--vehicle-rate", "2", "--vehicle-burst", "2")
    server = ApiServer(tmp_path / "cloud", None, options=limits)
    tokens = server.issue("operator", "v1")
    server.start()
    try:
        with server.client(tokens["operator"][0]) as op:
            assert op.post("/vehicles", json=vehicle_body("v1")).status_code == 201
        yield server, tokens["v1"][0]
    finally:
        assert server.stop() == 0, server.tail()
    assert server.tracebacks() == []


def test_the_courier_waits_retry_after_and_delivers_everything(tmp_path: Path) -> None:
    # The Retry-After (1 s) is ten times the courier's own longest backoff.
    with limited_cloud(tmp_path) as (server, token):
        journal = Journal.open(tmp_path / "agent")
        journal.append(*(queued(n) for n in range(REPORTS)))
        sink = Recording(CloudClient(server.url, "v1", token))
        courier = Courier(journal, sink, SystemClock(), backoff_s=0.05, max_backoff_s=0.1)

        async def deliver_all() -> None:
            task = asyncio.create_task(courier.run())
            try:
                async with asyncio.timeout(120):
                    while journal.state.outbox:
                        await asyncio.sleep(0.05)
            finally:
                task.cancel()
                await sink.client.aclose()

        asyncio.run(deliver_all())
        events = [
            r.event
            for r in journal.records()
            if isinstance(r.event, ReportDelivered | ReportDropped)
        ]
        journal.close()
    assert [type(e) for e in events] == [ReportDelivered] * REPORTS
    assert [e.report_id for e in events] == [f"rep-{n}" for n in range(REPORTS)]
    limited = [i for i, (_, verdict, detail) in enumerate(sink.tries) if "429" in detail]
    assert limited, "the limit was never reached"
    for i in limited:
        at, verdict, detail = sink.tries[i]
        # The bucket's wait (at most 0.5 s at 2/s), rounded up to whole seconds: 1 s.
        assert verdict == "retry" and isinstance(detail, RetryLater)
        assert detail.after_s == 1.0
        assert sink.tries[i + 1][0] - at >= detail.after_s - 0.01, sink.tries


def test_a_fetch_over_the_limit_says_when_to_ask_again(tmp_path: Path) -> None:
    """The same limit on the desired-state fetch: the client hands the cloud's
    Retry-After to the intake (RetryLater), which asks nothing before it ends."""
    with limited_cloud(tmp_path) as (server, token):

        async def fetch_thrice() -> list[NotFetched | Fetched]:
            client = CloudClient(server.url, "v1", token)
            try:
                return [await client.latest(None) for _ in range(3)]
            finally:
                await client.aclose()

        answers = asyncio.run(fetch_thrice())
    assert answers[:2] == [NotFetched("none_assigned"), NotFetched("none_assigned")]
    refused = answers[2]
    assert isinstance(refused, NotFetched) and refused.why == "unreachable"
    assert isinstance(refused.detail, RetryLater) and refused.detail.after_s == 1.0
    assert refused.detail == "HTTP 429, retry after 1 s"
