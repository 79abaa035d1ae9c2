"""A health status other than healthy always says why: the agent's rule names a code for
every such status, and the wire schema refuses one without (both sides decode it). The
code is the true one: NOT_YET_APPLIED only while the wanted release is on its way (not
after it failed here and was stopped), and a pass that keeps failing is never "healthy"."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from muto.agent.journal.events import PassFailed
from muto.agent.journal.state import Failure, JournalState, Outcome
from muto.agent.reports import health_of
from muto.agent.runtime.base import STOPPED, RuntimeStatus
from muto.domain.reasons import ReasonCode
from muto.domain.reports import HealthReport, HealthStatus, ReconcileStatus
from muto.domain.wire import WireError, decode
from tests.support.agent_rig import T0, A, B, desired_of, journal_of

CRASHED = [ReasonCode.CRASH_LOOP_DETECTED, ReasonCode.NO_PREVIOUS_KNOWN_GOOD]
UNWRITABLE = PassFailed(
    at=T0, code=ReasonCode.AGENT_ERROR, error="PermissionError [EPERM]", detail="x"
)
RUNS_A = RuntimeStatus(release=A.key, alive=True, restart_count=0, crash_looping=False)


def failed_here(codes: list[ReasonCode], sequence: int = 2, reported: bool = True) -> JournalState:
    """The journal after A failed under dsr_<sequence> with `codes` and was stopped."""
    failure = Failure(
        revision=f"dsr_{sequence}", sequence=sequence, status=ReconcileStatus.FAILED, codes=codes
    )
    outcome = Outcome(
        revision=f"dsr_{sequence}", sequence=None, status=ReconcileStatus.FAILED, codes=codes
    )
    return journal_of(
        desired_of(A),
        failed={A.key: failure},
        reported={f"dsr_{sequence}": outcome} if reported else {},
    )


def test_a_stack_that_is_not_running_is_unhealthy_with_its_code() -> None:
    state = journal_of(desired_of(A), A.key)
    assert health_of(state, STOPPED) == (HealthStatus.UNHEALTHY, [ReasonCode.STACK_NOT_RUNNING])
    dead = RuntimeStatus(release=A.key, alive=False, restart_count=1, crash_looping=False)
    assert health_of(state, dead) == (HealthStatus.UNHEALTHY, [ReasonCode.STACK_NOT_RUNNING])


def test_wanted_but_nothing_running_yet_is_degraded_with_its_code() -> None:
    assert health_of(journal_of(desired_of(B)), STOPPED) == (
        HealthStatus.DEGRADED,
        [ReasonCode.NOT_YET_APPLIED],
    )


def test_a_release_that_failed_and_was_stopped_is_not_called_not_yet_applied() -> None:
    """Review #12: failed CRASH_LOOP_DETECTED + NO_PREVIOUS_KNOWN_GOOD, nothing running:
    health said degraded NOT_YET_APPLIED. It says unhealthy, with the failure's codes."""
    state = failed_here(CRASHED)
    assert health_of(state, STOPPED) == (HealthStatus.UNHEALTHY, CRASHED)
    # The failure recorded, its report not yet queued (the planner queues it next): the same.
    assert health_of(failed_here(CRASHED, reported=False), STOPPED) == (
        HealthStatus.UNHEALTHY,
        CRASHED,
    )


def test_a_rejected_release_with_nothing_running_says_why() -> None:
    rejected = Outcome(
        revision="dsr_2", sequence=2, status=ReconcileStatus.REJECTED,
        codes=[ReasonCode.INCOMPATIBLE_OS],
    )  # fmt: skip
    state = journal_of(desired_of(A), unreported=rejected)
    assert health_of(state, STOPPED) == (HealthStatus.UNHEALTHY, [ReasonCode.INCOMPATIBLE_OS])


def test_a_newer_sequence_that_asks_for_a_failed_release_again_is_not_yet_applied() -> None:
    state = failed_here(CRASHED, sequence=1, reported=False)  # desired_of(A) is sequence 2
    assert health_of(state, STOPPED) == (HealthStatus.DEGRADED, [ReasonCode.NOT_YET_APPLIED])


def test_a_desired_state_that_says_run_nothing_is_healthy_when_nothing_runs() -> None:
    nothing = msgspec.structs.replace(desired_of(A), release=None)
    assert health_of(journal_of(nothing), STOPPED) == (HealthStatus.HEALTHY, [])


def test_passes_that_keep_failing_are_never_healthy() -> None:
    """Review #7/#8: every pass died (a damaged trust store, a data dir that takes no new
    file) and health said healthy. The journaled failure's code is carried until a pass
    completes, beside whatever the stack's health says."""
    code = ReasonCode.AGENT_ERROR
    nothing_yet = journal_of(None, pass_failed=UNWRITABLE)
    assert health_of(nothing_yet, STOPPED) == (HealthStatus.DEGRADED, [code])
    running = journal_of(desired_of(A), A.key, pass_failed=UNWRITABLE)
    assert health_of(running, RUNS_A) == (HealthStatus.DEGRADED, [code])
    assert health_of(running, STOPPED) == (
        HealthStatus.UNHEALTHY,
        [ReasonCode.STACK_NOT_RUNNING, code],
    )
    wanted = journal_of(desired_of(B), pass_failed=UNWRITABLE)
    assert health_of(wanted, STOPPED) == (
        HealthStatus.DEGRADED,
        [ReasonCode.NOT_YET_APPLIED, code],
    )


@given(
    crash_looping=st.booleans(),
    alive=st.booleans(),
    runs=st.sampled_from([None, A.key, B.key]),
    journal_runs=st.sampled_from([None, A.key]),
    wanted=st.booleans(),
    failed=st.sampled_from([None, "reported", "unreported", "older"]),
    failing=st.booleans(),
)
def test_every_status_but_healthy_carries_a_code(
    crash_looping: bool,
    alive: bool,
    runs: str | None,
    journal_runs: str | None,
    wanted: bool,
    failed: str | None,
    failing: bool,
) -> None:
    state = journal_of(desired_of(A) if wanted else None, journal_runs)
    if failed is not None:
        ended = failed_here(CRASHED, 1 if failed == "older" else 2, failed == "reported")
        state.failed, state.reported = ended.failed, ended.reported
    state.pass_failed = UNWRITABLE if failing else None
    runtime = RuntimeStatus(release=runs, alive=alive, restart_count=0, crash_looping=crash_looping)
    status, codes = health_of(state, runtime)
    assert (status == HealthStatus.HEALTHY) == (codes == [])


@pytest.mark.parametrize("status", ["degraded", "unhealthy"])
def test_the_wire_refuses_an_unhealthy_report_without_a_code(status: str) -> None:
    body = {
        "schema": "muto.health-report.v1",
        "reportId": "h1",
        "vehicleId": "v1",
        "status": status,
        "observedAt": datetime.now(UTC).isoformat(),
    }
    with pytest.raises(WireError, match="reasonCodes"):
        decode(msgspec.json.encode(body), HealthReport)
    body["reasonCodes"] = ["STACK_NOT_RUNNING"]
    assert decode(msgspec.json.encode(body), HealthReport).status == status
