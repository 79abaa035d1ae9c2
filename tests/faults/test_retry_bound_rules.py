"""Regression tests (in process, on the unit rig) for two bugs scenario 2 found with real
kills: an agent killed at the same step on every start must stop after a bound and stay
on its previous known good.

1. After a restart, the planner restored the old release before applying the new one;
   a kill during that restore counted against the new revision and, at the limit,
   condemned the known good itself (RETRY_LIMIT_REACHED + NO_PREVIOUS_KNOWN_GOOD, nothing
   running). Now a desired release that can be applied at once is applied directly.
2. A rollback with no target left that kept killing the agent was retried forever. Now
   the give-up settles it: `failed` with NO_PREVIOUS_KNOWN_GOOD, reported once.
3. An agent killed on every start where nothing is in flight (fetch, verify, cache,
   right after readiness) was never counted. Now runs that die before finishing a pass
   are (`RestartLoopDetected`), and a run that finishes one resets the count.
"""

from __future__ import annotations

from muto.agent.journal import events as ev
from muto.agent.reconcile.recovery import RETRY_LIMIT
from tests.support.agent_rig import (
    MOVING,
    PARKED,
    A,
    B,
    Rig,
    converged_on,
    restarted,
    run,
    started,
    types,
)


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


async def pending_while_moving(rig: Rig) -> None:
    """Converged on A; B assigned while the vehicle moves: B is pending (blocked)."""
    await converged_on(rig, A, 1)
    rig.vehicle.state = MOVING
    rig.cloud.serve(rig.signers.bundle(B, 2))
    assert (await rig.reconcile()).kind == "blocked"
    rig.vehicle.state = PARKED


def test_runs_that_keep_dying_before_finishing_a_pass_give_the_pending_revision_up() -> None:
    async def scenario() -> None:
        rig = await started()
        await pending_while_moving(rig)
        for _ in range(RETRY_LIMIT):  # each run dies before its first pass finishes
            rig = await restarted(rig)
        assert "RestartLoopDetected" not in types(rig)
        rig = await restarted(rig)
        assert types(rig)[-2:] == ["AgentStarted", "RestartLoopDetected"]
        assert (await rig.reconcile()).kind == "settled"
        assert rig.runtime.applied == [A.key] and rig.journal.state.running_key == A.key
        assert await rig.deliver()
        assert rig.cloud.reconcile_reports()[-1] == (
            "dsr_2",
            "rolled_back",
            ["RETRY_LIMIT_REACHED", "ROLLBACK_APPLIED"],
        )
        rig = await restarted(rig)  # given up once: later starts leave it alone
        assert (await rig.reconcile()).kind == "settled"
        assert types(rig).count("RestartLoopDetected") == 1

    run(scenario)


def test_restarts_of_an_agent_that_finishes_its_passes_never_add_up() -> None:
    async def scenario() -> None:
        rig = await started()
        await pending_while_moving(rig)
        rig.vehicle.state = MOVING
        for _ in range(3 * RETRY_LIMIT):  # a depot's power cycles while the gate holds
            rig = await restarted(rig)
            assert (await rig.reconcile()).kind == "blocked"
        assert "RestartLoopDetected" not in types(rig)
        rig.vehicle.state = PARKED
        assert (await rig.reconcile()).kind == "converged"

    run(scenario)


def test_a_revision_with_a_final_outcome_is_not_given_up() -> None:
    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        for _ in range(RETRY_LIMIT + 2):
            rig = await restarted(rig)
        assert "RestartLoopDetected" not in types(rig)
        assert (await rig.reconcile()).kind == "converged"
        assert rig.journal.state.running_key == A.key

    run(scenario)
