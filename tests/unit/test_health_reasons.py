"""A health status other than healthy always says why: the agent's rule names a code for
every such status, and the wire schema refuses one without (both sides decode it)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from muto.agent.reports import health_of
from muto.agent.runtime.base import STOPPED, RuntimeStatus
from muto.domain.reasons import ReasonCode
from muto.domain.reports import HealthReport, HealthStatus
from muto.domain.wire import WireError, decode
from tests.support.agent_rig import A, B, desired_of, journal_of


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


@given(
    crash_looping=st.booleans(),
    alive=st.booleans(),
    runs=st.sampled_from([None, A.key, B.key]),
    journal_runs=st.sampled_from([None, A.key]),
    wanted=st.booleans(),
)
def test_every_status_but_healthy_carries_a_code(
    crash_looping: bool, alive: bool, runs: str | None, journal_runs: str | None, wanted: bool
) -> None:
    state = journal_of(desired_of(A) if wanted else None, journal_runs)
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
