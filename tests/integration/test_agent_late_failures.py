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
from pathlib import Path

import pytest

from muto.agent.journal import events as ev
from tests.support.artifact_server import ArtifactServer, Faults
from tests.support.real_vehicle import TOKEN, Vehicle, release, run
from tests.support.runtime_kit import pid_alive
from tests.support.waits import until


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
