"""Late failures of the running release, with the agent's real parts: the process
runtime and its child processes, the artifact cache over a local HTTP server, an SQLite
journal, the agent's own loop.

- a release that crash-loops after readiness while the next one downloads over a
  stalled link is rolled back, and reported unhealthy, during the download;
- an offline restart with the running release's cached archive damaged falls back to
  the intact previous release at once (one failed download, not a journal flood) and
  queues its report;
- a stack process killed outside muto is the supervisor's to restart (a restart the
  crash-loop rule counts), not a drift the agent restores over it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from muto.agent.agent import Agent
from muto.agent.artifacts import CachedArtifacts
from muto.agent.cache import ArtifactCache
from muto.agent.journal import Journal
from muto.agent.journal import events as ev
from muto.agent.parts import AgentParts, AgentSettings
from muto.agent.runtime.process import ProcessRuntime
from muto.agent.safety import SimulatedStateProvider
from muto.agent.trust import MemoryTrust
from muto.domain.release import HealthModel, Launch, StackRelease
from muto.domain.vehicle_state import VehicleState
from tests.support.agent_rig import VEHICLE, FakeCloud, Signers
from tests.support.artifact_server import ArtifactServer, Faults
from tests.support.releases import archive, stack_release
from tests.support.runtime_kit import LIVE_READY, PYTHON, pid_alive
from tests.support.waits import until

# serve: up for good; late: ready, then exits after 1.5 s, every run (a late crash loop).
APP = """
import os, sys, time
open("pid", "w").write(str(os.getpid()))
open("ready", "w").close()
time.sleep(1.5 if sys.argv[1] == "late" else 300)
sys.exit(1)
"""
HEALTH = HealthModel(readiness_probe=LIVE_READY, readiness_timeout_sec=30, crash_loop_window_sec=30)
TOKEN = "vehicle-token"
NOW = datetime.now(UTC) - timedelta(minutes=1)  # documents are judged on the real clock here


def release(
    tmp: Path, server: ArtifactServer, version: str, mode: str = "serve", padding: int = 0
) -> StackRelease:
    # Random padding: an archive big enough for a download to stall part-way.
    files = {"app.py": APP, "padding": os.urandom(padding).hex()}
    served, _ = archive(tmp, "nav", version, files, server=server)
    return stack_release(
        "nav", version, [served], launch=Launch(command=[PYTHON, "app.py", mode]), health=HEALTH
    )


class Vehicle:
    """One agent on a data dir under `tmp`; `restart` builds the next one on the same dir."""

    def __init__(self, tmp: Path, server: ArtifactServer, **settings: Any) -> None:
        self.tmp, self.server, self.settings = tmp, server, settings
        self.signers = Signers()
        self.cloud = FakeCloud()
        self.agent = self._agent()

    def _agent(self) -> Agent:
        data = self.tmp / "data"
        self.runtime = ProcessRuntime(
            self.tmp / "runtime", poll_sec=0.05, grace_sec=2, backoff_sec=0.05
        )
        self.cache = ArtifactCache(data / "cache", 50 * 1024 * 1024, read_timeout_s=60)
        parts = AgentParts(
            journal=Journal.open(data),
            trust=MemoryTrust(self.signers.trust),
            runtime=self.runtime,
            vehicle=SimulatedStateProvider(VehicleState()),
            artifacts=CachedArtifacts(self.cache, token=TOKEN, token_origin=self.server.base_url),
            cloud=self.cloud,
            data_dir=data,
        )
        settings = {"poll_s": 3600, "drift_check_s": 0.2, "health_every_s": 3600}
        return Agent(AgentSettings(vehicle_id=VEHICLE, **{**settings, **self.settings}), parts)

    async def restart(self, **settings: Any) -> None:
        await self.agent.stop()
        self.settings = {**self.settings, **settings}
        self.agent = self._agent()

    def desire(self, target: StackRelease, sequence: int) -> None:
        self.cloud.serve(self.signers.bundle(target, sequence, issued=NOW))
        self.agent.trigger("test")

    async def running(self, target: StackRelease, what: str, timeout: float = 30) -> None:
        def done() -> bool:
            state, status = self.agent.journal.state, self.runtime.status()
            return state.running_key == status.release == target.key and status.alive

        await until(done, what, timeout, in_thread=False, interval=0.05)

    def events(self, kind: type[ev.Event], after: int = 0) -> list[Any]:
        return [r.event for r in self.agent.journal.records(after) if isinstance(r.event, kind)]

    def healths(self, after: int = 0) -> list[tuple[str, list[str]]]:
        queued = self.events(ev.ReportQueued, after)
        return [(e.status, [*e.codes]) for e in queued if e.kind == "health"]


def run(
    tmp: Path, scenario: Callable[[Vehicle, ArtifactServer], Awaitable[None]], **settings: Any
) -> None:
    async def main() -> None:
        with ArtifactServer(faults=Faults(bearer_token=TOKEN)) as server:
            vehicle = Vehicle(tmp, server, **settings)
            try:
                await scenario(vehicle, server)
            finally:
                await vehicle.agent.stop()

    asyncio.run(main())


def test_a_late_crash_loop_is_rolled_back_and_reported_during_a_slow_download(
    tmp_path: Path,
) -> None:
    async def scenario(car: Vehicle, server: ArtifactServer) -> None:
        good = release(tmp_path, server, "1.0.0")
        late = release(tmp_path, server, "1.1.0", "late")
        slow = release(tmp_path, server, "2.0.0", padding=32 * 1024)
        await car.agent.start()
        car.desire(good, 1)
        await car.running(good, "1.0.0")
        car.desire(late, 2)
        await car.running(late, "1.1.0 ready (it crash-loops a few seconds later)")
        applied = time.monotonic()
        # From here the link stalls after 1 KiB of every download, for a minute.
        server.faults = Faults(bearer_token=TOKEN, stall_after=1024, stall_s=60)
        car.desire(slow, 3)
        await until(lambda: car.agent.phase.value == "caching", "the download", in_thread=False)
        assert time.monotonic() - applied < 4  # before the crash-loop rule trips (~4.7 s)
        before = car.agent.journal.state.position
        await car.running(good, "the rollback, during the download", timeout=20)
        took = time.monotonic() - applied
        (looped,) = car.events(ev.CrashLoopDetected, before)
        assert (looped.release_key, looped.during) == (late.key, "running")
        (back,) = car.events(ev.RollbackApplied, before)
        assert (back.failed_key, back.target_key) == (late.key, good.key)
        assert ("unhealthy", ["CRASH_LOOP_DETECTED"]) in car.healths(before)
        await until(
            lambda: any(
                r["kind"] == "health" and r["reasonCodes"] == ["CRASH_LOOP_DETECTED"]
                for r in car.cloud.reports
            ),
            "the health report, delivered",
            in_thread=False,
        )
        digest = slow.artifacts[0].digest
        assert not car.cache.has(digest) and not car.agent.idle  # still downloading
        await until(
            lambda: car.agent.phase.value == "caching", "the download again", in_thread=False
        )
        kept = [e for e in car.cache.entries() if e.digest == digest]
        assert kept and not kept[0].complete  # the partial stays, to resume from
        print(f"rolled back {took:.1f} s after the crash-looping release was applied")
        await car.agent.stop()  # mid-download: prompt
        # Judged under dsr_2, the revision 1.1.0 runs under (2.0.0 never ran here).
        reports = car.cloud.reconcile_reports()
        assert ("dsr_2", "rolled_back", ["CRASH_LOOP_DETECTED", "ROLLBACK_APPLIED"]) in reports
        assert not [r for r in reports if r[0] == "dsr_3" and r[1] == "rolled_back"]

    run(tmp_path, scenario)


def test_an_offline_restart_with_a_damaged_cached_archive_falls_back_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(car: Vehicle, server: ArtifactServer) -> None:
        older, newer = release(tmp_path, server, "1.0.0"), release(tmp_path, server, "1.1.0")
        await car.agent.start()
        car.desire(older, 1)
        await car.running(older, "1.0.0")
        car.desire(newer, 2)
        await car.running(newer, "1.1.0")
        await until(
            lambda: not car.agent.journal.state.outbox, "reports delivered", in_thread=False
        )
        blob = car.cache.root / "sha256" / newer.artifacts[0].digest.removeprefix("sha256:")
        # The vehicle reboots offline (cloud and artifact server out of reach) and finds
        # 1.1.0's cached archive torn; 1.0.0's is intact.
        await car.restart(poll_s=0.5)
        car.cloud.online = False
        server.faults = Faults(bearer_token="not-this-vehicle")  # every download: 401
        with blob.open("r+b") as f:
            f.truncate(10)
        before = car.agent.journal.state.position
        caplog.set_level(logging.INFO, "muto.agent")
        await car.agent.start()
        await car.running(older, "the fallback to 1.0.0")
        await asyncio.sleep(3)  # six polls and fifteen drift checks more
        assert "did not settle" not in caplog.text
        failures = car.events(ev.ArtifactFailed, before)
        assert [e.release_key for e in failures] == [newer.key]  # tried once
        (failed,) = car.events(ev.ApplyFailed, before)
        assert (failed.release_key, str(failed.code)) == (newer.key, "ARTIFACT_DOWNLOAD_FAILED")
        (back,) = car.events(ev.RollbackApplied, before)
        assert (back.failed_key, back.target_key) == (newer.key, older.key)
        reports = [
            (p.revision, p.status, [*p.codes])
            for p in car.agent.journal.state.outbox.values()
            if p.kind == "reconcile"
        ]
        assert reports == [
            ("dsr_2", "rolled_back", ["ARTIFACT_DOWNLOAD_FAILED", "ROLLBACK_APPLIED"])
        ]
        grown = car.agent.journal.state.position - before
        assert grown < 40, [type(r.event).__name__ for r in car.agent.journal.records(before)]
        directory = car.runtime.running_directory()
        assert directory is not None and pid_alive(int((directory / "pid").read_text()))

    run(tmp_path, scenario)


def test_a_stack_process_killed_outside_muto_is_restarted_by_its_supervisor_only(
    tmp_path: Path,
) -> None:
    async def scenario(car: Vehicle, server: ArtifactServer) -> None:
        car.runtime.backoff_sec = car.runtime.max_backoff_sec = 2.0  # a long gap, on purpose
        car.agent._wired.reconciler.liveness.after_s = 0.3  # "down" would be judged fast
        target = release(tmp_path, server, "1.0.0")
        await car.agent.start()
        car.desire(target, 1)
        await car.running(target, "1.0.0")
        directory = car.runtime.running_directory()
        assert directory is not None
        first = int((directory / "pid").read_text())
        before = car.agent.journal.state.position
        os.killpg(first, signal.SIGKILL)  # the whole group, as `kill -9 -PGID` would
        await until(lambda: not car.runtime.status().alive, "the kill seen", in_thread=False)
        status = car.runtime.status()
        assert status.restarting and status.release == target.key
        await asyncio.sleep(1.2)  # several drift checks while it is down
        assert not car.agent.drifted()
        await car.running(target, "the supervisor's restart")
        await until(
            lambda: (directory / "pid").read_text() != str(first), "a new pid", in_thread=False
        )
        assert car.runtime.status().restart_count == 1
        assert not car.events(ev.DriftDetected, before) and not car.events(ev.ApplyStarted, before)
        await until(lambda: ("healthy", []) in car.healths(before), "healthy", in_thread=False)

    run(tmp_path, scenario)
