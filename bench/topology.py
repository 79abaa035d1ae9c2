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
# Enough vehicles that each stays under its token's rate limit (5 requests a second):
# 2,000 polled at ~15,000 requests a second were over it, and 429s were measured.
VEHICLES = int(os.environ.get("MUTO_BENCH_TOPOLOGY_VEHICLES", "10000"))
KINDS = ("mix", "reconcile")
LAYOUTS = (  # label, API processes, haproxy's balance
    ("haproxy, 1 API", 1, "roundrobin"),
    ("haproxy, 2 API", 2, "roundrobin"),
    ("haproxy, 2 API by vehicle", 2, Haproxy.BY_CALLER),
)

NOTES = f"""
How to read it: every row is one `wrk` run of {DURATION} s after a {WARMUP} s warm-up
(32 connections, as in *HTTP API*), against {VEHICLES:,} vehicles with their own tokens,
on one PostgreSQL database. *Direct* is one `muto cloud serve --role api` process with
nothing in front (the baseline: the faster of two runs, one before and one after the
others, so that caches warming up during the runs flatter nobody); *haproxy, N API*
puts haproxy (round robin, health checks on /readyz, retry of requests whose server
died) in front of N such processes; *by vehicle* balances by consistent hashing on the
bearer token instead, so that each vehicle's requests go to one process while it is up
(docs/deploy.md).
No worker runs: API processes project their own writes on demand (read-your-writes).

On this machine the load generator, haproxy, every API process and PostgreSQL share
2 CPUs, so a second API process cannot add capacity: the figures show what the load
balancer and a second process cost, not what they buy. On a cluster each API replica
gets its own cores and the mix scales with replicas until PostgreSQL saturates
(reconcile reports first: every one is a committed event). The 10,000-vehicle rollout
on PostgreSQL is in *Rollouts*.
"""
NOTES += """

Each API process is primed with the whole fleet before the runs (each vehicle's
health, poll and health again, as in *HTTP API*): in service a fleet polling every
30 s keeps every process's memory of it warm. The fleet is 10,000 vehicles so that
each stays under its token's rate limit (5 requests a second): at 2,000 vehicles the
mix ran at ~7 requests a second per vehicle on a faster machine, and a fifth of the
answers were 429s; a run with any error now fails the bench instead of being counted.

Two API processes writing the same vehicles (2026-12-05, AMD EPYC). Round-robin puts
a vehicle's reports on both processes; each process's cached vehicles fall behind the
other's writes. Three rounds so far:
- 2026-12-04: a batch whose save found a cached vehicle moved was run again together
  on fresh loads, not command by command: 320 -> 771-813 reconcile reports a second
  (Intel Xeon, 2,000 vehicles; one process made ~3,000).
- after a conflict, a batch first catches its cached aggregates up with what the store
  holds (one query for the events after each cached version, `EventLog.fast_forward`),
  so its save seldom conflicts: 753 -> 1,457 (this machine, 2,000 vehicles, A/B).
- an API process woken for its own write, whose turn at the views comes after the
  other process has shown that write, takes nothing more (the other's records are the
  other's to show): each process had also been projecting the other's latest few
  records, every step a small one, and half of each process's CPU went to projecting.
  With 10,000 vehicles, in a harness that loads the pair as this bench does:
  964 -> 1,649 reports a second, CPU per report 415 -> 287 µs in each process.
Where two processes' time goes now (py-spy, each process): projecting ~40 % (a step's
fixed cost: the views' lock and transaction, a statement per view), the event loop
~33 %, the writer ~22 % (of which the catch-up query ~7 %). On 2 shared CPUs a second
process costs capacity instead of adding it; on a cluster each replica has its own.
Balancing by vehicle (consistent hashing on the bearer token: each vehicle's requests
to one process) measured the same as round robin in this run (reconcile 1,515 against
1,579 a second, the mix 13,064 against 13,185): with the catch-up and the projector's
turn above, a vehicle's reports landing on both processes no longer cost much, and
each process still shows the other's records before its own (one log, one set of
views). No affinity is needed in front of the API processes.
"""
NOTES += """
docs/deploy.md sizes from the *HTTP API* figures (one process).
"""


def rows(label: str, kind: str, found: Run, base: Run) -> list[Result]:
    what = f"{SCENARIOS[kind]} — {label}"
    for run in (found, base):
        if run.errors:
            raise RuntimeError(f"{what}: {run.errors} errors; the rates would count refusals")
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
            for url in (one, two):  # each process's memory of the fleet warm, as in service
                prime(url, fleet, workdir)
            ports = {"api-1": int(one.rsplit(":", 1)[1]), "api-2": int(two.rsplit(":", 1)[1])}
            for kind in KINDS:
                before = measure(one, kind, fleet, workdir)
                print(f"direct {kind}: {before}", flush=True)
                through = {}
                for label, n, balance in LAYOUTS:
                    lb_dir = workdir / f"lb-{kind}-{len(through)}"
                    lb_dir.mkdir()
                    lb = Haproxy(lb_dir, dict(list(ports.items())[:n]), balance)
                    lb.start()
                    try:
                        measured = measure(lb.url, kind, fleet, workdir)
                    finally:
                        lb.stop()
                    print(f"{label} {kind}: {measured}", flush=True)
                    through[label] = measured
                # The baseline is measured before and after (caches warm up during the
                # runs: the first run would flatter everything after it); the faster one.
                after = measure(one, kind, fleet, workdir)
                print(f"direct {kind}, again: {after}", flush=True)
                base = max(before, after, key=lambda r: r.rate)
                for label, measured in through.items():
                    results += rows(label, kind, measured, base)
    return results


if __name__ == "__main__":
    for r in run():
        print(r)
