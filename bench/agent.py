"""Vehicle agent: resident memory at idle and during an apply, CPU at idle with a 30 s
poll, replay of a 100,000-event journal, one planner decision, and the fleet simulator's
cost per simulated agent.

The real agent is `muto agent run --runtime process` as a child process against a real
`muto cloud serve --no-mqtt`, applying a real tar.gz served over HTTP. Memory and CPU come
from /proc of the agent's pid. Every figure has a baseline measured in the same run.
`MUTO_BENCH_SCALE=0.1` shrinks the journal, the fleet and the idle window for a quick look.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import json
import multiprocessing
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from pathlib import Path
from typing import Any

import httpx
from eventsourcing.persistence import OperationalError

from bench import Result, timed
from muto.agent.compose import simulated_agent
from muto.agent.journal import Journal, JournalState
from muto.agent.journal import events as ev
from muto.agent.journal.fold import evolve
from muto.agent.journal.journal import fold_records
from muto.agent.journal.state import Outcome
from muto.agent.journal.store import JOURNAL_ID
from muto.agent.reconcile.observed import Observed
from muto.agent.reconcile.planner import plan
from muto.agent.reconcile.steps import Apply
from muto.agent.reports import health_event, reconcile_event
from muto.agent.runtime.base import RuntimeStatus
from muto.domain.desired import (
    AgentConfig,
    ApplyWindow,
    DesiredStateBundle,
    DesiredStateDocument,
    Policy,
    StackRef,
)
from muto.domain.release import (
    Artifact,
    ArtifactType,
    Compatibility,
    HealthModel,
    Launch,
    StackRelease,
)
from muto.domain.reports import ReconcileStatus
from muto.domain.vehicle_state import VehicleState
from muto.domain.wire import encode, to_builtins
from muto.sim.services import free_port, prepare_cloud
from muto.trust import (
    KeySet,
    Signer,
    TrustConfig,
    manifest_digest,
    sign_desired_state,
    sign_release,
)

TITLE = "Vehicle agent"
NOTES = """
How to read it. *RSS* is VmRSS of the agent's pid (its stack runs in a child process, not
counted); the *peak during apply* is VmHWM after it was reset (`/proc/PID/clear_refs`)
just before the desired state was assigned, read once the agent had converged and
reported: download, digest check, extraction, start and readiness of the stack. *CPU* is
the run time the kernel accounted to every thread of the process (`/proc/PID/task/*/
schedstat`, nanoseconds; the coarser `/proc/PID/stat` ticks are given as a cross-check),
divided by the wall time of the window, as a share of one core. The import baselines are
processes that import and then sleep: a bare interpreter, `muto.agent.compose` (everything
the agent's code needs) and what `muto agent run` has imported before it runs (the `muto`
CLI builds every subcommand's parser, so it imports the cloud's, the demo's and the
audit's modules too).

The journal is built with the agent's own `Journal.append` (batches of 500, one
transaction each, snapshots every 500 events as in production) by a process that then
dies without closing it, as a killed agent leaves it: 499 events after the newest
snapshot, the most start-up ever replays. *Start-up* is opening it as the agent does
(newest snapshot + the records after it); *after a clean stop* the agent wrote a
snapshot at the end. *Full replay* decodes and folds every record from zero
(`journal verify` and `journal replay` do this); its baseline reads the same rows with
`sqlite3` alone. plan() is timed in batches of 2,000 calls (median of 31 batches) on
states folded from the same journal events.

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

SCALE = float(os.environ.get("MUTO_BENCH_SCALE", "1"))
PYTHON = sys.executable
EVENTS = max(2_000, int(100_000 * SCALE))  # journal size
FLEET = max(500, int(10_000 * SCALE))  # simulated agents in one process
IDLE_S = max(15.0, 90.0 * SCALE)  # idle CPU window of the real agent
FLEET_WINDOW_S = max(10.0, 30.0 * SCALE)  # steady state of the fleet: one poll period
TIMER_WINDOW_S = max(5.0, 10.0 * SCALE)  # its baseline
PAYLOAD_MB = 4  # incompressible bytes in the release archive
HEALTH_PER_ROLLOUT = 144  # a rollout every 12 h of periodic (5 min) health reports
SNAPSHOT_TAIL = 499  # journal records after the newest snapshot (SNAPSHOT_EVERY - 1)
PLAN_CALLS, PLAN_REPEAT = 2_000, 31
WAIT_S = 90.0
T0 = datetime(2026, 1, 5, 1, 0, tzinfo=UTC)  # 02:00 in Berlin: inside the apply window
POLICY = Policy(
    apply_window=ApplyWindow(start_local="22:00", end_local="05:00"),
    require_battery_pct_min=30,
)
PARKED = VehicleState(
    battery_pct=80,
    timezone="Europe/Berlin",
    model="m3",
    os="ubuntu-22.04",
    ros_distro="humble",
    free_disk_mb=50_000,
)

SLEEP = "import time\nprint('ready', flush=True)\ntime.sleep(1e6)"
BASELINES = {
    "bare": SLEEP,
    "compose": "import muto.agent.compose\n" + SLEEP,
    "cli": "from muto.cli import build_parser\nbuild_parser()\nimport muto.agent.compose\n" + SLEEP,
    "timers": "import asyncio\nprint('ready', flush=True)\n"
    "async def main():\n    while True:\n        await asyncio.sleep(5)\nasyncio.run(main())",
}


# -- /proc ----------------------------------------------------------------------------------


def status_kb(pid: int, field: str) -> int:
    """A kB field of /proc/PID/status (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    """VmHWM := VmRSS from now on."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass(frozen=True)
class Cpu:
    """CPU a process used so far: nanoseconds over its live threads, and stat ticks."""

    at: float
    ns: int
    ticks: int
    threads: frozenset[int]


def cpu_of(pid: int) -> Cpu:
    tasks = Path(f"/proc/{pid}/task")
    ns, threads = 0, set()
    for task in tasks.iterdir():
        ns += int((task / "schedstat").read_text().split()[0])
        threads.add(int(task.name))
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return Cpu(time.monotonic(), ns, ticks, frozenset(threads))


def cpu_share(before: Cpu, after: Cpu) -> float:
    """Share of one core between two samples; refuses when a thread came or went (its
    time would be missing from the per-thread sum)."""
    if before.threads != after.threads:
        raise RuntimeError(f"threads changed during the window: {before.threads} {after.threads}")
    return (after.ns - before.ns) / 1e9 / (after.at - before.at)


def tick_share(before: Cpu, after: Cpu) -> float:
    return (after.ticks - before.ticks) / os.sysconf("SC_CLK_TCK") / (after.at - before.at)


def wait_for(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return found


# -- services: the cloud, an artifact server, baseline processes ------------------------------


@dataclass
class Cloud:
    url: str
    operator: str
    trust_file: Path
    signer: Any
    http: httpx.Client

    def call(self, method: str, path: str, body: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.operator}"}
        response = self.http.request(method, f"{self.url}{path}", json=body, headers=headers)
        response.raise_for_status()
        return response.json()["data"]


@contextmanager
def cloud_service(root: Path) -> Iterator[Cloud]:
    """`muto cloud serve --no-mqtt` on a fresh SQLite data dir (prepare_cloud's keys)."""
    operator, trust, signer, release_pub = prepare_cloud(root)
    trust_file = root / "trust.json"
    trust_file.write_bytes(encode(trust))
    port = free_port()
    argv = [PYTHON, "-m", "muto.cli", "cloud", "serve", "--data-dir", str(root / "cloud"),
            "--port", str(port), "--no-mqtt", "--release-key", str(release_pub)]  # fmt: skip
    with (root / "cloud.log").open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=30) as http:
            wait_for(lambda: healthy(http, url, proc), "the cloud")
            yield Cloud(url, operator, trust_file, signer, http)
    finally:
        proc.terminate()
        proc.wait(30)


def healthy(http: httpx.Client, url: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise RuntimeError("the cloud exited; see cloud.log")
    try:
        return http.get(f"{url}/healthz").status_code == 200
    except httpx.TransportError:
        return False


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *_: Any) -> None:
        pass


@contextmanager
def artifact_server(directory: Path) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=directory))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def baseline_processes() -> Iterator[dict[str, int]]:
    """The baseline programs, started together, each past its imports: name -> pid."""
    procs = {
        name: subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.PIPE)
        for name, code in BASELINES.items()
    }
    try:
        for proc in procs.values():
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        yield {name: proc.pid for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()


# -- the real agent -------------------------------------------------------------------------

APP = "import pathlib, time\npathlib.Path('ready').touch()\ntime.sleep(3600)\n"
PROBE = [PYTHON, "-c", "import os, sys; sys.exit(0 if os.path.exists('ready') else 1)"]


def release_archive(directory: Path, base_url: str) -> StackRelease:
    """A tar.gz with the stack's program and PAYLOAD_MB of random (incompressible) data."""
    path = directory / "nav-1.0.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("app.py", APP.encode()), ("payload.bin", os.urandom(PAYLOAD_MB << 20))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = path.read_bytes()
    return StackRelease(
        stack_name="nav",
        version="1.0.0",
        artifacts=[
            Artifact(
                type=ArtifactType.ARCHIVE,
                ref=f"{base_url}/{path.name}",
                digest="sha256:" + hashlib.sha256(blob).hexdigest(),
                size=len(blob),
            )
        ],
        launch=Launch(command=[PYTHON, "app.py"]),
        health_model=HealthModel(readiness_probe=PROBE, readiness_timeout_sec=60),
    )


@dataclass
class RealAgent:
    data: Path
    cloud: Cloud
    vehicle_id: str = "bench-car"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, poll_s: float, token: str | None = None) -> None:
        argv = [PYTHON, "-m", "muto.cli", "agent", "run", "--vehicle-id", self.vehicle_id,
                "--cloud-url", self.cloud.url, "--data-dir", str(self.data),
                "--runtime", "process", "--poll-s", str(poll_s)]  # fmt: skip
        env = dict(os.environ)
        if token:  # the first start provisions the token and the trust store
            argv += ["--trust", str(self.cloud.trust_file)]
            env["MUTO_AGENT_TOKEN"] = token
        with (self.data.parent / "agent.log").open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        self.proc = None
        return code

    def state(self) -> JournalState:
        assert self.proc is not None and self.proc.poll() is None, "the agent exited"
        with Journal.read_only(self.data) as journal:
            return journal.state

    def settled(self, after: int) -> JournalState | None:
        """The state once the agent has journaled past `after`, sent its first health
        report and has nothing left in its outbox; else None."""
        try:
            state = self.state()
        except (FileNotFoundError, OperationalError):  # not created yet, or half-way
            return None
        done = state.position > after and state.last_health is not None and not state.outbox
        return state if done else None

    def restored(self, after: int) -> bool:
        """Whether the running release passed readiness again after position `after`."""
        if self.settled(after) is None:
            return False
        with Journal.read_only(self.data) as journal:
            return any(isinstance(r.event, ev.ReadinessPassed) for r in journal.records(after))


@dataclass(frozen=True)
class ApplyFigures:
    before_kb: int  # RSS at idle just before the desired state was assigned
    peak_kb: int  # VmHWM from then until converged and reported
    seconds: float  # assignment to converged report delivered (includes the poll wait)
    apply_sec: float | None
    readiness_sec: float | None


def measure_apply(agent: RealAgent, release: StackRelease, token: str) -> ApplyFigures:
    """Poll every 2 s (the apply should not wait for a 30 s poll), let it settle idle,
    then assign the release and watch the process until it has converged."""
    agent.start(poll_s=2, token=token)
    wait_for(lambda: agent.settled(0), "the agent to settle")
    time.sleep(3)
    before = status_kb(agent.pid, "VmRSS")
    reset_peak(agent.pid)
    began = time.monotonic()
    body = {"target": {"selector": "model=m3"}, "stack": {"name": "nav", "version": "1.0.0"}}
    revision = agent.cloud.call("POST", "/desired-states", body)["desiredStateRevision"]

    def converged() -> JournalState | None:
        state = agent.settled(0)
        reported = state.reported.get(revision) if state else None
        done = reported is not None and reported.status == ReconcileStatus.CONVERGED
        return state if done and state and state.running_key == release.key else None

    state = wait_for(converged, "the agent to converge")
    seconds = time.monotonic() - began
    peak = status_kb(agent.pid, "VmHWM")
    if agent.stop() != 0:
        raise RuntimeError("the agent did not exit 0 on SIGTERM")
    last = state.last_apply
    return ApplyFigures(
        before,
        peak,
        seconds,
        last.apply_sec if last else None,
        last.readiness_sec if last else None,
    )


@dataclass(frozen=True)
class IdleFigures:
    agent_kb: int
    agent_kb_start: int  # at the start of the window (growth would be a leak)
    baselines_kb: dict[str, int]
    agent_cpu: float  # share of one core
    agent_ticks: float
    timers_cpu: float
    threads: int


def measure_idle(agent: RealAgent) -> tuple[IdleFigures, dict[str, float]]:
    """Restart with the 30 s poll: the agent restores its release from the cache, settles,
    and is watched for IDLE_S next to the baseline processes. The fleet simulator's child
    runs meanwhile (the idle agent needs next to no CPU, and CPU is measured as CPU time)."""
    with Journal.read_only(agent.data) as journal:
        position = journal.last_position()
    agent.start(poll_s=30)
    fleet = child("fleet")
    try:
        with baseline_processes() as baselines:
            wait_for(lambda: agent.restored(position), "the restarted agent to restore its stack")
            time.sleep(5)
            start_kb = status_kb(agent.pid, "VmRSS")
            a0, t0 = cpu_of(agent.pid), cpu_of(baselines["timers"])
            time.sleep(IDLE_S)
            a1, t1 = cpu_of(agent.pid), cpu_of(baselines["timers"])
            idle = IdleFigures(
                agent_kb=status_kb(agent.pid, "VmRSS"),
                agent_kb_start=start_kb,
                baselines_kb={name: status_kb(pid, "VmRSS") for name, pid in baselines.items()},
                agent_cpu=cpu_share(a0, a1),
                agent_ticks=tick_share(a0, a1),
                timers_cpu=cpu_share(t0, t1),
                threads=len(a1.threads),
            )
        if agent.stop() != 0:
            raise RuntimeError("the agent did not exit 0 on SIGTERM")
        return idle, child_result(fleet)
    finally:
        fleet.kill()


def real_agent() -> tuple[ApplyFigures, IdleFigures, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="muto-bench-agent-") as tmp:
        root = Path(tmp)
        (root / "artifacts").mkdir()
        with cloud_service(root) as cloud, artifact_server(root / "artifacts") as base_url:
            release = release_archive(root / "artifacts", base_url)
            cloud.call("POST", "/releases", to_builtins(sign_release(release, [cloud.signer])))
            cloud.call("POST", "/vehicles", {"vehicleId": "bench-car", "labels": {"model": "m3"}})
            token = cloud.call("POST", "/tokens", {"role": "vehicle", "vehicleId": "bench-car"})
            agent = RealAgent(root / "agent", cloud)
            agent.data.mkdir()
            (agent.data / "vehicle-state.json").write_bytes(encode(VehicleState()))
            try:
                applied = measure_apply(agent, release, token["token"])
                idle, fleet = measure_idle(agent)
            finally:
                if agent.proc is not None:
                    agent.proc.kill()
    return applied, idle, fleet


# -- journal events: a vehicle's life, built with the agent's own report builders ------------


def bench_release(version: int) -> StackRelease:
    digest = "sha256:" + hashlib.sha256(f"nav-{version}".encode()).hexdigest()
    return StackRelease(
        stack_name="nav",
        version=f"1.{version}.0",
        artifacts=[
            Artifact(
                type=ArtifactType.ARCHIVE,
                ref=f"nav-1.{version}.0.tar.gz",
                digest=digest,
                size=48 << 20,
            )
        ],
        launch=Launch(command=["/opt/nav/bin/run", "--config", "/etc/nav.yaml"]),
        compatibility=Compatibility(
            vehicle_models=["m3"], os=["ubuntu-22.04"], ros_distro=["humble"]
        ),
        health_model=HealthModel(readiness_probe=["/opt/nav/bin/ready"]),
    )


def verified(version: int, at: datetime) -> ev.DesiredVerified:
    release = bench_release(version)
    document = DesiredStateDocument(
        vehicle_id="bench-car",
        revision=f"dsr_{version:020d}",
        sequence=version,
        stack=StackRef(name="nav", version=release.version, manifest_digest="sha256:" + "3" * 64),
        policy=POLICY,
        agent_config=AgentConfig(),
        correlation_id=f"rollout-{version}",
        issued_at=at,
        expires_at=at + timedelta(days=30),
    )
    return ev.DesiredVerified(
        at=at,
        revision=document.revision,
        sequence=version,
        document=document,
        release=release,
        document_digest="sha256:" + hashlib.sha256(encode(document)).hexdigest(),
        release_digest="sha256:" + hashlib.sha256(encode(release)).hexdigest(),
    )


def rollout(version: int, state: JournalState, at: datetime) -> Iterator[ev.Event]:
    """What one converging rollout journals; `state` is folded between events."""
    desired = verified(version, at)
    key, digest = desired.release.key, desired.release.artifacts[0].digest
    yield ev.AgentStarted(at=at, agent_version="0.1.0", runtime="process")
    yield ev.DesiredReceived(
        at=at, revision=desired.revision, sequence=version, etag=f'"{version}"'
    )
    yield desired
    yield ev.GatesEvaluated(at=at, revision=desired.revision, sequence=version, codes=[])
    yield ev.ArtifactCached(at=at, digest=digest, size=48 << 20, release_key=key)
    yield ev.ArtifactsVerified(at=at, release_key=key, digests=[digest])
    yield ev.ApplyStarted(
        at=at,
        release_key=key,
        revision=desired.revision,
        sequence=version,
        replacing=state.running_key,
    )
    yield ev.ApplySucceeded(at=at, release_key=key, apply_sec=2.5)
    yield ev.ReadinessPassed(at=at, release_key=key, readiness_sec=4.0)
    outcome = Outcome(revision=desired.revision, sequence=version, status=ReconcileStatus.CONVERGED)
    queued = reconcile_event("bench-car", state, outcome, at)
    yield queued
    yield ev.ReportDelivered(at=at, report_id=queued.report_id, via="http")


def health(state: JournalState, at: datetime) -> Iterator[ev.Event]:
    runtime = RuntimeStatus(
        release=state.running_key, alive=True, restart_count=0, crash_looping=False
    )
    queued = health_event("bench-car", state, runtime, at)
    yield queued
    yield ev.ReportDelivered(at=at, report_id=queued.report_id, via="http")


def life() -> Iterator[ev.Event]:
    """Endless: a rollout, then HEALTH_PER_ROLLOUT periodic health reports, again."""
    state, at, version = JournalState(), T0, 0
    while True:
        version += 1
        steps = [rollout(version, state, at)]
        for i in range(HEALTH_PER_ROLLOUT):
            steps.append(health(state, at + timedelta(minutes=5 * (i + 1))))
        for events in steps:
            for event in events:
                state.position += 1
                evolve(state, event)
                yield event
        at += timedelta(minutes=5 * (HEALTH_PER_ROLLOUT + 1))


# -- journal replay --------------------------------------------------------------------------


def write_journal(data_dir: Path) -> None:
    """Append EVENTS events and exit without closing, as a killed agent would: the last
    SNAPSHOT_TAIL events are after the newest snapshot. Runs in a child process."""
    journal = Journal.open(data_dir)
    events = life()
    head = EVENTS - SNAPSHOT_TAIL
    first = head % 500 or 500
    journal.append(*islice(events, first))
    while journal.state.position < head:
        journal.append(*islice(events, 500))
    journal.append(*islice(events, SNAPSHOT_TAIL))
    assert journal.state.position == EVENTS
    os._exit(0)  # no close(): close() would snapshot


def raw_rows(db: Path) -> int:
    """Baseline: the same rows read with sqlite3 alone, no decoding."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        query = (
            "SELECT originator_version, state FROM stored_events "
            "WHERE originator_id = ? ORDER BY originator_version"
        )
        return sum(1 for _ in connection.execute(query, (JOURNAL_ID.hex,)))
    finally:
        connection.close()


def open_journal(data_dir: Path) -> JournalState:
    """As start-up does: newest snapshot, then the records after it."""
    with Journal.read_only(data_dir) as journal:
        return journal.state


def replay_from_zero(data_dir: Path) -> JournalState:
    with Journal.read_only(data_dir) as journal:
        return fold_records(journal.records())


def median_s(action: Callable[[], object], repeat: int) -> float:
    return statistics.median(timed(action) for _ in range(repeat))


@dataclass(frozen=True)
class ReplayFigures:
    build_s: float
    db_mb: float
    full_s: float
    raw_s: float
    decode_s: float
    crashed_s: float
    replayed: int
    clean_s: float


def measure_replay() -> ReplayFigures:
    with tempfile.TemporaryDirectory(prefix="muto-bench-journal-") as tmp:
        data = Path(tmp)
        writer = multiprocessing.get_context("fork").Process(target=write_journal, args=(data,))
        build_s = timed(lambda: (writer.start(), writer.join()))
        if writer.exitcode != 0:
            raise RuntimeError(f"the journal writer exited {writer.exitcode}")
        db = data / "journal.db"
        assert raw_rows(db) == EVENTS
        with Journal.read_only(data) as journal:
            replayed = journal.replayed
            decode_s = median_s(lambda: sum(1 for _ in journal.records()), 3)
        full = replay_from_zero(data)
        if full != open_journal(data):
            raise AssertionError("a replay from zero differs from snapshot + tail")
        crashed_s = median_s(lambda: open_journal(data), 5)
        full_s = median_s(lambda: replay_from_zero(data), 3)
        raw_s = median_s(lambda: raw_rows(db), 3)
        Journal.open(data).close()  # a clean stop: snapshot at the end
        clean_s = median_s(lambda: open_journal(data), 5)
        size = sum(f.stat().st_size for f in data.iterdir() if f.name.startswith("journal.db"))
    return ReplayFigures(build_s, size / 1e6, full_s, raw_s, decode_s, crashed_s, replayed, clean_s)


# -- plan() ----------------------------------------------------------------------------------


def folded(count: int) -> JournalState:
    state = JournalState()
    for event in islice(life(), count):
        state.position += 1
        evolve(state, event)
    return state


def observed_for(state: JournalState) -> Observed:
    desired = state.desired
    assert desired is not None
    return Observed(
        journal=state,
        runtime=RuntimeStatus(
            release=state.running_key, alive=True, restart_count=0, crash_looping=False
        ),
        vehicle=PARKED,
        cached=frozenset(a.digest for a in desired.release.artifacts),
    )


def trivial(desired: object, observed: object, policy: object, now: object) -> None:
    return None


def per_call_us(function: Callable[..., object], args: tuple[Any, ...]) -> float:
    def batch() -> None:
        for _ in range(PLAN_CALLS):
            function(*args)

    return median_s(batch, PLAN_REPEAT) / PLAN_CALLS * 1e6


def measure_plan() -> tuple[float, float, float]:
    """µs per plan(): the converged vehicle every poll sees (empty plan), the decision to
    apply a newly verified release (gates evaluated, artifacts cached); a trivial call."""
    cycle = 11 + 2 * HEALTH_PER_ROLLOUT
    steady = folded(cycle)  # converged, reported, health reports delivered
    fresh = folded(cycle + 3)  # the next rollout's DesiredVerified just folded in
    now = T0 + timedelta(days=1)
    converged_args = (steady.desired, observed_for(steady), None, now)
    apply_args = (fresh.desired, observed_for(fresh), None, now)
    quiet = plan(*converged_args)
    decided = plan(*apply_args)
    assert not quiet.steps and quiet.verdict is not None and quiet.verdict.kind == "converged"
    assert isinstance(decided.steps[-1], Apply), decided
    return (
        per_call_us(plan, converged_args),
        per_call_us(plan, apply_args),
        per_call_us(trivial, converged_args),
    )


# -- the fleet simulator (a child process: `python -m bench.agent fleet N`) -----------------


class FleetCloud:
    """The cloud's two vehicle endpoints, in process: each vehicle's own signed bundle
    (304 on its current ETag), and an acknowledgement for every report."""

    def __init__(self, count: int) -> None:
        releaser, control_plane = Signer.generate(), Signer.generate()
        self.trust = TrustConfig(
            release_keys=KeySet(keys=[releaser.public_pem]),
            control_plane_keys=KeySet(keys=[control_plane.public_pem]),
        )
        self.release = StackRelease(
            stack_name="nav",
            version="1.0.0",
            artifacts=[
                Artifact(
                    type=ArtifactType.FILE,
                    ref="nav-1.0.0.bin",
                    digest="sha256:" + "4" * 64,
                    size=1 << 20,
                )
            ],
        )
        envelope = sign_release(self.release, [releaser])
        self.bodies = {
            vehicle_id: self.body(vehicle_id, envelope, control_plane)
            for vehicle_id in (f"sim-{i:05d}" for i in range(count))
        }
        self.polls = 0

    def body(self, vehicle_id: str, release: Any, signer: Signer) -> tuple[str, bytes]:
        now = datetime.now(UTC)
        document = DesiredStateDocument(
            vehicle_id=vehicle_id,
            revision="dsr_00000000000000000001",
            sequence=1,
            stack=StackRef(
                name="nav", version="1.0.0", manifest_digest=manifest_digest(self.release)
            ),
            policy=Policy(),
            agent_config=AgentConfig(),
            correlation_id="bench",
            issued_at=now,
            expires_at=now + timedelta(days=30),
        )
        bundle = DesiredStateBundle(
            desired_state=sign_desired_state(document, signer), release=release
        )
        meta = b'"metadata":{"revision":"dsr_00000000000000000001","sequence":1}'
        return f'"{vehicle_id}-1"', b'{"data":' + encode(bundle) + b"," + meta + b"}"

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.method != "GET":
            return httpx.Response(202, json={"data": {}})
        self.polls += 1
        etag, body = self.bodies[request.url.params["vehicleId"]]
        if request.headers.get("if-none-match") == etag:
            return httpx.Response(304, headers={"ETag": etag})
        return httpx.Response(200, content=body, headers={"ETag": etag})


async def loop_lag(stop: asyncio.Event, lags: list[float], every: float = 0.05) -> None:
    """How late the event loop wakes a sleeper (seconds past `every`)."""
    while not stop.is_set():
        began = time.monotonic()
        await asyncio.sleep(every)
        lags.append(time.monotonic() - began - every)


def run_queue_ns() -> int:
    """Nanoseconds this process's threads have waited on a run queue (for a CPU)."""
    tasks = Path("/proc/self/task").iterdir()
    return sum(int((task / "schedstat").read_text().split()[1]) for task in tasks)


async def steady(window_s: float) -> dict[str, float]:
    """CPU share of one core this process used over `window_s`, the share of the window
    it waited for a CPU (other processes had it), and the event-loop lag."""
    stop, lags = asyncio.Event(), []
    sampler = asyncio.create_task(loop_lag(stop, lags))
    cpu, waited, began = time.process_time(), run_queue_ns(), time.monotonic()
    await asyncio.sleep(window_s)
    wall = time.monotonic() - began
    share = (time.process_time() - cpu) / wall
    waiting = (run_queue_ns() - waited) / 1e9 / wall
    stop.set()
    await sampler
    p99 = statistics.quantiles(lags, n=100, method="inclusive")[98]
    return {
        "cpu": share,
        "waiting": waiting,
        "lag_p99_ms": p99 * 1000,
        "lag_max_ms": max(lags) * 1000,
        "lag_samples": len(lags),
    }


def all_converged(agents: list[Any], key: str) -> bool:
    for agent in agents:
        state = agent.journal.state
        if state.running_key != key or state.outbox or state.last_health is None:
            return False
    return True


async def run_fleet(count: int) -> dict[str, float]:
    """`count` simulated agents started back to back (as SimFleet.start does), each
    converged and reported, then FLEET_WINDOW_S of steady state."""
    cloud = FleetCloud(count)
    http = httpx.AsyncClient(transport=httpx.MockTransport(cloud.handle))
    gc.collect()
    before = status_kb(os.getpid(), "VmRSS")
    began, cpu = time.monotonic(), time.process_time()
    agents = [
        simulated_agent(vehicle_id, cloud.trust, cloud_url="http://cloud.invalid", http=http,
                        token=vehicle_id, vehicle=VehicleState(free_disk_mb=1e6), poll_s=30)
        for vehicle_id in cloud.bodies
    ]  # fmt: skip
    for agent in agents:
        await agent.start()
    while not all_converged(agents, cloud.release.key):
        await asyncio.sleep(0.5)
    startup = {"startup_s": time.monotonic() - began, "startup_cpu_s": time.process_time() - cpu}
    gc.collect()
    after = status_kb(os.getpid(), "VmRSS")
    polls = cloud.polls
    figures = await steady(FLEET_WINDOW_S)
    return {
        "agents": count,
        "before_mb": before / 1024,
        "after_mb": after / 1024,
        "per_agent_kb": (after - before) / count,
        "polls": cloud.polls - polls,
        **startup,
        **figures,
    }


async def run_timers(count: int) -> dict[str, float]:
    """Baseline: `count` tasks started together that only wake every 5 s (the agent's
    drift timer, in step as in agents started back to back)."""

    async def timer() -> None:
        while True:
            await asyncio.sleep(5)

    tasks = [asyncio.create_task(timer()) for _ in range(count)]
    await asyncio.sleep(0.5)
    figures = await steady(TIMER_WINDOW_S)
    del tasks
    return figures


def child(kind: str) -> subprocess.Popen[bytes]:
    """`python -m bench.agent fleet|timers N` in a fresh interpreter (its RSS is its own)."""
    argv = [PYTHON, "-m", "bench.agent", kind, str(FLEET)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE)


def child_result(proc: subprocess.Popen[bytes]) -> dict[str, float]:
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{proc.args} exited {proc.returncode}")
    found: dict[str, float] = json.loads(out.decode().splitlines()[-1])
    return found


# -- results ---------------------------------------------------------------------------------


def memory_results(applied: ApplyFigures, idle: IdleFigures) -> list[Result]:
    base = idle.baselines_kb
    mb = 1024
    return [
        Result(
            "Agent RSS at idle",
            idle.agent_kb / mb,
            "MB",
            f"`muto agent run --runtime process --poll-s 30`, converged, its stack running; "
            f"after {IDLE_S:.0f} s idle ({idle.agent_kb_start / mb:.1f} MB at the start of "
            f"that window); {idle.threads} threads",
            "process with `muto agent run`'s imports, running nothing",
            base["cli"] / mb,
        ),
        Result(
            "Agent peak RSS during apply",
            applied.peak_kb / mb,
            "MB",
            f"VmHWM while applying a {PAYLOAD_MB} MB tar.gz (download, verify, extract, start, "
            f"readiness probe): {applied.seconds:.1f} s from assignment to converged report, "
            f"apply {applied.apply_sec or 0:.2f} s, readiness {applied.readiness_sec or 0:.2f} s",
            "the same process at idle just before",
            applied.before_kb / mb,
        ),
        Result(
            "Imports of `muto agent run`",
            base["cli"] / mb,
            "MB",
            "a process that builds the `muto` CLI parser (every subcommand's module) and "
            "imports `muto.agent.compose`, then sleeps",
            "importing `muto.agent.compose` alone",
            base["compose"] / mb,
        ),
        Result(
            "Imports of `muto.agent.compose`",
            base["compose"] / mb,
            "MB",
            "everything the agent's code imports, nothing run",
            "bare interpreter (`python -c` sleeping)",
            base["bare"] / mb,
        ),
    ]


def cpu_result(idle: IdleFigures) -> Result:
    per_minute = 60_000  # ms of CPU per minute at 100 % of one core
    return Result(
        "Agent CPU at idle, 30 s poll",
        idle.agent_cpu * per_minute,
        "ms CPU/min",
        f"= {idle.agent_cpu * 100:.4f} % of a core; {IDLE_S:.0f} s window, converged, stack "
        f"running: ~{IDLE_S / 30:.0f} polls answered 304, drift and health checks every 5 s; "
        f"stat ticks say {idle.agent_ticks * per_minute:.0f} ms/min",
        "asyncio loop sleeping, waking every 5 s",
        idle.timers_cpu * per_minute,
    )


def replay_results(r: ReplayFigures) -> list[Result]:
    journal = (
        f"{EVENTS:,} events ({r.db_mb:.0f} MB of SQLite, written in {r.build_s:.0f} s): a "
        f"rollout (11 events) then {HEALTH_PER_ROLLOUT} periodic health reports, each "
        "queued and delivered, over and over"
    )
    return [
        Result(
            f"Journal replay from zero, {EVENTS:,} events",
            r.full_s,
            "s",
            f"{journal}; read and decode alone take {r.decode_s:.2f} s (median of 3)",
            "the same rows read with sqlite3 (median of 3)",
            r.raw_s,
        ),
        Result(
            "Journal open at start-up, after a crash",
            r.crashed_s * 1000,
            "ms",
            f"newest snapshot + {r.replayed} records after it (median of 5)",
            "replay from zero",
            r.full_s * 1000,
        ),
        Result(
            "Journal open at start-up, after a clean stop",
            r.clean_s * 1000,
            "ms",
            "the snapshot written at the end, no record to replay (median of 5)",
            "replay from zero",
            r.full_s * 1000,
        ),
    ]


def plan_results(converged_us: float, apply_us: float, trivial_us: float) -> list[Result]:
    common = f"median of {PLAN_REPEAT} batches of {PLAN_CALLS:,} calls"
    return [
        Result(
            "plan(), converged vehicle (every poll)",
            converged_us,
            "µs",
            f"desired release runs and was reported: empty plan, verdict converged; {common}",
            "a trivial function of the same 4 arguments",
            trivial_us,
        ),
        Result(
            "plan(), apply decision",
            apply_us,
            "µs",
            "a new release verified: compatibility, expiry, apply window (Europe/Berlin), "
            f"stationary and battery gates, cache check → NoteGates + Apply; {common}",
            "a trivial function of the same 4 arguments",
            trivial_us,
        ),
    ]


def fleet_results(f: dict[str, float], timers: dict[str, float], idle: IdleFigures) -> list[Result]:
    n = int(f["agents"])
    started = (
        f"all {n:,} converged and reported {f['startup_s']:.0f} s after the first start, "
        f"{f['startup_cpu_s']:.0f} s of CPU ({f['startup_cpu_s'] / n * 1000:.1f} ms per agent)"
    )
    return [
        Result(
            "Memory per simulated agent",
            f["per_agent_kb"],
            "KB",
            f"{n:,} agents in one process: RSS {f['before_mb']:.0f} → {f['after_mb']:.0f} MB; "
            + started,
            "RSS of one real agent process at idle (above)",
            idle.agent_kb,
        ),
        Result(
            f"CPU of {n:,} idle simulated agents",
            f["cpu"] * 100,
            "% of a core",
            f"{FLEET_WINDOW_S:.0f} s of steady state right after start-up, one process: "
            f"{f['polls']:,.0f} polls answered 304 (the loop kept pace); it waited for a CPU "
            f"{f['waiting'] * 100:.0f} % of the window (other processes had them)",
            f"{n:,} bare asyncio tasks started together, waking every 5 s",
            timers["cpu"] * 100,
        ),
        Result(
            f"Event-loop lag p99, {n:,} idle simulated agents",
            f["lag_p99_ms"],
            "ms",
            f"how late a 50 ms sleep wakes in the same window ({f['lag_samples']:.0f} samples); "
            f"max {f['lag_max_ms']:,.0f} ms",
            f"the same {n:,} bare tasks (max {timers['lag_max_ms']:,.0f} ms)",
            timers["lag_p99_ms"],
        ),
        Result(
            "Simulated agents one process holds (CPU projection)",
            n / f["cpu"],
            "agents",
            "one core ÷ the CPU per idle agent above, if the loop may run flat out; the lag "
            "above grows with the count, and start-up and rollouts need headroom; by memory "
            f"alone, {1024 * 1024 / f['per_agent_kb'] / 1000:,.0f}k agents per GB",
            "agents held in this run",
            n,
        ),
    ]


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


if __name__ == "__main__":
    figures = asyncio.new_event_loop().run_until_complete(
        (run_fleet if sys.argv[1] == "fleet" else run_timers)(int(sys.argv[2]))
    )
    print(json.dumps(figures), flush=True)
    os._exit(0)  # without stopping thousands of agents one by one: nothing left to measure
