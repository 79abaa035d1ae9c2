"""The load: `wrk` in a process of its own on loopback (one thread, a fixed number of
connections, closed loop), with Lua scripts that rotate over the fleet's vehicles and
their own tokens."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from bench.api.fleet import Fleet

SCALE = float(os.environ.get("MUTO_BENCH_SCALE", "1"))
DURATION = max(2, round(10 * SCALE))  # seconds per measured run
WARMUP = max(1, round(3 * SCALE))
CONNECTIONS = 32
# Vehicles whose reconcile reports are measured: the last of the fleet's pass, so in the
# writer's aggregate cache (20,000), as a rollout wave's vehicles are after their
# assignment. A report from a vehicle out of the cache adds a load of its snapshot and
# tail (docs/performance.md, *Event store*).
RECONCILING = 10_000
LUA_CHUNK = 5_000

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
local i, n = 0, 0

local function poll(p, etag)
  local headers = {["Authorization"] = "Bearer " .. p[2]}
  if etag then headers["If-None-Match"] = p[3] end
  return wrk.format("GET", "/desired-states/latest?vehicleId=" .. p[1], headers)
end

local function report(p, path, fields)
  local body = '{"reportId":"' .. run .. '-' .. n .. '","vehicleId":"' .. p[1] .. '",' ..
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
      '"desiredStateRevision":"' .. p[4] ..
      '","status":"converged","running":{"name":"navstack","version":"1.0.0"}')
  end
  return report(p, "/reports/health",
    '"schema":"muto.health-report.v1","status":"healthy","metrics":{"cpuPct":12.5}')
end

if kind == "reconcile" then  -- each report new: a re-delivery stores nothing
  local said = false
  response = function(status, headers, body)
    if not said and body:find('"duplicate":true', 1, true) then
      io.write("DUPLICATE\\n")
      said = true
    end
  end
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
    """The fleet as a Lua table, built by one function per 5,000 vehicles: LuaJIT
    refuses a function with more than 65,536 constants (a bigger fleet in one table
    constructor fails to load, and wrk then sends `GET /`)."""
    parts = []
    for first in range(0, len(fleet.pollers), LUA_CHUNK):
        rows = ",\n".join(
            f'{{"{p.vehicle_id}", "{p.token}", {json.dumps(p.etag)}, "{p.revision}"}}'
            for p in fleet.pollers[first : first + LUA_CHUNK]
        )
        parts.append(f"do local function chunk() add({{\n{rows}\n}}) end chunk() end")
    adding = "local function add(t) for _, p in ipairs(t) do pollers[#pollers + 1] = p end end"
    return "pollers = {}\n" + adding + "\n" + "\n".join(parts) + "\n"


def wrk(url: str, script: str, seconds: int, workdir: Path) -> Run:
    """One `wrk` run of `script`. Each run's report ids are its own (`run`): LuaJIT's
    `math.random` starts from the same seed in every process, so ids drawn with it
    repeated from one run to the next, and a run after the warm-up sent the warm-up's
    reconcile reports again: re-deliveries, which store nothing."""
    run = uuid.uuid4().hex[:12]
    path = workdir / f"load-{run}.lua"
    path.write_text(f'run = "{run}"\n' + script + LUA_DONE)
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "10s"]
    stdout = _wrk([*command, "-s", str(path), url], seconds + 60)
    if "DUPLICATE" in stdout.splitlines():
        raise RuntimeError("a reconcile report was answered as a duplicate: not new reports")
    line = next(x for x in stdout.splitlines() if x.startswith("WRK "))
    data = json.loads(line[4:])
    return Run(
        rate=data["requests"] / data["seconds"],
        p50_ms=data["p50"] / 1000,
        p99_ms=data["p99"] / 1000,
        errors=data["errors"],
        requests=data["requests"],
    )


def _wrk(command: list[str], timeout: float) -> str:
    """Run wrk; its stdout. A script that fails to load stops it at once: wrk says so on
    stderr and would go on sending `GET /` (for an hour, for the fleet's pass)."""
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        errors: list[str] = []

        def watch(stderr: IO[str]) -> None:
            for line in stderr:
                errors.append(line)
                if ".lua:" in line:
                    proc.kill()

        watcher = threading.Thread(target=watch, args=(proc.stderr,), daemon=True)
        timed_out = threading.Event()

        def stop() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, stop)
        watcher.start()
        timer.start()
        try:
            stdout = proc.stdout.read()  # until wrk exits (or is stopped)
            proc.wait()
        finally:
            timer.cancel()
        watcher.join()
    if any(".lua:" in line for line in errors):
        raise RuntimeError(f"wrk script: {''.join(errors).strip()}")
    if timed_out.is_set():
        raise subprocess.TimeoutExpired(command, timeout, stdout)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, command, stdout, "".join(errors))
    return stdout


def scenario(kind: str, fleet: Fleet) -> str:
    if kind == "reconcile":  # a rollout wave's worth, in the aggregate cache (its pass)
        fleet = Fleet(fleet.operator, fleet.pollers[-RECONCILING:])
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return lua_fleet(fleet) + f'now = "{now}"\nkind = "{kind}"\n' + LUA_REQUESTS


SCENARIOS = {
    "poll": "Poll (200, signed bundle)",
    "poll-etag": "Poll, current ETag (304)",
    "reconcile": "Reconcile report (1 event)",
    "health": "Health report (no change)",
    "mix": "Fleet mix (2 polls : 1 health)",
}


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


def beside(url: str, kind: str, other: str, fleet: Fleet, workdir: Path) -> tuple[Run, Run]:
    """`kind` and `other` loaded at once, each by a `wrk` of its own (a rollout wave's
    reports while the fleet polls): the runs of both."""
    found: dict[str, Run] = {}

    def load(which: str) -> None:
        found[which] = wrk(url, scenario(which, fleet), DURATION, workdir)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(load, (kind, other)))
    return found[kind], found[other]
