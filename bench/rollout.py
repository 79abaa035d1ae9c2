"""Rollouts at fleet scale: time from `POST /rollouts` to 95 % converged, with instant
apply (the control plane's own overhead), for 1,000 and 10,000 simulated vehicles."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
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
notify plus a poll; simulated runtime with instant apply), the cloud (`muto cloud
serve`, one process, on SQLite files or on PostgreSQL on the same machine) and Mosquitto
share the machine's 2 cores. The poll and periodic health intervals grow with the fleet
(30 s and 300 s per 1,000 vehicles: 300 s and 3,000 s at 10,000), so that the background
load on the cloud is the same at both sizes (about 37 requests/s); so does the presence
heartbeat set in the assignments' agentConfig (30 s per 1,000 vehicles). Simulated MQTT
links wait 60 s for a broker round trip and ping every 60 s (a vehicle's own: 10 s and
30 s), since 2,500 of them share one event loop. Each run starts from a settled fleet
(every agent up, the event log quiet for 3 s). A vehicle counts as converged once the
cloud has stored its converged report on the revision assigned to it; the figure is the
stored time of the report that brought the fleet to 95 %, found by following the audit
timeline. Every convergence is bounded (`MUTO_BENCH_ROLLOUT_LIMIT_S`, 600 s): one that
does not reach 95 % is shown at the bound with the share of the fleet converged by then.
The rollout uses the production defaults of `POST /rollouts` (nothing shortened for the
bench: the canary gate at 95 % converged, and the 600 s bake after the wave, which the
figure does not include since it stops at 95 % converged). The baseline is the same
fleet's first release, one direct desired-state assignment (no canary, no gates),
measured in the same run just before. *Where the time goes* splits the rollout at its
stored events: canary phase (the POST to the canary gate decision; the controller
evaluates every 0.5 s), wave assignment (the decision to the wave's desired states built
and signed, in the same transaction), wave convergence (the rest: storing the wave,
notify, each agent's fetch, verify, apply and report, to 95 %). Each row names the load
average before and after its run: the machine is shared with other sessions' tests and
benchmarks, and every figure here moves with it.

Since the morning's figures (42.4 s on SQLite and 41.4 s on PostgreSQL at 1,000
vehicles, load 10-18): the simulator's agents exchange over kept-alive connections of
the agent's own HTTP/1.1 client (h11; muto/sim/pool.py, 10 pools of 10 connections)
instead of httpx and httpcore, about 5.5 ms of simulator CPU per vehicle instead of 12
at 1,000; in the cloud a poll reads its vehicle's document once (ETag and the envelope
as stored, decoded only for a 200) instead of twice, API reads take turns for 12 kept
view connections (before, a read past the pool's five opened and set up a fresh
connection), the projector takes the records its own process has just stored from memory
instead of selecting them back from the log, and PostgreSQL gets the append's and the
views' arrays in binary.

Where the time goes at 1,000 vehicles, quiet machine (the CPU seconds each process used
during the rollout, printed by the bench; py-spy with MUTO_BENCH_PROFILE=DIR): on SQLite
the cloud used 4.6 CPU-s and the two simulator processes 2.6 + 2.5 in a 5.9 s rollout,
on PostgreSQL the cloud 7.7 and the simulator 3.4 + 3.1 in 9.1 s (PostgreSQL's own CPU
not counted; an earlier run the same day: 5.6 s and 8.1 s): the two cores are nearly
all used, so the rollout is work again, not waiting. The cloud's busy samples (SQLite,
before the controller stopped copying its rollout): request handling on the event loop (uvicorn,
the middleware, the fast lane's reports) about 35 %, the projector's step 24 % (its
positions read 5 %, the views' code, the commit), the writer 14 %, the reads on worker
threads 12 %, notifier, controller and MQTT listener 2-3 % each. The simulator's: MQTT
(aiomqtt and paho: snapshots and acknowledgements) about a quarter, the HTTP exchanges
23 %, the agents' passes (verify, plan, journal) 20 %. On a loaded machine (another
session's tests, load 5-10) the same rollout took 10.9-13.1 s with neither side busy all
the time: a report then waited a median 2.9 s in the simulator between being made and
being stored (the cloud answers one in 55 ms median), and the same run with four
simulator processes instead of two took 8.7 s.

10,000 vehicles (`one_size(10000, backend)` of this module, outside the table, which
measures 1,000 by default), quiet machine (load 0.3-0.5 before), 2026-12-03 23:37-00:02:
on SQLite, POST /rollouts to 95 % converged in 74.0 s against 160.0 s for the same
fleet's first release by one direct assignment; canary phase 2.0 s, wave assignment
(9,994 signed desired states) 2.6 s, wave convergence 69.4 s (1 % converged at 22.4 s,
10 % at 61.5 s, 50 % at 68.5 s, 90 % at 73.5 s: reports wait in the simulator's shared
connection pools behind the fleet's fetches, so most vehicles converge at the end); the
cloud used 52.3 CPU-s (5.2 ms a vehicle) and the four simulator processes 21.4-22.0
CPU-s each (8.7 ms a vehicle). On PostgreSQL 121.7 s (first release 204.4 s), the cloud
84.9 CPU-s (8.5 ms a vehicle), the simulator 29.3-30.5 CPU-s per process. Before this
round, the same day: 91.8 s on SQLite (cloud 81.5 CPU-s) and 171.5 s on PostgreSQL
(cloud 143.6 CPU-s). What changed: a py-spy profile of the 10,000-vehicle rollout on
SQLite showed the rollout controller at 9 % of the cloud, half of it the library's deep
copy of the rollout aggregate (every member's revision) twice a second, under the lock
the writer takes for each batch; it now reads what its gates need off the cached
aggregate (`WriterRepository.peek`). And the rollout view read every revision any
rollout ever assigned, once per projector batch, to skip reports no rollout counts (3 %
of the cloud, and growing with the history); the reports now go to the view's one
UPDATE per batch, which matches nothing for those. The target, under 60 s, is not met:
the two cores are busy (cloud plus simulator 139 CPU-s in 74 s on SQLite), so both need
cutting again. What is left, from that profile: the cloud's request handling on the
event loop ~20 %, the projector ~15 %, the poll's one read ~9 %, the writer ~9 %, the
MQTT listener's snapshot batches ~4 %; the simulator's agents publishing their
retained MQTT snapshots (QoS 1, one per changed leaf) ~17 %, fetches ~14 %, report
deliveries ~12 %, aiomqtt's once-a-second housekeeping per link ~5 %, h11's request
validation ~3 %.

The stall of large fleets, fixed earlier the same day: httpcore 1.0.9 keeps a connection
in its pool for ever when the request it was opened for is cancelled before using it
(encode/httpcore#1093); under load the agents' deadlines cancelled such requests, and a
10,000-vehicle fleet stopped fetching within a minute of a release. The simulator's own
pool closes a connection whose exchange was abandoned, and the wait for a shared
connection comes before the agent's deadline starts (a real vehicle has its own
connection); tests/integration/test_sim_link.py holds both."""


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
        self.gains: list[datetime] = []  # when the count went up, in order

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
            if revision in self.wanted and before not in self.wanted:
                self.gains.append(datetime.fromisoformat(e["at"]))
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
            shares = (0.01, 0.1, 0.5, 0.9)
            at = [
                (timeline.gains[int(q * (len(timeline.gains) - 1))] - t0).total_seconds()
                for q in shares
            ]
            print(
                "  converged "
                + ", ".join(f"{q:.0%} at {s:.1f} s" for q, s in zip(shares, at, strict=True)),
                flush=True,
            )
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

            cpu_before, cloud_before = rig.sim_cpu_s(), rig.cloud_cpu_s()
            with profiled(rig, f"{n}-{backend}"):
                took = await time_to_converge(
                    rig, start_rollout, lambda a: a["rolloutId"] == "bench"
                )
            cpu = {p: s - cpu_before.get(p, 0.0) for p, s in rig.sim_cpu_s().items()}
            print(
                f"  CPU during the rollout ({took.seconds:.1f} s): cloud "
                f"{rig.cloud_cpu_s() - cloud_before:.1f} s; simulator, per process: "
                + ", ".join(f"{s:.1f} s" for s in sorted(cpu.values(), reverse=True)),
                flush=True,
            )
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


@contextmanager
def profiled(rig: FleetRig, name: str) -> Iterator[None]:
    """With MUTO_BENCH_PROFILE=DIR, py-spy samples the cloud and the fleet's busiest
    process for the rollout, into DIR/rollout-<size>-<backend>-{cloud,sim}.txt (collapsed
    stacks; py-spy must be installed)."""
    where = os.environ.get("MUTO_BENCH_PROFILE")
    if not where:
        yield
        return
    assert rig.cloud.proc is not None
    busiest = max(rig.sim_cpu_s().items(), key=lambda item: item[1])[0]
    spies = [
        subprocess.Popen(
            ["py-spy", "record", "--nonblocking", "--format", "raw", "--pid", str(pid),
             "-o", str(Path(where) / f"rollout-{name}-{who}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for who, pid in (("cloud", rig.cloud.proc.pid), ("sim", busiest))
    ]  # fmt: skip
    try:
        yield
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            spy.wait(30)


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
