"""The production topology's HTTP path: `--role api` processes on one PostgreSQL
database behind haproxy, with 1 and with 2 API processes, against one API process
served directly (the baseline). Load from `wrk` as in bench/api/ (same scripts, same
fleet of vehicles with their own tokens). Needs wrk, haproxy and PostgreSQL.
`MUTO_BENCH_SCALE=0.2` shortens every run.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench import Result
from bench.api.backends import postgres
from bench.api.fleet import seed
from bench.api.load import DURATION, SCENARIOS, WARMUP, Run, ensure_wrk, measure, prime
from bench.api.servers import muto_server, serving
from muto.sim.services import Haproxy

TITLE = "Production topology: API processes behind haproxy (PostgreSQL)"
VEHICLES = int(os.environ.get("MUTO_BENCH_TOPOLOGY_VEHICLES", "2000"))
KINDS = ("mix", "reconcile")

NOTES = f"""
How to read it: every row is one `wrk` run of {DURATION} s after a {WARMUP} s warm-up
(32 connections, as in *HTTP API*), against {VEHICLES:,} vehicles with their own tokens,
on one PostgreSQL database. *Direct* is one `muto cloud serve --role api` process with
nothing in front (the baseline: the faster of two runs, one before and one after the
others, so that caches warming up during the runs flatter nobody); *haproxy, N API*
puts haproxy (round robin, health checks on /readyz, retry of requests whose server
died) in front of N such processes.
No worker runs: API processes project their own writes on demand (read-your-writes).

On this machine the load generator, haproxy, every API process and PostgreSQL share
2 CPUs, so a second API process cannot add capacity: the figures show what the load
balancer and a second process cost, not what they buy. On a cluster each API replica
gets its own cores and the mix scales with replicas until PostgreSQL saturates
(reconcile reports first: every one is a committed event). The 10,000-vehicle rollout
on PostgreSQL is in *Rollouts*.
"""
NOTES += """

This run (2026-12-05, an Intel Xeon machine, load around 1) is the first whose
reconcile rows are new reports only: the load script re-sent the same report ids in
every run until 2026-12-04 (*HTTP API*, the correction), and re-deliveries store
nothing, so they never made two API processes write the same vehicles. They do now,
and that found a collapse: with two API processes behind round-robin, a vehicle's
reports land on both, each process's cached vehicles fall behind the other's writes,
and a batch whose save found one moved was run again command by command (a load and a
commit each). Before the fix, in the same bench: two API processes 320 reconcile
reports a second against 3,064 direct, and the one process left, direct again, 338
(its cache still stale). Now a conflicting batch is run once more together on fresh
loads (`Writer._write_together`): 771-813 with two processes (two runs; the table is
the second), 2,857-2,858 direct again. The
first attempt of most two-process batches still conflicts (a save wasted, and the
table lock held meanwhile); checking the cached versions before running the batch is
the next step there. On a real cluster each replica has its own cores; here, on 2
shared CPUs, a second process costs capacity instead of adding it, and the fleet mix
(no writes) keeps 0.88-0.92x of one process's rate through haproxy with two.
docs/deploy.md sizes from the *HTTP API* figures (one process).
"""


def rows(label: str, kind: str, found: Run, base: Run) -> list[Result]:
    what = f"{SCENARIOS[kind]} — {label}"
    workload = f"{found.requests:,} requests, {found.errors} errors"
    baseline = "direct, 1 API"
    return [
        Result(f"{what}: rate", found.rate, "req/s", workload, baseline, base.rate),
        Result(f"{what}: p99", found.p99_ms, "ms", workload, baseline, base.p99_ms),
    ]


def run() -> list[Result]:
    ensure_wrk()
    if Haproxy.find() is None:
        raise SystemExit("bench/topology.py needs haproxy: apt-get install -y haproxy")
    results: list[Result] = []
    with postgres() as found, tempfile.TemporaryDirectory(prefix="muto-bench-lb-") as tmp:
        if found is None:
            raise SystemExit("bench/topology.py needs PostgreSQL (MUTO_BENCH_DATABASE_URL)")
        _, settings = found
        workdir = Path(tmp)
        fleet = seed(settings, VEHICLES)  # role all: also makes the shared signing key
        command = [*muto_server(settings), "--role", "api"]
        data = settings.data_dir
        with (
            serving(command, data / "api-1.log") as one,
            serving(command, data / "api-2.log") as two,
        ):
            prime(one, fleet, workdir)
            ports = {"api-1": int(one.rsplit(":", 1)[1]), "api-2": int(two.rsplit(":", 1)[1])}
            for kind in KINDS:
                before = measure(one, kind, fleet, workdir)
                print(f"direct {kind}: {before}", flush=True)
                through = {}
                for n in (1, 2):
                    lb_dir = workdir / f"lb-{kind}-{n}"
                    lb_dir.mkdir()
                    lb = Haproxy(lb_dir, dict(list(ports.items())[:n]))
                    lb.start()
                    try:
                        measured = measure(lb.url, kind, fleet, workdir)
                    finally:
                        lb.stop()
                    print(f"haproxy, {n} API {kind}: {measured}", flush=True)
                    through[n] = measured
                # The baseline is measured before and after (caches warm up during the
                # runs: the first run would flatter everything after it); the faster one.
                after = measure(one, kind, fleet, workdir)
                print(f"direct {kind}, again: {after}", flush=True)
                base = max(before, after, key=lambda r: r.rate)
                for n, measured in through.items():
                    results += rows(f"haproxy, {n} API", kind, measured, base)
    return results


if __name__ == "__main__":
    for r in run():
        print(r)
