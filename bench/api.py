"""HTTP API: requests per second and p50/p99 latency of the steady-state endpoints.

The server is `muto cloud serve` as operators run it (one uvicorn process, access log
on), on SQLite and on PostgreSQL, with a seeded fleet. The load comes from `wrk` in a
separate process on loopback (one thread, a fixed number of connections, closed loop),
with Lua scripts that rotate over the fleet's vehicles and their own tokens. Baseline:
a trivial Starlette endpoint served by uvicorn the same way, loaded the same way, in
the same run. `MUTO_BENCH_SCALE=0.2` shortens every run. Needs `wrk` (Debian: `apt-get
install -y wrk`; installed here when missing and running as root).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import select

from bench import Result
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause, assign_desired_state, register_release, register_vehicle
from muto.cloud.settings import Settings
from muto.cloud.tokens import Role, issue_token
from muto.domain.desired import DesiredStateRequest, StackRef, Target
from muto.domain.release import Artifact, ArtifactType, StackRelease
from muto.domain.requests import VehicleRegistration
from muto.trust.keys import Signer
from muto.trust.releases import manifest_digest, sign_release

TITLE = "HTTP API"
SCALE = float(os.environ.get("MUTO_BENCH_SCALE", "1"))
DURATION = max(2, round(10 * SCALE))  # seconds per measured run
WARMUP = max(1, round(3 * SCALE))
CONNECTIONS = 32
# Every vehicle takes part with a token of its own, in turn, as many as the fleet a
# 2-core node should serve (issue #16): per-vehicle memory (token, current ETag, health
# status) then costs what it would for that fleet. With a few hundred pollers every
# cache is small and hot, and flatters the API.
VEHICLES = int(os.environ.get("MUTO_BENCH_API_VEHICLES", "100000"))
ADMIN_URL = os.environ.get(
    "MUTO_BENCH_DATABASE_URL",
    os.environ.get(
        "MUTO_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
)
TARGET = 100_000 / 30 + 100_000 / 60  # a poll every 30 s and a health report every 60 s

NOTES = f"""
How to read it: each row is one `wrk` run of {DURATION} s ({CONNECTIONS} connections,
1 thread) after a {WARMUP} s warm-up, against a server with {VEHICLES:,} vehicles, every
one of which takes part in turn with its own vehicle token. *Poll* is `GET
/desired-states/latest` (the signed bundle, ~3 KB); *poll, current ETag* sends
`If-None-Match` and gets 304; *reconcile* stores one event per request (a new report
id each time) and waits for the views (read-your-writes); *health* reports an unchanged
status (no event: the latest-health table is flushed once a second). *Fleet mix* is
the steady traffic of a fleet: two current-ETag polls for one health report. The
target a 2-core node should absorb is 100,000 vehicles polling every 30 s and reporting
health every 60 s: {TARGET:,.0f} req/s of that mix. Load generator, server, and
PostgreSQL share the same 2 CPUs; wrk's closed loop under-reports tail latency when the
server stalls (coordinated omission).

Caches, and why the fleet is {VEHICLES:,} vehicles: the fleet is seeded through the
control plane's write path (every command submitted to the writer at once, group
committed up to 512 a transaction); the server then gets one pass over the fleet in
three sweeps (each vehicle reports its health, a transition, polls, and reports again)
before anything is measured, as a real fleet would have done in its first minute. The
API's memories that answer polls are exact, not timed: a vehicle's current ETag and a
known token are kept until the commit that changes them evicts them (in every API
process: docs/api.md), so a real fleet hits them as this one does. A poll that the
ETag memory cannot answer reads only the current ETag from the view; a 200 adds the
signed document, and the release envelope is read once per process (releases are
immutable).

Where the time goes (py-spy on the server; details and CPU per request in docs/api.md,
*Performance*): the server runs uvicorn's httptools parser, and so does the trivial
endpoint (uvicorn picks it when installed): the baseline got faster with it too. *Poll
(200)*: the view read of the vehicle's latest desired state (one query, on a worker
thread), turning the stored envelope into its Struct and encoding the ~3 KB bundle; the
release envelope comes from memory. *Poll, current ETag*, *health* and the *fleet mix*:
no query and no write once the server knows the vehicle, and answered by the fast lane
(muto/cloud/api/fast.py) without Starlette's routing; what is left is uvicorn's
protocol and the socket writes, the server-error middleware, the request metrics, the
access log line, the bearer hash and lookup, the rate limit, the report's decoding and
the answer, and for health the latest-health table's flush once a second. On
PostgreSQL a vehicle's health transition is not remembered (its eviction can come from
any process at any time): the pass's third sweep writes each report once more (no
event), and the memory knows the vehicle after it. *Reconcile*: about half of the
server's CPU is the HTTP side through Starlette (routing, middleware, the socket
writes), a quarter the writer (the event insert and the commit), a fifth the projector
(the views' code per event, being rewritten in parallel, and the hash chain's head
read per batch); the request waits for both (read-your-writes), so under a closed loop
of {CONNECTIONS} connections the rate is bounded by the commit-then-project cycle.
Seeding the fleet goes through the same write path.
"""


# -- fleet ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Poller:
    vehicle_id: str
    token: str
    etag: str


@dataclass(frozen=True)
class Fleet:
    operator: str
    pollers: list[Poller]
    revision: str


def seed(settings: Settings, vehicles: int = VEHICLES) -> Fleet:
    """Vehicles, a release, one desired state for all, tokens: written in process
    before the server starts, through the control plane's own write path (the writer's
    group commit: every command submitted at once, saved up to 512 a transaction)."""
    cp = ControlPlane.open(settings)
    try:
        cause = Cause.of("bench")
        ids = [f"veh-{i:06d}" for i in range(vehicles)]
        timer = Phases(f"seed {vehicles:,} vehicles")
        registrations = [
            VehicleRegistration(
                vehicle_id=v,
                labels={"fleet": "bench", "model": "m3", "region": f"r{i % 4}"},
                attributes={"os": "ubuntu-22.04", "rosDistro": "humble"},
            )
            for i, v in enumerate(ids)
        ]
        wait_all(cp.writer.submit(register_vehicle(r, cause)) for r in registrations)
        timer.done("vehicles")
        release = StackRelease(
            stack_name="navstack",
            version="1.0.0",
            artifacts=[
                Artifact(
                    type=ArtifactType.OCI_IMAGE,
                    ref="registry.invalid/navstack@sha256:" + "1" * 64,
                    digest="sha256:" + "1" * 64,
                    size=123_456_789,
                )
            ],
        )
        envelope = sign_release(release, [Signer.generate()])
        cp.execute(register_release(release, manifest_digest(release), envelope, cause))
        request = DesiredStateRequest(
            target=Target(selector="fleet=bench"), stack=StackRef(name="navstack", version="1.0.0")
        )
        assigned = cp.execute(assign_desired_state(request, ids, cause, cp.sign), 600).value
        timer.done("assignment")
        secret, command = issue_token(Role.OPERATOR, None, cause)
        cp.execute(command)
        issued = [issue_token(Role.VEHICLE, vehicle_id, cause) for vehicle_id in ids]
        wait_all(cp.writer.submit(command) for _, command in issued)
        timer.done("tokens")
        cp.projector.catch_up()
        latest = cp.views.desired.latest
        etags = dict(cp.views.store.read(select(latest.c.vehicle_id, latest.c.etag)))
        pollers = [Poller(v, token, etags[v]) for v, (token, _) in zip(ids, issued, strict=True)]
        timer.done("views")
        return Fleet(secret, pollers, assigned.revision)
    finally:
        cp.close()


def wait_all(futures: Iterable[Future[Any]]) -> None:
    for future in list(futures):
        future.result()


class Phases:
    """Prints how long each phase of a long step took."""

    def __init__(self, what: str) -> None:
        self.what, self.started = what, time.monotonic()

    def done(self, phase: str) -> None:
        now = time.monotonic()
        print(f"{self.what}: {phase} {now - self.started:.1f} s", flush=True)
        self.started = now


# -- servers --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(command: list[str], log: Path, pids: list[int] | None = None) -> Iterator[str]:
    """A server process on a free port, until SIGTERM; yields its base URL (and appends
    its pid to `pids`, for reading its CPU time)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUTO_")}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*command, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    if pids is not None:
        pids.append(proc.pid)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def muto_server(settings: Settings) -> list[str]:
    command = [sys.executable, "-m", "muto.cli", "cloud", "serve", "--no-mqtt"]
    command += ["--host", "127.0.0.1", "--data-dir", str(settings.data_dir)]
    return command + (["--database-url", settings.database_url] if settings.database_url else [])


BASELINE_APP = """
import sys, uvicorn
from datetime import UTC, datetime
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def healthz(request):
    return JSONResponse({"data": {"status": "ready"}, "metadata": {},
                         "timestamp": datetime.now(UTC).isoformat()})

app = Starlette(routes=[Route("/healthz", healthz)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[-1]), log_level="warning",
            access_log=False)
"""


def baseline_server() -> list[str]:
    return [sys.executable, "-c", BASELINE_APP]


# `muto cloud serve` as its CLI builds it (access log on, rollout controller), with the
# request instrumentation on or taken out: the only difference between the two servers.
INSTRUMENTED_APP = """
import logging, sys, uvicorn
from pathlib import Path
from muto.cloud.api.app import create_app
from muto.cloud.controller import controller_factory
from muto.cloud.metrics import RequestMetrics
from muto.cloud.settings import Settings

data_dir, database_url, metrics, port = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[-1]
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
settings = Settings(data_dir=Path(data_dir), database_url=database_url or None, mqtt_url=None)
app = create_app(settings, extensions=[controller_factory])
if metrics == "off":
    app.user_middleware = [m for m in app.user_middleware if m.cls is not RequestMetrics]
uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", access_log=False)
"""


def instrumented_server(settings: Settings, metrics: str) -> list[str]:
    database = settings.database_url or ""
    return [sys.executable, "-c", INSTRUMENTED_APP, str(settings.data_dir), database, metrics]


# -- load -----------------------------------------------------------------------------------

LUA_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "seconds": %f, "p50": %d, "p99": %d, "errors": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50),
    latency:percentile(99), e.connect + e.read + e.write + e.status + e.timeout))
end
"""

LUA_REQUESTS = """
local i, n, id = 0, 0, tostring(math.random(1, 1e9))

local function poll(p, etag)
  local headers = {["Authorization"] = "Bearer " .. p[2]}
  if etag then headers["If-None-Match"] = p[3] end
  return wrk.format("GET", "/desired-states/latest?vehicleId=" .. p[1], headers)
end

local function report(p, path, fields)
  local body = '{"reportId":"' .. id .. '-' .. n .. '","vehicleId":"' .. p[1] .. '",' ..
    fields .. ',"observedAt":"' .. now .. '"}'
  return wrk.format("POST", path, {["Authorization"] = "Bearer " .. p[2],
    ["Content-Type"] = "application/json"}, body)
end

request = function()
  i = i % #pollers + 1
  n = n + 1
  local p = pollers[i]
  if kind == "pass" then  -- three sweeps over the fleet: health, poll, health again
    p = pollers[(n - 1) % #pollers + 1]
    if math.floor((n - 1) / #pollers) % 3 == 1 then return poll(p, true) end
    return report(p, "/reports/health",
      '"schema":"muto.health-report.v1","status":"healthy","metrics":{"cpuPct":12.5}')
  end
  if kind == "poll" then return poll(p, false) end
  if kind == "poll-etag" or (kind == "mix" and n % 3 ~= 0) then return poll(p, true) end
  if kind == "reconcile" then
    return report(p, "/reports/reconcile", '"schema":"muto.reconcile-report.v1",' ..
      '"desiredStateRevision":"' .. revision ..
      '","status":"converged","running":{"name":"navstack","version":"1.0.0"}')
  end
  return report(p, "/reports/health",
    '"schema":"muto.health-report.v1","status":"healthy","metrics":{"cpuPct":12.5}')
end

if kind == "pass" then  -- one pass over the fleet, then stop (wrk's -d would wait on)
  local answered, failed, started = 0, 0, os.time()
  response = function(status, headers, body)
    answered = answered + 1
    if status >= 400 then failed = failed + 1 end
    if answered >= 3 * #pollers then
      io.write(string.format(
        'WRK {"requests": %d, "seconds": %f, "p50": 0, "p99": 0, "errors": %d}\\n',
        answered, math.max(1, os.time() - started), failed))
      io.flush()
      os.exit(0)
    end
  end
end
"""


@dataclass(frozen=True)
class Run:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int


def lua_fleet(fleet: Fleet) -> str:
    rows = ",\n".join(
        f'{{"{p.vehicle_id}", "{p.token}", {json.dumps(p.etag)}}}' for p in fleet.pollers
    )
    return f"pollers = {{\n{rows}\n}}\nrevision = {json.dumps(fleet.revision)}\n"


def wrk(url: str, script: str, seconds: int, workdir: Path) -> Run:
    path = workdir / f"load-{uuid.uuid4().hex[:6]}.lua"
    path.write_text(script + LUA_DONE)
    found = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(path),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    line = next(x for x in found.stdout.splitlines() if x.startswith("WRK "))
    data = json.loads(line[4:])
    return Run(
        rate=data["requests"] / data["seconds"],
        p50_ms=data["p50"] / 1000,
        p99_ms=data["p99"] / 1000,
        errors=data["errors"],
        requests=data["requests"],
    )


def scenario(kind: str, fleet: Fleet) -> str:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return lua_fleet(fleet) + f'now = "{now}"\nkind = "{kind}"\n' + LUA_REQUESTS


SCENARIOS = {
    "poll": "Poll (200, signed bundle)",
    "poll-etag": "Poll, current ETag (304)",
    "reconcile": "Reconcile report (1 event)",
    "health": "Health report (no change)",
    "mix": "Fleet mix (2 polls : 1 health)",
}


# -- backends -------------------------------------------------------------------------------


@contextmanager
def sqlite() -> Iterator[tuple[str, Settings]]:
    with tempfile.TemporaryDirectory(prefix="muto-bench-api-") as tmp:
        yield "SQLite", Settings(data_dir=Path(tmp), mqtt_url=None)


@contextmanager
def postgres() -> Iterator[tuple[str, Settings] | None]:
    info = ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    name = f"muto_bench_api_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(info, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL skipped: {exc}")
        yield None
        return
    try:
        with tempfile.TemporaryDirectory(prefix="muto-bench-api-") as tmp:
            url = f"{ADMIN_URL.rpartition('/')[0]}/{name}"
            yield "PostgreSQL", Settings(database_url=url, data_dir=Path(tmp), mqtt_url=None)
    finally:
        with psycopg.connect(info, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk (apt-get install -y wrk)", flush=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
        return
    raise SystemExit("bench/api.py needs wrk: apt-get install -y wrk")


def prime(url: str, fleet: Fleet, workdir: Path) -> Run:
    """One pass over the fleet before anything is measured, in three sweeps: each
    vehicle reports its health (a transition: an event, whose commit evicts the
    vehicle's remembered status, on PostgreSQL also when its NOTIFY comes back), polls,
    and reports again (remembered now: the measured reports change nothing). A real
    fleet polls every 30 s and reports every 60 s, so the server's memory of every
    vehicle (token, current ETag, health status) is warm in its steady state: so it is
    here, whatever the fleet's size."""
    started = time.monotonic()
    found = wrk(url, scenario("pass", fleet), 3600, workdir)
    print(f"primed {len(fleet.pollers):,} vehicles in {time.monotonic() - started:.0f} s: "
          f"{found}", flush=True)  # fmt: skip
    return found


def measure(url: str, kind: str, fleet: Fleet, workdir: Path) -> Run:
    script = scenario(kind, fleet)
    wrk(url, script, WARMUP, workdir)
    return wrk(url, script, DURATION, workdir)


def rows(label: str, kind: str, found: Run, base: Run) -> list[Result]:
    what = f"{SCENARIOS[kind]} — {label}"
    workload = f"{found.requests:,} requests, {found.errors} errors"
    return [
        Result(f"{what}: rate", found.rate, "req/s", workload, "trivial endpoint", base.rate),
        Result(f"{what}: p50", found.p50_ms, "ms", workload, "trivial endpoint", base.p50_ms),
        Result(f"{what}: p99", found.p99_ms, "ms", workload, "trivial endpoint", base.p99_ms),
    ]


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
`muto cloud serve` as its CLI builds it, with the request instrumentation in place and
with that one middleware taken out, in {ROUNDS} alternating rounds each. On a machine
shared with other work the request rate swings between rounds far more than the
instrumentation could move it, so the figure to read is the server's own CPU time per
request answered (from /proc, net of the server's idle CPU measured for 3 s just
before, median of the rounds): what the instrumentation adds to each request.
*Scraped every 1 s* adds a client fetching `/metrics` every second
(fifteen times Prometheus's default rate) during the run: the scrape's cost is in that
run's CPU per request. *Instrumentation alone* calls the middleware in process around
an app that answers at once, against the bare app: its own cost per request. The
scrape's gauges are computed on a worker thread from the views; its median duration is
compared with one poll's. `python -m bench api_metrics`.
"""


def run_metrics() -> list[Result]:
    """The section `python -m bench api_metrics` writes (bench/api_metrics.py)."""
    ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="muto-bench-load-") as tmp, sqlite() as found:
        _, settings = found
        return instrumentation(settings, seed(settings, METRICS_VEHICLES), Path(tmp))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat, Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    """µs per request of an ASGI app that answers 304 at once, without and with
    RequestMetrics around it, called directly (no server, no sockets)."""
    import asyncio

    from muto.cloud.metrics import CloudMetrics, RequestMetrics

    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 304, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> Any:
        return {"type": "http.request"}

    async def send(_: Any) -> None:
        return None

    wrapped = RequestMetrics(endpoint, CloudMetrics(), {endpoint: "/desired-states/latest"})

    async def calls(app: Any) -> float:
        scope = {"type": "http", "method": "GET", "endpoint": endpoint}
        started = time.process_time()
        for _ in range(requests):
            await app(scope, receive, send)
        return (time.process_time() - started) / requests * 1e6

    bare = min(asyncio.run(calls(endpoint)) for _ in range(3))
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
               "200,000 calls of an ASGI app that answers 304, best of 3", "the bare app", bare),
        Result("/metrics scrape (median)", statistics.median(scrapes) * 1000, "ms",
               f"{len(scrapes)} scrapes of {len(fleet.pollers):,} vehicles",
               "one poll (304), p50", statistics.median(r.run.p50_ms for r in rounds["off"])),
    ]  # fmt: skip


def run() -> list[Result]:
    ensure_wrk()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="muto-bench-load-") as tmp:
        workdir = Path(tmp)
        with serving(baseline_server(), workdir / "baseline.log") as url:
            script = 'request = function() return wrk.format("GET", "/healthz") end\n'
            wrk(url, script, WARMUP, workdir)
            base = wrk(url, script, DURATION, workdir)
        print(f"baseline: {base}", flush=True)
        for backend in (sqlite, postgres):
            with backend() as found:
                if found is None:
                    continue
                label, settings = found
                fleet = seed(settings)
                with serving(muto_server(settings), settings.data_dir / "server.log") as url:
                    prime(url, fleet, workdir)
                    for kind in SCENARIOS:
                        measured = measure(url, kind, fleet, workdir)
                        print(f"{label} {kind}: {measured}", flush=True)
                        results += rows(label, kind, measured, base)
    verdict(results, base)
    return results


def verdict(results: list[Result], base: Run) -> None:
    """Append this run's distance to the target to NOTES (read after `run()`)."""
    global NOTES
    mixes = {
        r.name.split(" — ")[1].split(":")[0]: r.value
        for r in results
        if r.name.startswith(SCENARIOS["mix"]) and r.unit == "req/s"
    }
    found = ", ".join(
        f"{rate:,.0f} req/s on {label} ({rate / TARGET:.0%})" for label, rate in mixes.items()
    )
    NOTES += (
        f"\nAgainst the target: the fleet mix reached {found} of {TARGET:,.0f} req/s. "
        f"The trivial endpoint, served and loaded the same way, reached {base.rate:,.0f} "
        f"req/s ({base.rate / TARGET:.0%} of the target with no work at all): the "
        "ceiling of one uvicorn process sharing the CPUs with its load generator.\n"
    )


if __name__ == "__main__":
    for r in run():
        print(r)
