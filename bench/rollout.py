"""Rollouts at fleet scale: time from `POST /rollouts` to 95 % converged, with instant
apply (the control plane's own overhead), for 1,000 and 10,000 simulated vehicles."""

from __future__ import annotations

import asyncio
import math
import os
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench import Result
from bench.fleet_rig import FleetRig

TITLE = "Rollouts"
# Each measured convergence stops here at the latest and reports how much of the fleet
# had converged by then: a run is bounded (start-up and settling have their own bounds).
TIMEOUT_S = float(os.environ.get("MUTO_BENCH_ROLLOUT_LIMIT_S", "600"))
# Both sizes by default: 10,000 vehicles take most of the section's time
# (MUTO_BENCH_FLEETS=1000 runs the small one alone).
SIZES = [int(n) for n in os.environ.get("MUTO_BENCH_FLEETS", "1000,10000").split(",")]
# MUTO_BENCH_BACKENDS=sqlite runs SQLite alone.
BACKENDS = os.environ.get("MUTO_BENCH_BACKENDS", "sqlite,postgres").split(",")
ADMIN_URL = os.environ.get(
    "MUTO_BENCH_DATABASE_URL",
    os.environ.get(
        "MUTO_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
)
NOTES = """\
Real agents (`muto sim fleet`: two processes for 1,000 vehicles, four for 10,000; MQTT
notify plus a poll; simulated runtime with instant apply), the cloud (`muto cloud serve`,
one process, on SQLite files or on PostgreSQL on the same machine) and Mosquitto share
the machine's 2 cores. The poll and periodic health intervals grow with the fleet (30 s
and 300 s per 1,000 vehicles: 300 s and 3,000 s at 10,000), so that the background load
on the cloud is the same at both sizes (about 37 requests/s); so does the presence
heartbeat set in the assignments' agentConfig (30 s per 1,000 vehicles). Simulated MQTT
links wait 60 s for a broker round trip and ping every 60 s (a vehicle's own: 10 s and
30 s), since 2,500 of them share one event loop. Each run starts from a
settled fleet (every agent up, the event log quiet for 3 s). A vehicle counts as
converged once the cloud has stored its converged report on the revision assigned to
it; the figure is the stored time of the report that brought the fleet to 95 %, found by
following the audit timeline. The baseline is the same fleet given the next release by
one direct desired-state assignment (no canary, no gates). *Where the time goes* splits
the rollout at its stored events: canary phase (the POST to the canary gate decision;
the controller evaluates every 0.5 s), wave assignment (the decision to the wave's
desired states built and signed, in the same transaction), wave convergence (the rest:
storing the wave, notify, each agent's fetch, verify, apply and report, to 95 %).

Removed since the last run (profiled with py-spy on the cloud and on the simulator,
1,000 vehicles): the MQTT listener stored each vehicle's agent snapshot in its own
transaction (after a wave every vehicle re-publishes its components: 16 % of the cloud's
samples, half of them in commits holding SQLite's one writer from the reports), it now
stores back-to-back snapshots in one; the notifier stored its position in a write
transaction on every pass that found only reports, in a loop that then never slept; the
controller read every member's row twice a second (10 % of the cloud's samples at 1,000,
ten times that many rows at 10,000), it now counts members by status in SQL; the
simulator's one pool of 100 connections is ten pools of ten (httpcore checks every
connection of its pool on each request, two system calls each: a fifth of the
simulator's samples).

Where the time goes now is the rest of the report path, outside the rollout code: per
vehicle the wave is one fetch, one report and one health transition, each a write that
waits for its group commit and for the views (read-your-writes). Cloud samples during a
1,000-vehicle wave on PostgreSQL: projection catch-up 27 %, the writer 23 % (of which
14.5 % loading the vehicle aggregate by replaying its whole history for each report),
HTTP and middleware about 8 %; on SQLite the projector about 16 % and the writer 11 %, the
rest waiting on commits. The simulator's samples: the HTTP client about 45 %, MQTT
snapshots about 9 %, verification under 2 %.

10,000 vehicles (2026-12-03, SQLite, load 10-14 from other sessions). The links did not
miss keep-alives at the broker (its log has no expired session): they ended their own
sessions. aiomqtt waits 10 s for each CONNACK, SUBACK and PUBACK; while a wave is
applied a simulator loop of 2,500 agents runs seconds behind, the wait expires, the
session is dropped (a clean DISCONNECT), and the reconnect republishes every snapshot,
which slows the loop further: 488 disconnections in the first second of the first
release, 4,155 in seven minutes, with aiomqtt then registering readers on closed, reused
descriptors. The cloud's own session overflowed the rig broker's 10,000-message queue
and lost snapshots. With the simulated links' 60 s wait and keep-alive and a
100,000-message queue (as in deploy/mosquitto/mosquitto.conf), the same run had 3
disconnections in eight minutes and no dropped message. It still does not converge: only
646 of the 10,000 agents made their start-up fetch before the first release, and in the
two minutes after its notify none fetched, although the cloud published every notify
(retained), the broker held all 20,010 subscriptions and the links kept publishing
heartbeats; a 20-vehicle fleet started beside it against the same cloud and broker
fetched within seconds of its assignment. The large fleet then fetched only as its 300 s
polls came due, so the rollout cannot reach 95 % within the bench's 900 s, and no 10,000
figure was recorded (the last is 226 s on SQLite on a quiet machine, 2026-11-22;
PostgreSQL at 10,000 is unmeasured). Profiles of that run: the cloud during the first
release, projection catch-up 29 %, the writer 18 %, the notifier 5 %, idle once the
fleet stopped fetching; a simulator slice, aiomqtt's per-publish thread-safe write
registration 20 % (a self-pipe write and an epoll change per packet) and its
once-a-second timer per link 9 % (2,500 wakeups a second per process). One slice alone
(2,500 agents, one process, its own cloud and broker, same machine while tests ran) is
slow but sound: 1,598 start-up fetches before the log settled (55 s), then 489, 1,027,
2,012 and 2,497 fetches 10, 20, 30 and 40 s after the notify. A second 10,000 run (four
slices, fresh cloud and broker) stalled the same way while the machine was idle, so it
is not the slices starving: 819 start-up fetches, then 13, 147, 377, 525 and 541 fetches
10 to 50 s after the notify and none more for a minute after that; the cloud had
published all 10,000 notifies (20 batches of 500), the broker dropped nothing and no
link disconnected. What the stalled slices show: their HTTP connections to the cloud
include sockets in CLOSE-WAIT (23 in one slice) and the cloud had closed 46 connections
for sending no request head within 10 s, which points at the simulator's HTTP pools
(FleetTransport's turns over httpcore) holding connections the cloud's head deadline
closed, so every later fetch of that pool waits. Next: instrument FleetTransport's turns
and pools in that state, fix the leak, then run the bench at both sizes."""


class Timeline:
    """Follows the stored events (GET /audit, after a log position) and finds when the
    fleet reached its target: per vehicle, the revision of its last converged report;
    the time is the stored time of the report that made the count. Reading only what
    is new keeps the measuring cheap for the cloud it measures (listing 10,000 vehicles
    twice a second took a third of the cloud's time)."""

    PAGE = 5000

    def __init__(self, rig: FleetRig, after: int, ours: Callable[[dict[str, Any]], bool]):
        self.rig, self.after, self.ours = rig, after, ours
        self.wanted: set[str] = set()  # revisions assigned by the action measured
        self.converged: dict[str, str | None] = {}  # vehicle -> revision last converged on
        self.count = 0
        self.reached_at: datetime | None = None

    async def read(self, target: int) -> None:
        while self.reached_at is None:
            page = await self.rig.operator.http.get(
                "/audit", params={"after": str(self.after), "limit": str(self.PAGE)}
            )
            page.raise_for_status()
            entries = page.json()["data"]
            for e in entries:
                self._apply(e, target)
            if entries:
                self.after = entries[-1]["position"]
            if len(entries) < self.PAGE:
                return

    def _apply(self, e: dict[str, Any], target: int) -> None:
        kind, data = e["eventType"], e["data"]
        if kind == "Vehicle.DesiredStateAssigned" and self.ours(data["assignment"]):
            self.wanted.add(data["assignment"]["revision"])
        elif kind == "Vehicle.ReconcileReported":
            report = data["report"]
            revision = report["desiredStateRevision"] if report["status"] == "converged" else None
            before = self.converged.get(e["vehicleId"])
            self.converged[e["vehicleId"]] = revision
            self.count += (revision in self.wanted) - (before in self.wanted)
            if self.count >= target and self.reached_at is None:
                self.reached_at = datetime.fromisoformat(e["at"])


@dataclass(frozen=True)
class Converged:
    seconds: float  # to the target, or TIMEOUT_S if it was not reached
    reached: bool
    share: float  # of the fleet converged when it was reached, or at TIMEOUT_S
    started: datetime

    def __str__(self) -> str:
        return "" if self.reached else f" (95 % not reached: {self.share:.0%} at {TIMEOUT_S:.0f} s)"


async def time_to_converge(
    rig: FleetRig,
    start: Callable[[], Awaitable[None]],
    ours: Callable[[dict[str, Any]], bool],
    target: float = 0.95,
) -> Converged:
    """Seconds from `start()` until `target` of the fleet has a stored converged report
    on a revision that `ours(assignment)` recognises (a rollout assigns its wave later),
    and when `start()` was called; at most TIMEOUT_S."""
    position = (await rig.operator.http.get("/healthz")).json()["data"]["position"]
    timeline = Timeline(rig, position, ours)
    t0 = datetime.now(UTC)  # the cloud's stored times come from the same clock
    await start()
    while True:
        await timeline.read(math.ceil(target * rig.vehicles))
        share = timeline.count / rig.vehicles
        if timeline.reached_at is not None:
            return Converged((timeline.reached_at - t0).total_seconds(), True, share, t0)
        if (datetime.now(UTC) - t0).total_seconds() > TIMEOUT_S:
            return Converged(TIMEOUT_S, False, share, t0)
        await asyncio.sleep(1.0)


def agent_config(rig: FleetRig) -> dict[str, Any]:
    """The heartbeat grows with the fleet like the poll (30 s per 1,000 vehicles): the
    same presence messages per second reach the broker and the cloud at every size."""
    return {"heartbeatS": min(3600, round(30 * max(1.0, rig.vehicles / 1000)))}


async def assign_all(rig: FleetRig, version: str) -> Converged:
    """One direct desired-state assignment to the whole fleet, to 95 % converged."""

    async def assign() -> None:
        await rig.operator.assign(
            {
                "target": {"selector": "fleet=demo"},
                "stack": {"name": "autonomy-core", "version": version},
                "agentConfig": agent_config(rig),
            }
        )

    took = await time_to_converge(
        rig, assign, lambda a: a["releaseKey"] == f"autonomy-core@{version}"
    )
    await rig.settle()
    return took


@contextmanager
def database(backend: str) -> Iterator[str | None]:
    """None for SQLite (the cloud's files); a fresh PostgreSQL database, dropped after."""
    if backend == "sqlite":
        yield None
        return
    info = ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    name = f"muto_bench_rollout_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(info, autocommit=True, connect_timeout=3) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{ADMIN_URL.rpartition('/')[0]}/{name}"
    finally:
        with psycopg.connect(info, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def one_size(n: int, backend: str) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="muto-bench-rollout-") as tmp, database(backend) as url:
        scale = max(1.0, n / 1000)  # the same background requests/s at every size
        load_before = os.getloadavg()[0]
        async with FleetRig(
            Path(tmp),
            n,
            processes=2 if n <= 2000 else 4,
            poll_s=30 * scale,
            health_every_s=300 * scale,
            database_url=url,
        ) as rig:
            first = await assign_all(rig, "1.0.0")  # every vehicle's first release

            async def start_rollout() -> None:
                await rig.operator.start_rollout(
                    {
                        "selector": "fleet=demo",
                        "stack": "autonomy-core",
                        "version": "1.1.0",
                        "rolloutId": "bench",
                        "agentConfig": agent_config(rig),
                    }
                )

            took = await time_to_converge(rig, start_rollout, lambda a: a["rolloutId"] == "bench")
            try:
                canary, wave_assigned = await phases(rig, took.started)
            except (IndexError, LookupError):  # the bound came first: not decided or assigned
                canary = wave_assigned = math.nan
    on = "SQLite" if backend == "sqlite" else "PostgreSQL"
    load = f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    workload = (
        f"{n:,} simulated vehicles, 6 canaries (3 regions x 2 models); fleet "
        f"start-up {rig.startup_s:.0f} s and settling not counted; {load}"
    )
    direct = "the same fleet's first release by one direct assignment, to 95 %"
    return [
        Result(
            f"POST /rollouts to 95 % converged, {n:,} vehicles, {on}{took}",
            took.seconds,
            "s",
            workload,
            f"{direct}{first}",
            first.seconds,
        ),
        Result(
            f"canary phase (POST to gate decision), {n:,} vehicles, {on}",
            canary,
            "s",
            "part of the rollout above",
            "whole rollout",
            took.seconds,
        ),
        Result(
            f"wave assignment (gate decision to the wave's desired states signed), "
            f"{n:,} vehicles, {on}",
            wave_assigned - canary,
            "s",
            f"part of the rollout above: {n - 6:,} per-vehicle signed desired states, built in "
            "the decision's transaction",
            "whole rollout",
            took.seconds,
        ),
        Result(
            f"wave convergence (wave signed to 95 %), {n:,} vehicles, {on}{took}",
            took.seconds - wave_assigned,
            "s",
            "part of the rollout above: commit, notify, fetch, verify, apply, report, "
            "as the operator sees it",
            "whole rollout",
            took.seconds,
        ),
    ]


async def phases(rig: FleetRig, posted: datetime) -> tuple[float, float]:
    """From the stored events, seconds after the POST: the canary gate decision, and
    the wave's assignment (its `Rollout.PhaseAssigned` event, stored in the decision's
    transaction after the wave's desired states were built and signed)."""
    rollout = await rig.operator.rollout("bench")
    decision = rollout["decisions"][0]
    after = decision["position"]
    while True:
        page = await rig.operator.http.get(
            "/audit", params={"rolloutId": "bench", "after": str(after), "limit": "5000"}
        )
        page.raise_for_status()
        entries = page.json()["data"]
        for e in entries:
            if e["eventType"] == "Rollout.PhaseAssigned" and e["data"]["phase"] == "wave":
                return (
                    (datetime.fromisoformat(decision["at"]) - posted).total_seconds(),
                    (datetime.fromisoformat(e["at"]) - posted).total_seconds(),
                )
        if not entries:
            raise LookupError("no wave assignment after the canary decision")
        after = entries[-1]["position"]


def run() -> list[Result]:
    results: list[Result] = []
    for n in SIZES:
        for backend in BACKENDS:
            try:
                measured = asyncio.run(one_size(n, backend))
            except Exception as exc:  # the other sizes and backends still get measured
                print(f"  {n:,} vehicles on {backend}: failed: {exc!r}", flush=True)
                continue
            for r in measured:  # as they come: a 10,000-vehicle run is long
                print(
                    f"  {r.name}: {r.value:.1f} {r.unit} "
                    f"({r.baseline_name}: {r.baseline_value:.1f})",
                    flush=True,
                )
            results.extend(measured)
    return results
