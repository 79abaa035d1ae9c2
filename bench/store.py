"""Event store: append rates through the domain, projection catch-up, snapshot loads.

On SQLite (a fresh data dir) and PostgreSQL (a fresh database, created and dropped
here; skipped with a message when the server is not reachable). Each figure has a
baseline measured in the same run: plain SQL inserts of the same rows, reading the same
log without projecting it, loading the same vehicle without snapshots.
`MUTO_BENCH_SCALE=0.1` shrinks every workload for a quick look.
"""

from __future__ import annotations

import functools
import gc
import itertools
import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import psycopg

from bench import Result, median_ms, rate, timed
from muto.cloud.commands import Cause, record_reconcile, register_vehicle
from muto.cloud.eventlog import EventLog
from muto.cloud.settings import Settings
from muto.cloud.writer import Writer
from muto.domain.model.vehicle import Vehicle
from muto.domain.report_order import ReportPlace
from muto.domain.reports import ReconcileReport, ReconcileStatus
from muto.domain.requests import VehicleRegistration
from muto.projections import Views
from muto.projections.collector import settle_collector
from muto.projections.runner import BATCH, ProjectionRunner
from muto.projections.store import ViewStore

TITLE = "Event store"
NOTES = """
How to read it: *events/s* count `Vehicle.ReconcileReported` events stored through the
whole write path (command → Writer → aggregate → `EventLog.save`).
Aggregates come from the event log's cache, as in production.
The plain-SQL baselines insert rows of the same table shape and the same encoded size
with the database driver alone (no aggregate load, no table lock), at the event log's
durability (SQLite: the same file, WAL, synchronous=FULL), so the ratio is what the
domain and the library cost. Store and baseline run in five alternating rounds, so
both see the same machine. Group commit is bounded by its 16 writers: a batch
never holds more than 16 commands. The batched baseline commits the same rows in the
same transaction sizes as the store's batches of the round just run (replayed from
the writer's batch observer), so a smaller store batch costs both sides alike.

Fifth round (2026-12-04, a quiet machine of the same kind, faster: plain SQL here is
2.5-3x the third round's). Before the round, on this machine (08:33): SQLite / PostgreSQL
1 writer 0.51x / 0.67x, group commit 0.23x / 0.50x, catch-up 38,586 events/s = 0.29x /
16,195 = 0.14x. Four runs after it (the table is the last): 1 writer 0.48-0.50x /
0.60-0.64x, group commit 0.21-0.24x / 0.44-0.49x, catch-up 34,315-42,359 events/s =
0.19-0.23x / 26,442-30,432 = 0.18-0.21x (the SQLite baseline, reading and decoding
the log, ran at 133,000 events/s in the run before and 160,000-200,000 in these: the
ratio moved with it). Changed:
- the rollout view writes a batch's report outcomes, the last per vehicle and revision,
  in one statement on the driver's connection (SQLite executemany, PostgreSQL UPDATE
  ... FROM unnest) instead of SQLAlchemy's executemany with its standard-library JSON
  per row (a sixth of a SQLite catch-up; a statement per row on PostgreSQL). A catch-up
  of 12,256 report events, CPU per event: SQLite 32 -> 23 µs, PostgreSQL 49 -> 21 µs.
- a save snapshots its aggregates from memory at the version committed, where the
  library loaded each back from the store (its snapshot and up to 100 events) to take
  it: ~20 % of the writer thread when reports cross snapshot intervals (60,000 group
  committed reports over 256 vehicles: 105 -> 81 µs of process CPU a report). This
  bench's 5,000 reports over 256 vehicles cross none, so its append figures do not show
  it.
Where catch-up's time goes now (py-spy, 12,256 report events, 7 views): on SQLite,
SQLite's own executemany ~22 % (the audit rows and their four indexes ~17 %), decoding
the log ~16 % (the baseline's own work), the inventory ~25 %, the hash chain ~10 %, the
views' commit ~7 %; on PostgreSQL, decoding ~26 %, waiting for the server ~10 %, the
inventory ~16 %, the rollout view's per-report work ~9 %, the hash chain ~7 %. Group
commit on SQLite stays near 0.2x: per report the store spends ~75 µs of wall time
against ~16 µs for the plain-SQL row (the fsync shared by both); the writer thread's
time is the commit (~17 % of the process's samples), the library's command machinery
and the hand-off between 16 caller threads and the writer (GIL switches, futures).

Third round of issue #16 (2026-12-03, branch `store`). The machine's load was 9-23
on 2 cores the whole afternoon, so wall-clock figures and even CPU time moved 20-50 %
between identical runs; the A/B figures below are instruction counts (valgrind
callgrind, deterministic whatever the load), main's code against this, on the same
fixture log. Six runs of this bench on this code: three at 14:48-15:03, load 17-23
(valgrind and PostgreSQL jobs), where a commit (fsync) waits so long that the append
ratios say nothing about the code (SQLite 1 writer up to 4.24x); three at 15:16-15:18,
load 4.5-7.5, the table being the first: SQLite / PostgreSQL 1 writer 0.45-0.54x /
0.46-0.69x, group commit 0.21-0.32x / 0.43-0.66x, catch-up 0.28x (all three) /
0.16-0.21x. Main's code at load 5 the same day (13:58): 0.47x / 0.55x, 0.26x / 0.42x,
0.23x / 0.088x.

- *Append, 1 writer*: the commit (SQLite: the WAL fsync; PostgreSQL: the server's WAL
  flush) and then the command. A save on PostgreSQL is now one statement, the append
  function (`muto_events_append`: table lock, NOTIFY, INSERT of every row, the version
  check) on an autocommit connection, instead of a four-statement psycopg pipeline:
  the process's CPU per single-event append fell from ~1,140 to ~990 µs in one A/B
  at load 12 (noisy; PostgreSQL's plain SQL ~340 µs); what is left of psycopg there
  is adapting the six arrays (its Python `upgrade`/`dump` of each list, about half
  the save).
- *Append, group commit*: SQLite, writer thread (cProfile on thread CPU time): the
  command ~53 % (the library's `trigger_event`/`mutate`/`apply` ~25 %, the cached
  aggregate and `UnitOfWork.find` ~11 %, encoding ~5 %), the save ~35 % (commit,
  executemany, the library's `put`), futures and wake-ups ~7 %. Removed in this round:
  `uuid5` per command (7 %; `stable_id` is remembered). UUID hashing is ~5 % (9
  dict lookups a command, `UUID.__hash__` is Python code). The writer thread
  spends ~110-140 µs of CPU a report against ~38 µs for the whole plain-SQL insert,
  so on a quiet machine with a fast fsync group commit stays near 0.25x on SQLite.
  By instructions (callgrind, 2,000 reports in batches of 16 on one thread, so no
  hand-off): 262 k a report now, ~290 k with main's code, against 55 k for a plain-SQL
  row in 16-row transactions (0.21x). Under load (slow commits) group commit reads
  0.4-0.6x. The command is the library's domain
  machinery and the aggregate cache; cutting it further means leaving the library's
  `Aggregate` event methods, which issue #16 keeps.
- *Projection catch-up*: on PostgreSQL the views' inserts go in by COPY (audit,
  chain, new vehicles and labels) and the inventory's updates by one
  `UPDATE ... FROM unnest(...)` per set of changed columns: psycopg's executemany sent
  a statement per row (~100 µs of its Python each), 41 % of a PostgreSQL catch-up for
  the audit insert alone. On SQLite (callgrind, 5,216 report events, 7 fresh views):
  catch-up 1,494 M instructions on main, 1,390 M now (-7 %; the inventory sets a
  row's version and `updated_at` once per vehicle and batch instead of per event,
  builds a report's shown columns only when shown; aggregate ids are formatted once),
  against 322-326 M for reading and decoding the same log: 0.22x -> 0.24x by
  instructions. Where it goes (cProfile on process time): `inventory` ~25 % (placing
  a report by the legacy key, the ledger, the row in memory), `audit_chain` ~22 %
  (canonical bytes and sha256 per record), `audit` ~20 % (the row and its JSON),
  reading the log ~11 % and decoding ~8 % (the baseline's own work), routing ~3 %.
  Seven views at a few µs of Python each per event cost several times one msgspec
  decode; 0.5x of read+decode is not reached by this design on either database.

Sixth round (2026-12-04, afternoon; a slower, noisy machine of the same kind: plain SQL
1 writer 4,900-6,200 rows/s on SQLite against 7,856 in the fifth round). The new row,
*Load uncached vehicles*: a batch of commands now loads the vehicles it lacks in one go
(`UnitOfWork.preload`: two queries for all, `EventLog.load_many`), where the library's
repository loaded each alone, two queries and a transaction per vehicle, serially on
the writer's thread. Every vehicle's first report after a restart, and every report
of a fleet larger than the aggregate cache, paid that. Also measured through the
writer: health transitions of 5,000 uncached vehicles from 64 callers (A/B, each twice):
PostgreSQL 396-494 -> 2,986-3,384 a second, SQLite 871-1,046 -> 3,870-4,343; the API
bench's priming pass (health, poll, health over 5,000 vehicles) on PostgreSQL 714-789
-> 1,154-1,364 req/s; an assignment naming 10,000 uncached vehicles (a rollout's
first after a restart, `registered_vehicles`): PostgreSQL 21.1-22.8 s -> 3.3-3.5 s,
SQLite 8.3 s -> 2.8 s. Rebuilding an aggregate (here and in the repository,
`eventlog.project`) no longer calls the library's `project_aggregate`, whose runtime-
Protocol `isinstance` took ~13 µs per event on Python 3.11 (a fifth of the writer
thread in the first version of the batched load). Where a cold batch's time goes now
(py-spy, PostgreSQL, 20,000 vehicles, writer thread): the two queries and their
transaction ~60 % (waiting on the server ~45 %), rebuilding the vehicles ~8 %, the
save ~17 %, waiting for callers ~10 %; at 20,000 vehicles the first pass ran at 717
transitions a second, the second at 1,610 (the server's cache warm). The other rows
did not move beyond the machine's noise (group commit, by cProfile call counts: +8
calls a report, the batch's id list). Later in the round the projector moved every
position of a batch in one statement (PostgreSQL: one `UPDATE ... FROM unnest` where
each of the seven views took a round trip, ~15 % of a step) and the hash chain stopped
reading its head back when it wrote it itself (~9 %): the in-process reconcile write
path (32 concurrent writers, read-your-writes) on PostgreSQL went from 1,733-1,887 to
1,806-2,468 reports/s over six A/B rounds; over HTTP (5,000 vehicles) the two were
within the machine's noise (1,902-2,834 against 1,960-2,749 req/s). PostgreSQL
catch-up read 0.23x, 0.52x and 0.43x in three runs of this round: its baseline swings.

Seventh round (2026-12-04, evening). The append and catch-up ratios here did not move
beyond the machine's noise; the round's changes cut costs per projector step and per
row stepped, which a catch-up of 2,000-event batches hardly pays and a server under
load does (docs/performance.md, *HTTP API*). Where the time goes, per report:
- Group commit on SQLite (16 threads, 20,000 reports, per-thread CPU): the writer
  thread ~83 µs of CPU (insert and commit ~34, of which the fsync is most; the
  commands ~29; the save's Python ~17), the 16 callers ~35-40 µs, and the process
  spends ~46 µs a report in the kernel (thread hand-offs; the baseline spends 9.5). The
  process's CPU per report equals its wall time: it is bound by the GIL's one core.
  Committing each batch on a second thread while the next batch's commands ran (built,
  A/B on both databases) gained nothing for that reason and was not kept.
- A single write (SQLite): 507-560 µs, of which the commit ~230 µs (the fsync, as the
  baseline's row), the command and save ~60 µs, and the hand-off to the writer thread
  and back (about four context switches a write) the rest.
- The recent-records memory the projector reads dropped its oldest entry by walking a
  dict's emptied slots (`next(iter(d))` after front deletions): ~6 µs a report once
  full (8,192 records); an OrderedDict now.
- A projector step of 32 reports (SQLite, CPU): 3.6 ms before this round, 2.3-3.1 ms
  after (positions and the inventory's load on the driver's connection without
  SQLAlchemy's compilation, no empty step after a short batch); beside a thread that
  never yields the GIL, 510-620 ms and ~160 context switches before the rows went in
  one statement, 140-180 ms and ~55 after, 68-70 ms and ~20 once the step's reads
  (positions, the inventory's rows) came back as one JSON value (one row stepped).

Eighth round (2026-12-04, night; an Intel Xeon machine, the rounds before ran on AMD
EPYC). Two changes for the single writer, A/B against the code before them on this
machine (two runs each; the table is the last run after):
- A caller that waits (`Writer.execute`) runs its command on its own thread when the
  writer is idle and its last batch was one command, instead of handing it to the
  writer thread and waiting to be woken (about four context switches a write).
- SQLite's saves keep one connection checked out between them: the pool's checkout,
  its reset (a rollback) and return were ~30 µs of a single write (py-spy, 12 % of it).
  PostgreSQL keeps a checkout per save (see docs/event-store.md).
Append, 1 writer: SQLite 2,509-2,590 events/s = 0.44-0.46x -> 3,357-3,734 = 0.55-0.66x
(five runs); PostgreSQL 1,475-1,506 = 0.55-0.58x -> 1,599-1,777 = 0.64-0.68x. A single
write on SQLite, in process: 356 -> 240 µs of wall time and 241 -> 170 µs of CPU; where
it goes now (py-spy --idle): the INSERT and COMMIT in SQLite ~54 % (the baseline's own
work), the command ~11 %, the library's `put` and the event mapper ~4 %, the rest
spread over the save's Python (snapshots check, recent records, positions). Group
commit and catch-up did not move (SQLite 0.18-0.21x / 0.24-0.25x, PostgreSQL
0.37-0.40x / 0.20-0.49x, before and after alike). The first version ran a caller's
command itself whenever nothing was outstanding: with 16 callers, the first back from
a batch ran alone and split the next in two (mean batch 14.6 -> 8.0, group commit
9,986 -> 8,237 events/s on SQLite); it now does so only after a batch of one.

Ninth round (2026-12-05, AMD EPYC again). A reconcile report's event is triggered and
applied directly (`trigger_event` and the event class's `apply`), not through the
library's `@event` method, whose argument matching and call were a tenth of the
writer's time on a batch of reports: `record_reconcile` on a vehicle remembering 256
report ids, in process, 11.7 -> 6.8 µs (of which ~3 µs is the look through those ids).
A/B against the code before, alternating, two runs each: SQLite / PostgreSQL 1 writer
0.59-0.60x -> 0.64x / 0.75-0.78x -> 0.84x; group commit 0.21-0.23x -> 0.25-0.28x /
0.49-0.50x -> 0.48-0.57x; catch-up (unchanged code) 0.21-0.22x / 0.28-0.49x before,
0.23-0.26x / 0.49-0.50x after. On this machine PostgreSQL's group commit and catch-up
sit at the 0.5x line; SQLite's stay far below it. Where SQLite's group commit goes (16
threads, ~95 µs of process CPU a report, of which ~40 µs in the kernel: ~3 context
switches a report and the commit's fsync): in one thread without hand-offs a report
costs ~60 µs of CPU, of which SQLite's insert and commit ~19 µs (the plain-SQL row is
~18 µs all told), the command ~26 µs (the library's event machinery, the aggregate
cache), the save's Python ~12 µs. A queue that woke the writer once a batch instead of
once a command did not move it (A/B within noise) and was not kept.

Tenth round (2026-12-05, Intel Xeon; nothing on these rows' paths changed, the table is
this code measured again). Where SQLite's group commit goes, in one thread without
hand-offs (batches of 16 run by `Writer._run` on the caller's thread, 8,000 reports): a
report costs 60-72 µs of wall time against 19-24 µs for the plain-SQL row, 0.32-0.36x
(the 16-thread bench: 0.24-0.28x). By py-spy: the save 45 % (its commit alone 19 %, the
multi-row INSERT 10 %), the commands 20 % (the look for the report id among the
vehicle's last 256: 7 %; the library's `trigger_event` and `mutate` 5 %), the writer's
batch and futures the rest. The store's commit takes longer than the baseline's for the
same pages: 326-346 µs (median) against 181-237 µs for a batch, though both write ~20
WAL frames a batch (`PRAGMA wal_checkpoint` counts, checkpoints off) over connections
with the same settings, and the baseline's rows committed on the store's own connection
take the baseline's time; the cause is not found. Even at the baseline's commit and
with no hand-offs, a report's Python (~40 µs) keeps SQLite's group commit under 0.5x.

Eleventh round (2026-12-05, Intel Xeon). SQLite's save is one `INSERT OR FAIL` of the
batch's rows instead of a plain INSERT. py-spy with native frames showed the plain
INSERT of a batch opening, writing and, at COMMIT, closing and deleting a temporary
file: the statement journal, which SQLite keeps to undo a statement of several rows
alone and spills to a file past 64 KiB (a batch of sixteen reports changes about that
many pages). OR FAIL needs no statement journal; a collision still fails the save and
its rollback undoes the rows before it. In one thread without hand-offs (batches of 16
through `Writer._run`, A/B alternating, two runs of three rounds each): 54-74 -> 47-65
µs of wall time a report, 0.32-0.36x -> 0.34-0.41x of the plain-SQL row. The 16-thread
bench does not show it beyond its noise (0.17-0.21x before and after): there the
hand-offs between the callers and the writer cost as much again as the store's work
(~98 µs of wall time a report against ~50 in one thread). On PostgreSQL the same
one-thread run gives 72 µs a report against 47-50 for the plain-SQL row, 0.65-0.69x,
where the 16-thread bench gives 0.39-0.41x: on both databases the gap to 0.5x is the
hand-off. The commit that took longer
than the baseline's (tenth round) is explained: the store's rows commit as fast as the
baseline's (180-200 µs median a batch, either table, either connection) when nothing
runs between commits, and every commit, the baseline's rows too, takes 230-295 µs when
about a millisecond of Python runs between them, as a batch's commands do. What keeps
the store's commit slower is the work between commits, not what it writes. Tried and
not kept: reading and decoding the next batch of a catch-up on a second thread while
the views apply the one before (no gain: decoding holds the GIL, and the views' waits
on the database came back to a busy GIL); PostgreSQL's views committing with
`synchronous_commit = off` (catch-up 0.35 -> 0.37x, a write with read-your-writes not
faster: within noise). Kept, off this bench's path: the inventory computes a report's
legacy order key (a time parsed and formatted) only for a report without a journal
place, which today's agents always send (1.7 -> 0.3-0.5 µs a placed report in
`shown_after`); this bench's reports have no place.

Twelfth round (2026-12-05, AMD EPYC, a machine about three times slower than the Xeon
of the rounds before: reading and decoding the log ran at 43,000-47,000 events/s here
against 166,000 there). Reading the log (`select_notifications`) is one SELECT on a
pooled driver connection, without the library's Session and SQLAlchemy's result
processing, whose Python type decorator made a UUID per row; an SQLite originator id's
bytes become its UUID through a memo. Reading alone: 14-18 -> 6-7 µs a record. The
catch-up's baseline reads through the same recorder, so it got faster with it: read +
decode 43,361-44,459 -> 81,041-81,686 events/s (A/B, two rounds each). The catch-up
itself rose less, 11,580-12,012 -> 12,671-13,177 events/s, and its ratio fell from
0.26-0.28x to 0.16x: what the ratio showed before was partly the baseline's slow read,
not the views' speed. By instructions (callgrind, 12,256 report events, 7 fresh views):
catch-up 3,301 M -> 2,941 M (-11 %), read + decode 752 M -> 566 M. Part of the catch-up's
gain is the inventory, which builds a vehicle's shown-report columns and report ledger
once per batch instead of once per report (a vehicle sends several reports in a batch
of 2,000). A property test compares the view, whatever the batches, with admitting
the reports one by one, for reports of two journals and of agents without one. In
the first version of that change a placed report dropped the row's ledger, and a
later report in the same batch read the stale column: the test found it (a late
report of a retired journal shown again), and it is now one of its fixed examples. On
this machine before the round: SQLite / PostgreSQL 1 writer 0.49x / 0.60x, group commit
0.22x / 0.57x, catch-up 14,589 events/s = 0.28x / 9,651 = 0.22x; the table is the run
after it. The SQLite catch-up stays short of 20,000 events/s on this machine. On the
Xeon it ran at 41,823 before this round.
Where a catch-up's time goes now (py-spy, 12,256 report events, before the read change):
reading 19 % (of which SQLAlchemy's rows and their UUIDs ~12 %, gone now), decoding 7 %,
the inventory ~20 % (its statements on SQLite ~5 %, the legacy order key ~4 %), the audit
rows ~14 % (SQLite's insert into the table and its four indexes ~9 %), the hash chain ~7 %,
the rollouts ~6 %, the views' commit ~5 %.

Thirteenth round (2026-12-05, session 20; an AMD EPYC machine much faster than the
twelfth round's: reading and decoding the log at 280,000-310,000 events/s). This bench's
process now runs with the garbage collector settled as `muto cloud serve` settles it
(`settle_collector`, muto/projections/collector.py), whose writer and projector it
measures; it ran on CPython's defaults before, which no muto server runs. With the
defaults a catch-up of 24,000 report events spent a sixth of its time in the collector:
a batch's 2,000 events and their rows outlived two young collections, were promoted,
and made three full collections of ~120 ms each over a heap that held the writer's
aggregates and recent records (gc callbacks: 753 young, 68 middle, 3 full collections,
~450 ms of 2.6 s). Settled: no full collection, ~40 ms in all. A/B, the same code, one
run each: SQLite catch-up 42,895 -> 56,557 events/s (0.15x -> 0.20x), PostgreSQL 29,720
-> 38,200 (0.14x -> 0.18x); the appends did not move beyond noise (SQLite 1 writer 0.60x
/ 0.59x, group commit 0.23x / 0.24x; PostgreSQL 0.69x / 0.73x, 0.40x / 0.43x). `muto
audit replay` settles the collector too: 24,000 report events replayed in a fresh
process, 37,470-38,512 -> 44,885-45,678 events/s (two runs each). The table is the
run after it; catch-up and group commit swing by a tenth between runs here.
Where a catch-up's time goes now (py-spy, settled, 24,000 report events): reading 7 %,
decoding 14 %, the audit rows ~15 % (their insert into the table and its four indexes
~12 %), the inventory ~18 %, the rollouts ~7 %, the hash chain ~7 %, the views' commit
~6 %. For 0.5x the views would have to cost what reading and decoding cost (~3.5 µs an
event here); seven views writing rows from Python cost ~14.
Where group commit goes (16 threads, 16,000 reports, threads' CPU from /proc): on
PostgreSQL the writer thread waits ~48 % of its time for the append function's answer
and ~35 % for its 16 callers to come back: every caller waits for the batch it is in,
so the callers' turnaround and the batch never overlap. The append function is not the
gap: alone, a 16-row call takes 455 µs (120 µs of the client's CPU) against 524 µs (283
µs) for the baseline's executemany and commit. The hand-off alone, with no store behind
it (futures resolved in batches of 16), costs ~20 µs an event, most of it in the kernel
(~3 context switches an event). On SQLite the store's commits write ~35 WAL frames a
batch against the baseline's ~26, and its fsyncs take 0.25 against 0.18 ms (strace, 208
batches each). A baseline inserting the store's own keys (its originator ids and
versions) instead of random ones runs faster still (61,000-65,000 against 56,000-58,000
events/s): the random keys are the lenient baseline, and stay.

Fourteenth round (2026-12-05, session 21; an AMD EPYC machine slower than the
thirteenth round's: reading and decoding this log at 201,000-244,000 events/s). The
bench's reports now carry a journal place (incarnation, number), as every report of
today's agents does (muto/agent/reports.py). Without one the inventory computed each
report's legacy order key (a time parsed and formatted), ~5 % of a catch-up (py-spy)
that no agent's report costs. A/B, the same code, two runs each: SQLite catch-up
43,550-45,639 events/s = 0.20-0.21x -> 43,522-43,866 = 0.23-0.24x; PostgreSQL
29,399-31,294 = 0.20-0.21x -> 29,687-31,704 = 0.21-0.22x. The events/s did not move: a
placed report costs the views less and decoding (the baseline's own work) more. The
appends did not move beyond noise. Two changes of the round sit on the catch-up's path
(the rollout view places a vehicle's reports by journal place, with one SELECT of the
members a batch names; a stored report's time is checked when decoded, so that one no
datetime holds in UTC is repaired, not fatal): on the same 24,256-event log, three
rounds each, catch-up 40,733-42,268 -> 41,757-44,878 events/s, reading and decoding
210,920-214,334 -> 201,331-202,121 (the time check, ~0.2 µs a report).
Where a catch-up's time goes now (py-spy, 24,256 placed report events, settled): reading
8 %, decoding 15 %, the audit rows ~27 % (building them 13 %, their insert into the
table and its four indexes 14 %), the hash chain ~11 %, the inventory ~13 % (was ~18 %
with unplaced reports), the rollouts ~2 %, the views' commit ~15 %. For 0.5x every view
together would have to cost what reading and decoding cost.

The table now (2026-12-05, session 23, an AMD EPYC machine: reading and decoding this
log at 209,000-253,000 events/s on SQLite; two runs, the table the second). Nothing on
these rows' paths changed in the session; off them, a health report whose reason codes
change is a transition now, the rollouts view judges superseded members when a desired
state is assigned, and keyed writes record their Idempotency-Key with the write. Group
commit 0.22-0.24x / 0.43-0.44x and catch-up 0.26-0.27x / 0.23-0.24x (SQLite /
PostgreSQL) sit where the rounds above left them.
"""

SCALE = float(os.environ.get("MUTO_BENCH_SCALE", "1"))
VEHICLES = 256
WRITERS = 16
SINGLE = 5 * max(10, int(200 * SCALE))  # reports, one command per save
GROUP = 5 * WRITERS * max(2, int(50 * SCALE))  # reports from 16 concurrent writers
HEAVY = max(500, int(10_000 * SCALE))  # reports on one vehicle
COLD = max(256, int(2_000 * SCALE))  # vehicles loaded into an empty aggregate cache
COLD_BATCH = 64  # vehicles a batch names (UnitOfWork.preload)
ROUNDS = 5  # store and baseline alternate, a fifth of the workload at a time
CATCH_UP_ROUNDS = 3  # fresh views catch up with the whole log, alternating with the baseline
ADMIN_URL = os.environ.get(
    "MUTO_BENCH_DATABASE_URL",
    os.environ.get(
        "MUTO_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
)
BEGAN = datetime(2026, 1, 1, tzinfo=UTC)


class EventLogWithoutSnapshots(EventLog):
    """The same log, read as if snapshots had never been configured."""

    name = "muto"  # a subclass would otherwise get tables of its own
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {}


@dataclass
class Backend:
    label: str
    settings: Settings
    raw_connect: Callable[[], Any]  # a DB-API connection to the same database
    placeholder: str  # "?" or "%s"
    raw_table_sql: list[str]


# Each vehicle's journal count, as its agent keeps it (muto/agent/reports.py).
_journal_numbers: dict[str, Iterator[int]] = {}


def reconcile(vehicle_id: str, report_id: str) -> ReconcileReport:
    """A report as today's agents send it: placed in the vehicle's journal."""
    number = next(_journal_numbers.setdefault(vehicle_id, itertools.count(1)))
    return ReconcileReport(
        schema="muto.reconcile-report.v1",
        report_id=report_id,
        vehicle_id=vehicle_id,
        desired_state_revision="dsr_0123456789abcdef0123",
        sequence=1,
        status=ReconcileStatus.CONVERGED,
        observed_at=BEGAN,
        journal=ReportPlace(incarnation=f"{vehicle_id}-journal", number=number),
    )


# -- backends -------------------------------------------------------------------------------


@contextmanager
def sqlite_backend() -> Iterator[Backend]:
    with tempfile.TemporaryDirectory(prefix="muto-bench-") as tmp:
        data_dir = Path(tmp)
        yield Backend(
            label=f"SQLite {sqlite3.sqlite_version}",
            settings=Settings(data_dir=data_dir, mqtt_url=None),
            raw_connect=lambda: sqlite3.connect(data_dir / "events.db", isolation_level=None),
            placeholder="?",
            raw_table_sql=[
                "CREATE TABLE raw_events (id INTEGER NOT NULL PRIMARY KEY, "
                "originator_id BINARY(16) NOT NULL, originator_version INTEGER NOT NULL, "
                "topic TEXT NOT NULL, state BLOB NOT NULL)",
                "CREATE UNIQUE INDEX raw_events_aggregate_idx "
                "ON raw_events (originator_id, originator_version)",
            ],
        )


def conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@contextmanager
def postgres_backend() -> Iterator[Backend | None]:
    name = f"muto_bench_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(conninfo(ADMIN_URL), autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL skipped: {ADMIN_URL} unreachable ({exc})")
        yield None
        return
    found = admin.execute("SHOW server_version").fetchone()
    version = str(found[0]).split()[0] if found else "?"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{ADMIN_URL.rpartition('/')[0]}/{name}"
    try:
        with tempfile.TemporaryDirectory(prefix="muto-bench-") as tmp:
            yield Backend(
                label=f"PostgreSQL {version}",
                settings=Settings(database_url=url, data_dir=Path(tmp), mqtt_url=None),
                raw_connect=lambda: psycopg.connect(conninfo(url)),
                placeholder="%s",
                raw_table_sql=[
                    "CREATE TABLE raw_events (id BIGSERIAL PRIMARY KEY, "
                    "originator_id UUID NOT NULL, originator_version BIGINT NOT NULL, "
                    "topic TEXT NOT NULL, state BYTEA NOT NULL)",
                    "CREATE UNIQUE INDEX raw_events_aggregate_idx "
                    "ON raw_events (originator_id, originator_version)",
                ],
            )
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


# -- measurements ---------------------------------------------------------------------------


def register_fleet(writer: Writer, vehicle_ids: list[str]) -> None:
    by = Cause.of("bench")
    futures = [
        writer.submit(register_vehicle(VehicleRegistration(vehicle_id=v, labels={"m": "x"}), by))
        for v in vehicle_ids
    ]
    for future in futures:
        future.result()


def append_single(writer: Writer, vehicle_ids: list[str], round_: int, count: int) -> None:
    for i in range(round_ * count, (round_ + 1) * count):
        writer.execute(record_reconcile(reconcile(vehicle_ids[i % VEHICLES], f"s{i}"), "b"))


def append_group(writer: Writer, vehicle_ids: list[str], round_: int, count: int) -> None:
    """`count` reports from 16 threads, each waiting for its write before the next."""
    per_writer = count // WRITERS

    def one_writer(w: int) -> None:
        for j in range(round_ * per_writer, (round_ + 1) * per_writer):
            vehicle_id = vehicle_ids[(w + WRITERS * j) % VEHICLES]
            writer.execute(record_reconcile(reconcile(vehicle_id, f"g{w}-{j}"), "b"))

    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        list(pool.map(one_writer, range(WRITERS)))


def interleaved(
    store: Callable[[int], object], baseline: Callable[[int], object]
) -> tuple[float, float]:
    """Seconds of the store and of its baseline, measured in alternating rounds so that
    both see the same machine (other jobs come and go on a shared 2-core machine)."""
    store_s = baseline_s = 0.0
    for round_ in range(ROUNDS):
        store_s += timed(functools.partial(store, round_))
        baseline_s += timed(functools.partial(baseline, round_))
    return store_s, baseline_s


def sample_row(log: EventLog) -> tuple[str, bytes]:
    """Topic and encoded state of a stored reconcile event: the rows to copy."""
    last = log.recorder.select_notifications(start=log.position(), limit=1)[0]
    return last.topic, bytes(last.state)


class PlainSQL:
    """The baseline: rows of the event table's shape and size inserted with the driver
    alone, `per_txn` rows per transaction, at the store's durability (SQLite: the same
    file, WAL, synchronous=FULL)."""

    def __init__(self, backend: Backend, topic: str, state: bytes, per_txn: int) -> None:
        self.table = f"raw_events_{per_txn}"
        self.topic, self.state, self.per_txn = topic, state, per_txn
        self.connection = backend.raw_connect()
        self.is_sqlite = isinstance(self.connection, sqlite3.Connection)
        if self.is_sqlite:
            mode = self.connection.execute("PRAGMA journal_mode").fetchone()[0]
            assert mode == "wal", mode  # as the event log opens it
            self.connection.execute("PRAGMA synchronous=FULL")  # as the event log keeps
        for statement in backend.raw_table_sql:
            self.connection.execute(statement.replace("raw_events", self.table))
        self.connection.commit()
        p = backend.placeholder
        self.insert = (
            f"INSERT INTO {self.table} (originator_id, originator_version, topic, state) "
            f"VALUES ({p}, {p}, {p}, {p})"
        )

    def row(self) -> tuple[Any, ...]:
        key = uuid.uuid4()
        return (key.bytes if self.is_sqlite else key, 1, self.topic, self.state)

    def insert_rows(self, count: int, sizes: list[int] | None = None) -> None:
        """`count` rows, `per_txn` a transaction, or in the transaction sizes given
        (the store's own batches, replayed)."""
        for size in sizes or [self.per_txn] * (count // self.per_txn):
            rows = [self.row() for _ in range(size)]
            cursor = self.connection.cursor()
            if self.is_sqlite:
                cursor.execute("BEGIN")
            cursor.executemany(self.insert, rows)
            self.connection.commit()

    def close(self) -> None:
        self.connection.close()


def catch_up(log: EventLog, backend: Backend) -> tuple[float, float, int]:
    """Events/s of fresh views catching up with the whole log, of the baseline that only
    reads and decodes the same notifications, and the number of views."""
    settings = backend.settings
    url = settings.database_url or f"sqlite:///{settings.data_dir / 'views.db'}"
    events = log.position()

    def read_only() -> None:
        start = 0
        while batch := log.recorder.select_notifications(
            start=start, limit=500, inclusive_of_start=False
        ):
            for notification in batch:
                log.mapper.to_domain_event(notification)
            start = batch[-1].id

    store = ViewStore(url)
    read_s = projected_s = 0.0
    try:
        views = Views(store)
        views.start()
        runner = ProjectionRunner(log, store, views.all)
        # Alternating rounds, so that both see the same machine; after the first, the
        # views are emptied (rows and positions) and catch up from the start again.
        for round_ in range(CATCH_UP_ROUNDS):
            read_s += timed(read_only)
            if round_:
                with store.writing() as session:
                    for projection in views.all:
                        projection.clear(session)
                        store.forget_position(session, projection.name)
            projected_s += timed(runner.catch_up)
            assert runner.position() == events, (runner.position(), events)
    finally:
        store.close()
    total = events * CATCH_UP_ROUNDS
    return rate(total, projected_s), rate(total, read_s), len(views.all)


def load_heavy(writer: Writer, backend: Backend) -> tuple[float, float]:
    """Median ms to load a vehicle with HEAVY reports: with snapshots, without."""
    by = Cause.of("bench")
    writer.execute(register_vehicle(VehicleRegistration(vehicle_id="heavy"), by))
    futures = [
        writer.submit(record_reconcile(reconcile("heavy", f"h{i}"), "b")) for i in range(HEAVY)
    ]
    for future in futures:
        future.result()
    vehicle_id, version = Vehicle.create_id("heavy"), HEAVY + 1

    def load(log: EventLog) -> None:
        # An explicit version bypasses the aggregate cache: a load from the store.
        assert log.repository.get(vehicle_id, version=version).version == version

    with_snapshots = median_ms(lambda: load(writer.log), 21)
    plain = EventLogWithoutSnapshots.open(backend.settings)
    try:
        assert plain.snapshots is None
        without = median_ms(lambda: load(plain), 3)
    finally:
        plain.close()
    return with_snapshots, without


def cold_loads(writer: Writer, backend: Backend) -> tuple[float, float]:
    """Vehicles/s rebuilt into an empty aggregate cache (after a restart): a batch's at
    once (`EventLog.load_many`, what `UnitOfWork.preload` does), and, the baseline, one
    at a time as the library's repository does (`repository.get`, two queries each).
    Each vehicle has a registration and three reports; a fresh event log each round."""
    vehicle_ids = [f"cold{i:05d}" for i in range(COLD)]
    register_fleet(writer, vehicle_ids)
    futures = [
        writer.submit(record_reconcile(reconcile(v, f"{v}-{n}"), "b"))
        for n in range(3)
        for v in vehicle_ids
    ]
    for future in futures:
        future.result()
    ids = [Vehicle.create_id(v) for v in vehicle_ids]

    def fresh(load: Callable[[EventLog], None]) -> float:
        log = EventLog.open(backend.settings)
        try:
            return timed(lambda: load(log))
        finally:
            log.close()

    def batched(log: EventLog) -> None:
        for first in range(0, COLD, COLD_BATCH):
            loaded = log.load_many(ids[first : first + COLD_BATCH])
            assert loaded is not None and all(a.version == 4 for a in loaded.values())

    def alone(log: EventLog) -> None:
        for aggregate_id in ids:
            assert log.repository.get(aggregate_id).version == 4

    batched_s = alone_s = 0.0
    for _ in range(CATCH_UP_ROUNDS):
        batched_s += fresh(batched)
        alone_s += fresh(alone)
    return rate(COLD * CATCH_UP_ROUNDS, batched_s), rate(COLD * CATCH_UP_ROUNDS, alone_s)


def sample_state(writer: Writer, log: EventLog) -> tuple[str, bytes]:
    writer.execute(record_reconcile(reconcile("v0000", "sample"), "b"))
    return sample_row(log)


def measure(backend: Backend) -> list[Result]:
    label = backend.label
    log = EventLog.open(backend.settings)
    writer = Writer(log)
    writer.start()
    started = time.perf_counter()

    def stage(what: str) -> None:
        print(f"  {label}: {what} done at {time.perf_counter() - started:.0f} s", flush=True)

    try:
        vehicle_ids = [f"v{i:04d}" for i in range(VEHICLES)]
        register_fleet(writer, vehicle_ids)
        topic, state = sample_state(writer, log)
        plain = PlainSQL(backend, topic, state, 1)
        single_s, raw_single_s = interleaved(
            lambda r: append_single(writer, vehicle_ids, r, SINGLE // ROUNDS),
            lambda r: plain.insert_rows(SINGLE // ROUNDS),
        )
        plain.close()
        single, raw_single = rate(SINGLE, single_s), rate(SINGLE, raw_single_s)
        stage("single writer")
        batches, commands = writer.batches, writer.commands
        plain = PlainSQL(backend, topic, state, WRITERS)
        sizes: list[int] = []  # the store's batches of the round just run
        writer.batch_observers.append(lambda size, _seconds: sizes.append(size))

        def replay(_round: int) -> None:  # the baseline commits in the same batch sizes
            plain.insert_rows(GROUP // ROUNDS, list(sizes))
            sizes.clear()

        group_s, raw_group_s = interleaved(
            lambda r: append_group(writer, vehicle_ids, r, GROUP // ROUNDS), replay
        )
        writer.batch_observers.clear()
        plain.close()
        group, raw_group = rate(GROUP, group_s), rate(GROUP, raw_group_s)
        mean_batch = (writer.commands - commands) / max(1, writer.batches - batches)
        stage("group commit")
        events = log.position()
        projected, read, view_count = catch_up(log, backend)
        stage("catch-up")
        snapshot_ms, full_ms = load_heavy(writer, backend)
        stage("snapshot loads")
        cold, cold_alone = cold_loads(writer, backend)
        stage("cold loads")
    finally:
        writer.close()
        log.close()
    row = f"{len(state)}-byte encoded state per event"
    return [
        Result(
            f"Append, 1 writer — {label}",
            single,
            "events/s",
            f"{SINGLE:,} reconcile reports over {VEHICLES} vehicles, one command per save; {row}",
            "plain SQL, 1 row per transaction",
            raw_single,
        ),
        Result(
            f"Append, {WRITERS} writers (group commit) — {label}",
            group,
            "events/s",
            f"{GROUP:,} reports from {WRITERS} threads through one Writer; "
            f"mean batch {mean_batch:.1f} commands; {row}",
            "plain SQL, the same rows in the store's batch sizes",
            raw_group,
        ),
        Result(
            f"Projection catch-up — {label}",
            projected,
            "events/s",
            f"{view_count} fresh views over a log of {events:,} events, batches of {BATCH:,}; "
            f"{CATCH_UP_ROUNDS} rounds alternating with the baseline",
            "read + decode the same log",
            read,
        ),
        Result(
            f"Load a Vehicle with {HEAVY:,} reports — {label}",
            snapshot_ms,
            "ms",
            "`repository.get` from the store (not the aggregate cache), snapshots every 100 "
            "events (median of 21)",
            "snapshots disabled (median of 3)",
            full_ms,
        ),
        Result(
            f"Load uncached vehicles, {COLD_BATCH} a batch — {label}",
            cold,
            "vehicles/s",
            f"{COLD:,} vehicles of 4 events each into an empty aggregate cache "
            f"(`EventLog.load_many`, as `UnitOfWork.preload`); {CATCH_UP_ROUNDS} rounds "
            "alternating with the baseline",
            "one `repository.get` each",
            cold_alone,
        ),
    ]


@contextmanager
def settled() -> Iterator[None]:
    """The collector as `muto cloud serve` settles it, whose writer and projector this
    bench measures (muto/projections/collector.py); CPython's defaults again after."""
    before = gc.get_threshold()
    settle_collector()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def run() -> list[Result]:
    results: list[Result] = []
    with settled(), sqlite_backend() as sqlite:
        results += measure(sqlite)
    with settled(), postgres_backend() as postgres:
        if postgres is not None:
            results += measure(postgres)
    return results
