"""Failures that strike the running release while the agent is busy or offline, on fakes
(simulated runtime and artifacts, a fake cloud): a crash loop during a long download or a
slow fetch is rolled back and reported at once; a restore whose artifacts cannot be had
falls back to a known good instead of spinning; a stack stopped outside muto is restored.
The same with real processes: tests/integration/test_agent_late_failures.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from muto.agent.clock import SystemClock
from muto.agent.journal import events as ev
from muto.agent.runtime.simulated import SimulatedBehaviour
from muto.domain.reasons import ReasonCode
from tests.support.agent_rig import (
    MOVING,
    A,
    B,
    C,
    FakeCloud,
    Rig,
    converged_on,
    failing,
    make_rig,
    restarted,
    run,
    started,
    types,
)
from tests.support.waits import until

LOST = "ARTIFACT_DOWNLOAD_FAILED"


def events(rig: Rig, kind: type[ev.Event], after: int = 0) -> list[Any]:
    return [r.event for r in rig.journal.records(after) if isinstance(r.event, kind)]


def outbox(rig: Rig, kind: str) -> list[tuple[str | None, str, list[str]]]:
    state = rig.journal.state
    return [(p.revision, p.status, [*p.codes]) for p in state.outbox.values() if p.kind == kind]


# -- #4: a restore whose artifacts cannot be had -------------------------------------------


def test_an_offline_restore_of_a_damaged_release_falls_back_to_the_known_good() -> None:
    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        await converged_on(rig, B, 2)
        before = rig.journal.state.position
        rig.cloud.online = False
        damaged = B.artifacts[0].digest  # the cached blob is gone and cannot be fetched
        rig.artifacts.missing, rig.artifacts.failing = {damaged}, {damaged}
        rig = await restarted(rig)
        verdict = await rig.reconcile()
        assert (verdict.kind, [str(c) for c in verdict.codes]) == (
            "settled",
            [LOST, "ROLLBACK_APPLIED"],
        )
        assert len(events(rig, ev.ArtifactFailed, before)) == 1  # tried once, not 32 times
        (failed,) = events(rig, ev.ApplyFailed, before)
        assert (failed.release_key, failed.code) == (B.key, ReasonCode.ARTIFACT_DOWNLOAD_FAILED)
        (back,) = events(rig, ev.RollbackApplied, before)
        assert (back.failed_key, back.target_key) == (B.key, A.key)
        assert rig.runtime.status().release == A.key == rig.journal.state.running_key
        assert outbox(rig, "reconcile") == [("dsr_2", "rolled_back", [LOST, "ROLLBACK_APPLIED"])]
        assert not rig.agent.drifted()
        position = rig.journal.state.position
        for _ in range(3):  # later passes: nothing more to do, nothing journaled
            await rig.reconcile()
        assert rig.journal.state.position == position
        rig.cloud.online = True
        assert await rig.deliver()
        assert rig.cloud.reconcile_reports()[-1] == (
            "dsr_2",
            "rolled_back",
            [LOST, "ROLLBACK_APPLIED"],
        )

    run(scenario)


def test_with_no_known_good_at_hand_a_lost_restore_is_reported_and_retried_by_polls() -> None:
    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        rig.cloud.online = False
        damaged = A.artifacts[0].digest
        rig.artifacts.missing, rig.artifacts.failing = {damaged}, {damaged}
        rig = await restarted(rig)
        before = rig.journal.state.position
        verdict = await rig.reconcile()
        assert (verdict.kind, [str(c) for c in verdict.codes]) == ("failed", [LOST])
        assert len(events(rig, ev.ArtifactFailed, before)) == 1
        assert outbox(rig, "reconcile") == [("dsr_1", "failed", [LOST])]
        assert rig.journal.state.running_key == A.key  # not condemned: still to be restored
        assert not rig.agent.drifted()  # retried by the next poll, not every drift check
        position = rig.journal.state.position
        await rig.reconcile()  # a poll: one more try, one more ArtifactFailed, no report
        assert types(rig, position) == ["ArtifactFailed"]
        rig.artifacts.failing = set()  # the cloud is back
        assert (await rig.reconcile()).kind == "converged"
        assert rig.runtime.status().release == A.key
        assert outbox(rig, "reconcile")[-1] == ("dsr_1", "converged", [])

    run(scenario)


# -- #6: a stack stopped outside muto ------------------------------------------------------


def test_a_stack_stopped_outside_muto_is_restored_at_the_next_drift_check() -> None:
    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        rig.runtime.halt()  # `podman rm -f`: the runtime still names A, not alive
        assert not rig.agent.drifted()  # a moment's "not alive" is no drift yet
        rig.agent.report_health()
        assert outbox(rig, "health")[-1] == (None, "unhealthy", ["STACK_NOT_RUNNING"])
        rig.clock.advance(5)
        assert rig.agent.drifted()
        before = rig.journal.state.position
        assert (await rig.reconcile()).kind == "converged"
        assert rig.runtime.applied == [A.key, A.key] and rig.runtime.status().alive
        assert types(rig, before)[:4] == [
            "ArtifactsVerified",
            "DriftDetected",
            "ApplyStarted",
            "ApplySucceeded",
        ]
        (drift,) = events(rig, ev.DriftDetected, before)
        assert (drift.expected, drift.observed) == (A.key, None)
        assert "ReadinessPassed" in types(rig, before)
        rig.agent.report_health()
        assert outbox(rig, "health")[-1] == (None, "healthy", [])
        assert not rig.agent.drifted()

    run(scenario)


def test_a_stack_that_cannot_be_restored_rolls_back_with_reason_codes() -> None:
    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        await converged_on(rig, B, 2)
        rig.runtime.behaviours = {B.key: failing(apply=True)}
        rig.runtime.halt()
        rig.agent.drifted()
        rig.clock.advance(5)
        assert rig.agent.drifted()
        await rig.reconcile()
        await rig.deliver()
        assert rig.runtime.status().release == A.key and rig.runtime.status().alive
        assert rig.cloud.reconcile_reports()[-1] == (
            "dsr_2",
            "rolled_back",
            ["APPLY_FAILED", "ROLLBACK_APPLIED"],
        )

    run(scenario)


# -- #3: a crash loop while the pass waits on the network ----------------------------------


class SlowCloud(FakeCloud):
    """A cloud whose answers take `delay` seconds (a slow uplink)."""

    delay: float = 0.0

    async def latest(self, etag: str | None) -> Any:
        await asyncio.sleep(self.delay)
        return await super().latest(etag)


def healths(rig: Rig, after: int = 0) -> list[tuple[str, list[str]]]:
    """The health reports the agent queued (the courier may have delivered them)."""
    queued = events(rig, ev.ReportQueued, after)
    return [(e.status, [*e.codes]) for e in queued if e.kind == "health"]


@pytest.mark.parametrize("busy", ["download", "download while blocked", "fetch"])
def test_a_crash_loop_is_rolled_back_and_reported_while_the_pass_waits(busy: str) -> None:
    """B passes readiness, then restarts every 1.5 s (the crash-loop rule trips 4.5 s
    after the apply), while the pass for C downloads for a minute (gates open, or
    blocked: downloads go on then) or its fetch hangs. The watcher does not wait."""

    async def scenario() -> None:
        clock = SystemClock()
        now = datetime.now(UTC)
        cloud = SlowCloud()
        rig = make_rig(
            cloud=cloud,
            clock=clock,  # type: ignore[arg-type]
            behaviours={B.key: SimulatedBehaviour(restart_every_sec=1.5)},
            time_scale=1.0,
            poll_s=3600,
            drift_check_s=0.05,
            health_every_s=0.5,
        )

        def desire(target: Any, sequence: int) -> None:
            cloud.serve(rig.signers.bundle(target, sequence, issued=now - timedelta(hours=1)))
            rig.agent.trigger("test")

        def running(key: str) -> bool:
            return rig.journal.state.running_key == key

        await rig.agent.start()
        try:
            desire(A, 1)
            await until(lambda: running(A.key), "A", in_thread=False)
            desire(B, 2)
            await until(lambda: running(B.key), "B", in_thread=False)
            applied = clock.monotonic()
            rig.artifacts.missing, rig.artifacts.download_sec = {C.artifacts[0].digest}, 60
            if busy == "download while blocked":
                rig.vehicle.state = MOVING
            if busy == "fetch":
                cloud.delay = 60
            desire(C, 3)
            waiting = "fetching" if busy == "fetch" else "caching"
            await until(lambda: rig.agent.phase.value == waiting, busy, in_thread=False)
            assert clock.monotonic() - applied < 4  # busy before B's crash loop trips
            before = rig.journal.state.position
            await until(lambda: running(A.key), "the rollback", timeout=15, in_thread=False)
            assert "CrashLoopDetected" in types(rig, before)
            assert rig.runtime.status().release == A.key
            await until(
                lambda: ("healthy", []) in healths(rig, before), "healthy again", in_thread=False
            )
            assert ("unhealthy", ["CRASH_LOOP_DETECTED"]) in healths(rig, before)
            assert not rig.agent.idle  # all of it while the pass is still waiting
            if busy != "fetch":
                assert C.artifacts[0].digest in rig.artifacts.missing  # still downloading
            during = rig.journal.state.position
            await asyncio.sleep(1.2)  # periodic health reports keep coming meanwhile
            assert len(healths(rig, during)) >= 2
            assert not rig.agent.idle and C.key not in rig.runtime.applied
        finally:
            await rig.agent.stop()  # mid-download or mid-fetch: a prompt, clean stop
        # Judged under dsr_2, the revision B runs under, not dsr_3 (C never ran here).
        reports = rig.cloud.reconcile_reports()
        assert ("dsr_2", "rolled_back", ["CRASH_LOOP_DETECTED", "ROLLBACK_APPLIED"]) in reports
        assert not [r for r in reports if r[0] == "dsr_3" and r[1] == "rolled_back"]

    run(scenario)
