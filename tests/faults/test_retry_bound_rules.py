"""Regression tests (in process, on the unit rig) for two bugs scenario 2 found with real
kills: an agent killed at the same step on every start must stop after a bound and stay
on its previous known good.

1. After a restart, the planner restored the old release before applying the new one;
   a kill during that restore counted against the new revision and, at the limit,
   condemned the known good itself (RETRY_LIMIT_REACHED + NO_PREVIOUS_KNOWN_GOOD, nothing
   running). Now a desired release that can be applied at once is applied directly.
2. A rollback with no target left that kept killing the agent was retried forever. Now
   the give-up settles it: `failed` with NO_PREVIOUS_KNOWN_GOOD, reported once.
"""

from __future__ import annotations

from muto.agent.journal import events as ev
from tests.unit.test_agent_reconcile import A, B, converged_on, run, started, types
from tests.unit.test_agent_support import Rig


async def restarted(rig: Rig) -> Rig:
    rig = rig.restart()
    await rig.agent.start(loop=False)
    return rig


def test_after_a_restart_the_new_release_is_applied_without_restoring_the_old_one() -> None:
    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        rig.cloud.serve(rig.signers.bundle(B, 2))
        rig = await restarted(rig)  # the runtime forgot A, as after a kill -9
        assert (await rig.reconcile()).kind == "converged"
        assert rig.runtime.applied == [B.key]

    run(scenario)


def test_a_restart_still_restores_the_running_release_when_nothing_newer_applies() -> None:
    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        rig = await restarted(rig)
        assert (await rig.reconcile()).kind == "converged"
        assert rig.runtime.applied == [A.key]
        assert "DriftDetected" in types(rig)

    run(scenario)


def test_a_rollback_with_no_target_that_keeps_dying_is_settled_as_failed() -> None:
    async def scenario() -> None:
        rig = await started()
        rig.cloud.serve(rig.signers.bundle(A, 1))
        await rig.agent.reconcile()  # fetched; A applied and converged
        at = rig.clock.now()
        gave_up = [ev.ReadinessTimedOut(at=at, release_key=A.key)]
        rig.journal.append(ev.ApplyStarted(at=at, release_key=A.key, revision="dsr_1",
                                           sequence=1, replacing=None), *gave_up)  # fmt: skip
        for _ in range(3):  # what a kill -9 at `rollback` (no target) leaves, three times
            started_rollback = ev.RollbackStarted(
                at=at, failed_key=A.key, target_key=None, causes=[]
            )
            rig.journal.append(started_rollback)
            rig = await restarted(rig)
        state = rig.journal.state
        assert state.rollback_due is None and state.in_flight is None
        assert (await rig.reconcile()).kind == "settled"
        assert await rig.deliver()
        assert rig.cloud.reconcile_reports()[-1] == (
            "dsr_1",
            "failed",
            ["READINESS_TIMEOUT", "RETRY_LIMIT_REACHED", "NO_PREVIOUS_KNOWN_GOOD"],
        )

    run(scenario)
