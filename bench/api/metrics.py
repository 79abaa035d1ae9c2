"""Does the Prometheus instrumentation slow the hot path? The section `python -m bench
api_metrics` writes (bench/api_metrics.py)."""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import Result
from bench.api.backends import sqlite
from bench.api.fleet import Fleet, seed
from bench.api.load import CONNECTIONS, DURATION, SCENARIOS, WARMUP, Run, ensure_wrk, scenario, wrk
from bench.api.servers import cpu_seconds, instrumented_server, serving
from muto.cloud.settings import Settings


class Scraper:
    """Prometheus at an aggressive interval: GET /metrics every `every_s` on a thread,
    for as long as the block runs; keeps each scrape's duration."""

    def __init__(self, url: str, token: str, every_s: float = 1.0) -> None:
        self.url, self.token, self.every_s = url, token, every_s
        self.durations: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                client.get(self.url + "/metrics", headers=headers).raise_for_status()
                self.durations.append(time.perf_counter() - started)
                self._stop.wait(self.every_s)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


METRICS_TITLE = "HTTP API: request metrics"
ROUNDS = 3
IDLE_S = 3.0  # seconds the server's idle CPU is measured before each run
METRICS_VEHICLES = int(os.environ.get("MUTO_BENCH_API_METRICS_VEHICLES", "2000"))
METRICS_NOTES = f"""
Does the Prometheus instrumentation (docs/metrics.md) slow the hot path? The same 304
poll as in *HTTP API* ({CONNECTIONS} connections, {DURATION} s runs after {WARMUP} s of
warm-up, SQLite, {METRICS_VEHICLES:,} vehicles each polling with its own token), served by
`muto cloud serve` as its CLI builds it but with no per-token rate limit (at ~20,000
polls a second these vehicles are over a vehicle's 5/s, and half the answers were 429s),
with the request instrumentation in place and with the edge keeping no request metrics,
in {ROUNDS} alternating rounds each. On a machine
shared with other work the request rate swings between rounds far more than the
instrumentation could move it, so the figure to read is the server's own CPU time per
request answered (from /proc, net of the server's idle CPU measured for 3 s just
before, median of the rounds): what the instrumentation adds to each request.
*Scraped every 1 s* adds a client fetching `/metrics` every second
(fifteen times Prometheus's default rate) during the run: the scrape's cost is in that
run's CPU per request. *Instrumentation alone* calls the app's edge
(muto/cloud/api/edge.py) in process around an app that answers at once, with its request
metrics and without them (access log off): their own cost per request. The scrape's
gauges are computed on a worker thread from the views; its median duration is compared
with one poll's. `python -m bench api_metrics`.
"""


def run_metrics() -> list[Result]:
    """The section `python -m bench api_metrics` writes (bench/api_metrics.py)."""
    ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="muto-bench-load-") as tmp, sqlite() as found:
        _, settings = found
        return instrumentation(settings, seed(settings, METRICS_VEHICLES), Path(tmp))


@dataclass(frozen=True)
class Served:
    run: Run
    # The server's CPU time per request answered during the measured run, net of what it
    # spends idle (projector ticks, health flushes, the controller), measured just before.
    cpu_us: float
    scrapes: list[float]  # seconds each /metrics scrape took meanwhile (if any)


def served(settings: Settings, metrics: str, fleet: Fleet, workdir: Path, scrape: bool) -> Served:
    kind, pids = "poll-etag", list[int]()
    log = settings.data_dir / f"server-metrics-{metrics}.log"
    with serving(instrumented_server(settings, metrics), log, pids) as url:
        script = scenario(kind, fleet)
        wrk(url, script, WARMUP, workdir)
        time.sleep(1.0)  # let the warm-up's writes settle
        idle_start, started = cpu_seconds(pids[0]), time.monotonic()
        time.sleep(IDLE_S)
        idle = (cpu_seconds(pids[0]) - idle_start) / (time.monotonic() - started)
        scraper = Scraper(url, fleet.operator)
        with scraper if scrape else contextlib.nullcontext():
            before, started = cpu_seconds(pids[0]), time.monotonic()
            found = wrk(url, script, DURATION, workdir)
            used = cpu_seconds(pids[0]) - before - idle * (time.monotonic() - started)
    print(
        f"request metrics {metrics}, scraped={scrape}: {found}, {used:.2f} s CPU net of "
        f"{idle:.3f} s/s idle",
        flush=True,
    )
    return Served(found, used / max(1, found.requests) * 1e6, scraper.durations)


def instrumentation_alone(requests: int = 200_000) -> tuple[float, float]:
    """µs per request of an ASGI app that answers 304 at once, behind the app's edge
    without and with its request metrics (access log off), called directly (no server,
    no sockets); the edge's batches folded in as the server's timer does (`Edge.fold`)."""
    import asyncio

    from muto.cloud.api.edge import Edge
    from muto.cloud.metrics import CloudMetrics

    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 304, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> Any:
        return {"type": "http.request"}

    async def send(_: Any) -> None:
        return None

    templates = {endpoint: "/desired-states/latest"}
    bare_edge = Edge(endpoint, None, templates)
    wrapped = Edge(endpoint, CloudMetrics(), templates)

    async def calls(app: Edge) -> float:
        scope = {
            "type": "http",
            "method": "GET",
            "endpoint": endpoint,
            "path": "/",
            "query_string": b"",
        }
        started = time.process_time()
        for i in range(requests):
            await app(scope, receive, send)
            if i % 1000 == 999:  # the loop never idles here: its timer would not run
                app.fold()
        app.fold()
        return (time.process_time() - started) / requests * 1e6

    bare = min(asyncio.run(calls(bare_edge)) for _ in range(3))
    instrumented = min(asyncio.run(calls(wrapped)) for _ in range(3))
    return bare, instrumented


def instrumentation(settings: Settings, fleet: Fleet, workdir: Path) -> list[Result]:
    """The hot path (a poll answered 304) with the request metrics on and off, in
    alternating rounds, and with /metrics scraped every second; the figure that load on
    a shared machine moves least is the server's own CPU time per request."""
    rounds: dict[str, list[Served]] = {"off": [], "on": []}
    for metrics in ("off", "on") * ROUNDS:
        rounds[metrics].append(served(settings, metrics, fleet, workdir, scrape=False))
    scraped = served(settings, "on", fleet, workdir, scrape=True)
    scrapes = scraped.scrapes
    off = statistics.median(r.cpu_us for r in rounds["off"])
    on = statistics.median(r.cpu_us for r in rounds["on"])
    rate_off = max(r.run.rate for r in rounds["off"])
    rate_on = max(r.run.rate for r in rounds["on"])
    bare, alone = instrumentation_alone()
    what = SCENARIOS["poll-etag"]
    requests = sum(r.run.requests for rs in rounds.values() for r in rs)
    workload = f"{ROUNDS} rounds each, {requests:,} requests, median"
    scraped_load = f"{scraped.run.requests:,} requests, {len(scrapes)} scrapes"
    return [
        Result(f"{what}, request metrics on: server CPU per request", on, "µs", workload,
               "metrics off", off),
        Result(f"{what}, request metrics on: rate (best round)", rate_on, "req/s",
               workload.replace("median", "best round"), "metrics off", rate_off),
        Result(f"{what}, /metrics scraped every 1 s: server CPU per request", scraped.cpu_us,
               "µs", scraped_load, "metrics off", off),
        Result("Request instrumentation alone (in process, CPU)", alone, "µs",
               "200,000 calls of an ASGI app that answers 304, best of 3",
               "the same edge without metrics", bare),
        Result("/metrics scrape (median)", statistics.median(scrapes) * 1000, "ms",
               f"{len(scrapes)} scrapes of {len(fleet.pollers):,} vehicles",
               "one poll (304), p50", statistics.median(r.run.p50_ms for r in rounds["off"])),
    ]  # fmt: skip
