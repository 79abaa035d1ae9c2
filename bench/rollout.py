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

The same code measured an hour earlier the same day, at load 8-12: 30.4 s on SQLite
(first release 33.4 s) and 54.9 s on PostgreSQL (first release 49.5 s), the canary phase
about 1 s on both; the table's run had 9.6 s of canary phase on SQLite, the six
canaries' fetch, apply and report waiting on a machine at load 11-18.

Where the time goes at 1,000 vehicles (py-spy on the cloud and on one simulator process
during a rollout on SQLite, and the CPU seconds each process used, load about 11): the
gates are not the cost. The canary phase is about 1 s and the wave's 994 signed desired
states take 0.1-0.2 s; the wave's convergence is 96 % of the rollout and it is work, not
waiting: 15.2 CPU-s in the cloud, 16.2 CPU-s in the two simulator processes and 0.5 in
the broker for a 63 s rollout, so even alone on the 2 cores it could not take less than
about 16 s; under 10 s needs both sides' cost per vehicle (15 ms in the cloud, 16 ms in
the simulator) roughly halved. The cloud's busy samples: the vehicles' fetch (GET
/desired-states/latest, an ETag read then a document read, each a view read on a freshly
opened SQLite connection whose set-up alone is 7 %) 30 %, the writer 15 %, projection
catch-up 15 %, the MQTT listener storing agents' snapshots 10 %, the rollout controller
4 %, the notifier 2 %. The simulator's: the HTTP client (httpx and httpcore) 31 %, the
agents' passes (verify, plan, journal) 29 %, MQTT 13 %.

Removed since the last run: the stall of large fleets. httpcore 1.0.9 keeps a connection
in its pool for ever when the request it was opened for is cancelled before using it
(encode/httpcore#1093), and under load the agents' 30 s deadlines cancelled requests
there: in a 3,000-vehicle run (load 10-13) each simulator process counted 500-1,000
requests cancelled in flight, its pools kept dead connections (sockets in CLOSE-WAIT
after the cloud's 10 s head deadline closed them: 22 and 26 in two processes), requests
of those pools failed waiting for a connection (up to 436 errors per process), and the
fleet stayed at 392 of 3,000 converged for 45 s, then moved only as 90 s polls came due.
FleetTransport then ran each exchange in its own task that a caller's cancellation did
not reach (tests/integration/test_sim_link.py reproduced the leak in a second: without
the fix every request after it failed with PoolTimeout; httpx has since left the
simulator's agents, see below), and the wait for one of the simulator's shared
connections is outside the agent's deadline (a real vehicle has its
own connection; counted in, up to 1,119 requests per process gave up while queued in
that run, and their agents waited for their next poll). The same 3,000-vehicle run then
reached 95 % of its first release in 137 s at load 12-14.

10,000 vehicles on a quiet machine, with the fix (2026-12-03 15:20, SQLite, load 2.5
before and 5.6 after, most of it this run's own; `one_size(10000, "sqlite")` of this
module with a 420 s bound, outside the table because the table's run measured 1,000
only): POST /rollouts to 95 % converged in 178.6 s, against 160.9 s for the same fleet's
first release by one direct assignment; canary phase 1.8 s, wave assignment (9,994
signed desired states) 2.2 s, wave convergence 174.6 s; fleet start-up 101 s, the whole
run 684 s. The last 10,000 figure before was 226 s (SQLite, 2026-11-22); the target,
under 60 s, is not met, and PostgreSQL at 10,000 is still unmeasured (no quiet slot left
in this session; `MUTO_BENCH_FLEETS=10000 MUTO_BENCH_BACKENDS=postgres python -m bench
rollout`). Even on the quiet machine the cloud closed 366 simulator connections that
sent no request head within 10 s, each a failed exchange.

10,000 vehicles on a loaded machine (the same day, SQLite, load 17-27 during the run,
most of it from other sessions): the fleet no longer stalls but it is starved. Each of
the four simulator processes got about 7 % of a core; their event loops ran so far
behind that answers sat unread in their sockets (66 connections in CLOSE-WAIT with
unread data in one sample) and connections they opened sent no request head for 10 s,
which the cloud's head deadline closed (7,941 in the run; each is a failed exchange, and
a failed fetch waits for the next 300 s poll); the agents' start-up health reports
reached the cloud 8 minutes after they were made, the first release's reconcile reports
began arriving after about 15 minutes (1,462 stored by the end), and neither the first
release nor the rollout had a converged report within its 600 s bound. Next, on the
simulator side (its cost per vehicle decides the 10,000 figure on 2 cores): aiomqtt's
per-link once-a-second timer and per-publish thread-safe write registration (measured at
9 % and 20 % of a simulator process at 10,000 in an earlier run).

Since: the simulator's agents exchange over kept-alive connections of the agent's own
HTTP/1.1 client (h11 on asyncio streams; muto/sim/pool.py, still 10 pools of 10
connections), no longer through httpx and httpcore. 1,000 vehicles on SQLite on a quiet
machine (2026-12-03 17:15-17:29, load 1.5-6, most of it the runs' own), two runs each
way, the simulator processes' CPU seconds during the rollout (POST to 95 %): with httpx
6.1 + 5.8 CPU-s for a 16.6 s rollout and 6.3 + 6.1 for 16.2 s (first release 18.0 and
17.5 s); kept-alive h11 2.9 + 2.7 CPU-s for 9.5 s and 2.7 + 2.7 for 10.3 s (first
release 8.1 and 7.4 s): about 5.5 ms of simulator CPU per vehicle instead of 12.
10,000 vehicles not measured with it yet."""


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
