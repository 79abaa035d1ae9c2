"""Health of a release whose ROS graph fell apart after readiness."""

from __future__ import annotations

from datetime import UTC, datetime

from muto.agent.journal.state import JournalState, Running
from muto.agent.reports import health_of
from muto.agent.runtime.base import RuntimeStatus
from muto.domain.reasons import ReasonCode
from muto.domain.reports import HealthStatus

SINCE = datetime(2026, 1, 1, tzinfo=UTC)
STATE = JournalState(
    running=Running(key="demo@1.0.0", since=SINCE, position=1, revision=None, cause="converged")
)


def status(degraded: str | None) -> RuntimeStatus:
    return RuntimeStatus(release="demo@1.0.0", alive=True, restart_count=0, crash_looping=False,
                         degraded=degraded)  # fmt: skip


def test_a_degraded_graph_is_unhealthy_with_its_reason() -> None:
    assert health_of(STATE, status("topic /demo/chatter: 0.0 Hz")) == (
        HealthStatus.UNHEALTHY,
        [ReasonCode.ROS_GRAPH_DEGRADED],
    )
    assert health_of(STATE, status(None)) == (HealthStatus.HEALTHY, [])
