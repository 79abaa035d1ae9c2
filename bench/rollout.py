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

This table: 2026-12-04 09:45-10:00, a quiet machine of the same kind as the earlier
figures below but faster (the HTTP bench's trivial endpoint answers 25,178 req/s here
against 12,876 there; the same commit's 10,000-vehicle rollout on PostgreSQL took 33.5 s
here at 08:33 against 93.2 s there, at load 6). On this machine, this session's changes took the
10,000-vehicle rollout on PostgreSQL from 33.5 to 25.7 s: a save snapshots its aggregates
from memory instead of loading them back from the store (muto/cloud/eventlog.py); the
latest-only tables (health, heartbeats, the MQTT snapshots) are written by one upsert
per flush (`LatestRows`: the MQTT listener's snapshots alone were 59,446 single-row
INSERTs on PostgreSQL in one such run, per pg_stat_statements); the rollout view writes
a batch's report outcomes in one statement; the API's edge is one wrapper outside
Starlette. CPU during the rollout at 10,000: SQLite, the cloud 15.4 CPU-s and the four
simulator processes 5.1-5.4 each (20.7 s); PostgreSQL, the cloud 17.2 and the simulator
5.8-5.9 each (25.7 s). The paragraphs below are the earlier machine's.

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

Where the time goes (quiet machine, load 0.5-5 during the runs; the CPU seconds each
process used during the rollout, printed by the bench; py-spy with
MUTO_BENCH_PROFILE=DIR, which sampled the cloud and the busiest simulator process
during every run of this table, 2026-12-04 04:18-04:33). At 1,000 vehicles on SQLite
the cloud used 2.6 CPU-s and the two simulator processes 1.4 + 1.2 in a 3.5 s rollout;
on PostgreSQL the cloud 3.3 and the simulator 1.7 + 1.5 in 5.1 s (PostgreSQL's own CPU
not counted). At 10,000 on SQLite, 49.3 s: the cloud 35.8 CPU-s (3.6 ms a vehicle),
the four simulator processes 10.1-10.3 CPU-s each (4.1 ms a vehicle); 1 % converged at
5.4 s, 10 % at 37.0 s, 50 % at 45.3 s, 90 % at 48.9 s (reports wait in the simulator's
shared connection pools behind the fleet's fetches, so most vehicles converge at the
end). On PostgreSQL, 93.2 s: the cloud 64.6 CPU-s, the simulator 13.4-13.7 each, and
PostgreSQL's server processes the rest of both cores. The cloud's samples on SQLite:
request handling on the event loop ~24 % (the middleware and fast lane ~10 %, socket
writes ~5 %), reads on worker threads ~16 % (the poll's document ~4 %, the timeline's
audit pages ~2 %), the projector ~14 %, the writer ~12 % (the insert ~5 %), the MQTT
listener's snapshots ~5 %, the rollout controller ~3 %. On PostgreSQL 44 % of the
cloud's samples wait in psycopg for the server (the projector 26 %, the writer 18 %).
The busiest simulator process: the agents' passes ~28 % (verifying ~6 %, the journal
~6 %), their retained MQTT snapshots ~18 % (QoS 1, one publish per changed leaf),
fetches ~11 %, report deliveries ~10 %; its young garbage collections still take
50-100 ms now and then.

What changed since the day before (74.0 s on SQLite and 121.7 s on PostgreSQL at
10,000; 5.9 s and 9.1 s at 1,000):
- The garbage collector (muto/projections/collector.py, `settle_collector`): the server and
  each simulator slice ran full collections of the whole heap every second or two, 0.3
  s in the server and 0.5 s in a slice of 1,000 agents; a 1,000-agent slice
  spent 9 s in the collector during a 2,000-vehicle bench. Both now freeze what is
  alive once set up (a slice: once its agents are up) and collect the young
  generation every 10,000 allocations instead of 700: 2,000 vehicles on SQLite, 9.0 s
  -> 5.0 s, the simulator's CPU per process 4.5 -> 2.3 s, the cloud's 6.8 -> 3.9 s.
- The cloud's hot single-statement reads (the poll's document, a token) run their
  statement compiled once on the driver's connection (`ViewStore.read`, ~25 µs on
  SQLite instead of ~210 µs: SQLAlchemy switched the pooled connection to autocommit
  and back for each read, a PRAGMA each way).
- The agents' MQTT links run paho's keepalive housekeeping every quarter keepalive
  (15 s for the simulator's 60 s keepalive) instead of aiomqtt's every second.

Earlier rounds, the same week: the rollout controller reads its gates off the cached
aggregate instead of the library's deep copy of it (`WriterRepository.peek`), and the
rollout view's reports go to one UPDATE per batch instead of a read of every revision
any rollout assigned (91.8 -> 74.0 s on SQLite, 171.5 -> 121.7 s on PostgreSQL).

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
