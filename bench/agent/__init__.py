"""Vehicle agent: resident memory at idle and during an apply, CPU at idle with a 30 s
poll, replay of a 100,000-event journal, one planner decision, and the fleet simulator's
cost per simulated agent.

The real agent is `muto agent run --runtime process` as a child process, started as
deploy/systemd/muto-agent.service starts it (`--mqtt-url`, `--reports-via mqtt`; the
process runtime stands in for ros2_launch, which needs ROS), against a real `muto cloud
serve` and a Mosquitto broker, applying a real tar.gz served over HTTP. Memory and CPU come
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

Where the memory goes (measured 2026-12-03 with /proc/PID/smaps per mapping, tracemalloc
around each import, and RSS before and after each import in an interpreter that has the
agent's other modules). Of the restarted idle agent's ~33 MiB: anonymous memory ~18.5 MiB
(Python objects in pymalloc's arenas ~13, malloc's heap ~5.5: code objects, dicts,
SQLite's caches), libpython ~5.1 MiB of file-backed pages, the system's libcrypto and
libssl ~4 MiB (the `ssl` module: asyncio imports it, the agent's TLS needs it), libc,
libm and the loader ~2.1, SQLite ~1.2, msgspec and the stdlib's extension modules ~2. The
bare interpreter is 8.4 MiB in a plain venv, 10.7 MiB in this one (its .pth files; the
agent imports what they import anyway). Python objects by import: asyncio ~1.3,
eventsourcing ~0.8 (on top of the stdlib it shares), aiomqtt and paho ~1 plus the
urllib.request, email and http.client paho imports ~1.2, h11 ~0.3, the agent's own code
~1.6, muto.domain and muto.trust ~0.5. Where it went (same-machine A/B, 2026-12): httpx
cost 2.8 MiB at import (email, http.client, http.cookiejar, idna, mimetypes,
urllib.request) and httpcore, anyio and certifi 3.7 MiB more on the first request; the
agent's own client is h11 on asyncio streams (muto/agent/transport/exchange.py), 0.3-0.5
MiB, and httpx is loaded only where an HTTP(S)_PROXY is configured (as shipped, with
MQTT, paho imports urllib.request, email and http.client anyway: ~5 MiB saved, not 6.5).
cryptography costs ~8 MiB when imported (its Rust module with its own OpenSSL: 5-7 MiB of
file-backed code pages, how many depends on the page cache, the rest relocations and
Python) and ~1 MiB more once used; it was loaded at start-up to read the trust store's
keys. Keys are now kept as raw bytes and signatures checked by PyNaCl (libsodium, ~1.2
MiB once the first signature is checked): the agent never loads cryptography. With
cryptography doing the checks, an agent that had verified a document (idle after an
apply, before a restart) measured 42.5 MiB in this bench. Tried and not adopted: MALLOC_ARENA_MAX=1
(-0.5 MiB), MALLOC_TRIM_THRESHOLD_ (nothing), PYTHONMALLOC=malloc (+0.7 MiB); malloc_trim
and a full gc.collect at idle give back 0.2 MiB. Until 2026-12 `muto agent run` built
every subcommand's parser and so imported the cloud's stack (the *whole CLI* row): 75.8
MiB at idle; then 41.7 MiB without MQTT (httpx, cryptography at start-up).

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

The journal's head (2026-12-06): after each commit the journal overwrites a 95-byte line
beside it (`journal.db-head`: position, chain link, CRC), without fsync, so that a WAL
whose bad frame ended SQLite's log early is refused at start instead of read as a shorter
history (docs/agent.md). Writing it costs 2.6 µs (10,000 x 5, ext4 and tmpfs); a
`Journal.append` on tmpfs 30.3 -> 33.6 µs (10,000 appends, best run), on ext4 150-300 µs
either way (the fsync); a full replay of 100,000 events 0.41 -> 0.34 s, start-up after a
crash 2.1 -> 1.9 ms (within noise). A write-to-temp and rename cost 100-1,200 µs here (the
rename flushes the file): as much as the commit, so the line is overwritten in place and a
torn one fails its CRC and is ignored. Checkpointing the WAL after every commit (145 ->
273 µs an append) detects nothing: it moves the bad sector's risk into journal.db, whose
pages SQLite does not checksum either.
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
