"""Vehicle agent: resident memory at idle and during an apply, CPU at idle with a 30 s
poll, replay of a 100,000-event journal, one planner decision, and the fleet simulator's
cost per simulated agent.

The real agent is `muto agent run --runtime process` as a child process against a real
`muto cloud serve --no-mqtt`, applying a real tar.gz served over HTTP. Memory and CPU come
from /proc of the agent's pid. Every figure has a baseline measured in the same run.
`MUTO_BENCH_SCALE=0.1` shrinks the journal, the fleet and the idle window for a quick look.

Modules: common (knobs), procfs (/proc readings), services (cloud, artifact server,
baselines), real (the real agent), life (journal events), replay, planner (plan()),
fleet (the simulator's child processes), results (figures and their baselines).
"""

from __future__ import annotations

import time

from bench import Result
from bench.agent.fleet import child, child_result
from bench.agent.planner import measure_plan
from bench.agent.real import real_agent
from bench.agent.replay import measure_replay
from bench.agent.results import (
    cpu_result,
    fleet_results,
    memory_results,
    plan_results,
    replay_results,
)

TITLE = "Vehicle agent"
NOTES = """
How to read it. *RSS* is VmRSS of the agent's pid (its stack runs in a child process, not
counted); the *peak during apply* is VmHWM after it was reset (`/proc/PID/clear_refs`)
just before the desired state was assigned, read once the agent had converged and
reported: download, digest check, extraction, start and readiness of the stack. *CPU* is
the run time the kernel accounted to every thread of the process (`/proc/PID/task/*/
schedstat`, nanoseconds; the coarser `/proc/PID/stat` ticks are given as a cross-check),
divided by the wall time of the window, as a share of one core. MiB is 1,024 KiB (what
/proc counts). The import baselines are processes that import and then sleep: a bare
interpreter, what `muto agent run` has imported before it runs (the `muto` CLI builds
the parser of the subcommand it runs only; the agent refuses the optional imports of
its libraries it never uses: muto/agent/cli.py), and every subcommand's modules.

The journal is built with the agent's own `Journal.append` (batches of 500, one
transaction each, snapshots every 500 events as in production) by a process that then
dies without closing it, as a killed agent leaves it: 499 events after the newest
snapshot, the most start-up ever replays. *Start-up* is opening it as the agent does
(newest snapshot + the records after it); *after a clean stop* the agent wrote a
snapshot at the end. *Full replay* decodes and folds every record from zero
(`journal verify` and `journal replay` do this); its baseline reads the same rows with
`sqlite3` alone. plan() is timed in batches of 2,000 calls (median of 31 batches) on
states folded from the same journal events.

Where the memory goes (measured 2026-12-03 with /proc/PID/smaps, tracemalloc in the agent
and RSS before and after each import). Of the idle agent's ~42 MiB, the bare interpreter
is ~10.6 MiB; imports ~28 MiB more: cryptography's Rust module with its own OpenSSL
(~6 MiB, needed to verify signatures), the `ssl` module and the system's libssl/libcrypto
(~4 MiB, which asyncio and httpx import), httpx with httpcore, h11, anyio, idna and the
stdlib's email, http and urllib they pull in (~4-5 MiB), asyncio (~1.6 MiB), msgspec,
eventsourcing and sqlite3 (~2 MiB), and the agent's own code (~6 MiB: journal, reconcile,
runtime, trust, domain). Python's own allocations at idle are ~19 MiB, half of them code
objects. Running adds ~3.6 MiB: httpcore's async stack and anyio, imported on the first
request, the journal's state and its SQLite connection, the executor thread. What is
left between this and 40 MiB is the HTTP stack: an HTTP/1.1 client on asyncio streams
would save most of its ~4-5 MiB. Until 2026-12 `muto agent run` built every
subcommand's parser and so imported the cloud's stack (the *whole CLI* row): 75.8 MiB
at idle.

Where the replay's time goes (cProfile of a full replay): reading the rows in SQLite
~20 %, msgspec decoding each record twice (the chained entry, then the event, whose
exact bytes the chain needs) ~15 %, the per-record Python around them (a `Record`, the
generators) ~30 %, the fold itself ~25 %. Until 2026-12 the recorder's `select_events`
built a StoredEvent and parsed the stream's UUID for each row, and the fold's `match`
tried the report events, most of any journal, last: 2.6 s for 100,000 events.

The fleet simulator's agents are the ones `muto.agent.compose.simulated_agent` builds
(memory journal, simulated runtime and artifacts), started back to back as
`SimFleet.start` does, with the agent's real HTTP client on one shared
`httpx.AsyncClient`; the cloud is an in-process `httpx.MockTransport` serving each vehicle
its own signed bundle (304 on a current ETag) and acknowledging reports, so the figures
are the simulator's own cost (the real cloud's capacity is the *HTTP API* section). Each
agent verifies its bundle, applies, passes readiness and reports before the steady state
is measured. The simulator runs in its own interpreter, during the real agent's idle
window (which needs next to no CPU; both are measured as CPU time, not wall time). Its
CPU share is what the work needed as long as the polls kept pace; its event-loop lag also
counts the time other processes held the CPUs. Agents started together wake together
(the 5 s drift check has no jitter), and asyncio runs every timer that came due during a
long turn in the next one, so the turns stay long: the baseline is as many bare tasks,
started together, that wake every 5 s and do nothing.
"""


def run() -> list[Result]:
    started = time.monotonic()

    def stage(what: str) -> None:
        print(f"  {what} done at {time.monotonic() - started:.0f} s", flush=True)

    converged_us, apply_us, trivial_us = measure_plan()
    stage("plan()")
    replay = measure_replay()
    stage("journal replay")
    applied, idle, fleet = real_agent()
    stage("real agent and fleet simulator")
    timers = child_result(child("timers"))
    stage("fleet baseline")
    return [
        *memory_results(applied, idle),
        cpu_result(idle),
        *replay_results(replay),
        *plan_results(converged_us, apply_us, trivial_us),
        *fleet_results(fleet, timers, idle),
    ]
