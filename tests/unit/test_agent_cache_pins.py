"""What the cache pins (reconciler.kept): what runs, what is wanted or in flight, and what
a failure of any of them rolls back to; older known good may be evicted (docs/agent.md)."""

from __future__ import annotations

from muto.agent.journal.state import InFlight, RollbackDue
from muto.agent.reconcile.reconciler import kept
from muto.domain.reasons import ReasonCode
from tests.support.agent_rig import A, B, C, converged_on, desired_of, journal_of, run, started


def test_the_running_release_and_its_rollback_target_not_the_oldest_known_good() -> None:
    state = journal_of(desired_of(C), C.key, known_good=[A.key, B.key, C.key])
    assert kept(state) == {C.key, B.key}


def test_the_desired_release_and_what_its_failure_rolls_back_to() -> None:
    state = journal_of(desired_of(C), B.key, known_good=[A.key, B.key])
    assert kept(state) == {C.key, B.key, A.key}  # C fails: B; B fails: A


def test_an_operators_rollback_to_an_older_known_good() -> None:
    state = journal_of(desired_of(A), C.key, known_good=[A.key, B.key, C.key])
    assert kept(state) == {A.key, C.key, B.key}  # C's target is B, A's is C


def test_the_release_in_flight_and_the_target_of_a_rollback_due() -> None:
    in_flight = InFlight(step="apply", release_key=B.key, revision="dsr_2", sequence=2)
    state = journal_of(desired_of(B), C.key, known_good=[A.key, C.key], in_flight=in_flight)
    assert kept(state) == {B.key, C.key, A.key}
    due = RollbackDue(
        failed_key=C.key, causes=[ReasonCode.CRASH_LOOP_DETECTED], revision="dsr_3", sequence=3
    )
    halted = journal_of(desired_of(C, 3), None, known_good=[A.key, B.key], rollback_due=due)
    assert kept(halted) == {C.key, B.key}  # nothing runs: the rollback's target stays


def test_a_runtime_that_keeps_releases_is_told_what_a_rollback_may_need() -> None:
    """Each round tells it the agent's known good (its kept directories), before the
    round's restore too: after a restart the rollback target's directory was pruned."""

    async def scenario() -> None:
        rig = await started()
        told: list[list[str]] = []
        setattr(rig.runtime, "keep_releases", lambda keys: told.append(list(keys)))  # noqa: B010
        await converged_on(rig, A, 1)
        await converged_on(rig, B, 2)
        assert told and told[-1] == rig.journal.state.known_good
        assert A.key in told[-1]

    run(scenario)
