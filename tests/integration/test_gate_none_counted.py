"""The reviewer's scenario (gate_pct.sh): the canary is held by its safety gate (the
vehicle drives) until the canary deadline, so the canary gate fails with 0 of 1
converged. The decision was stored, shown and logged as "convergedPct 100.0"; it is
stored with no percentage and every reader says that none was counted."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from muto.audit.lines import describe
from muto.audit.source import entries
from muto.cloud.controller import RolloutController
from muto.domain.reports import ReconcileStatus
from muto.fleetctl.rollouts import _pct
from tests.support.rollout_plane import ROLLOUT, Plane
from tests.support.spine import memory_settings


def test_a_canary_deferred_past_its_deadline_fails_with_none_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plane = Plane(memory_settings(tmp_path))  # started long ago: its canary deadline passed
    try:
        plane.report(plane.canary, 1, ReconcileStatus.BLOCKED)  # DENY_MOVING
        plane.cp.projector.catch_up()
        controller = RolloutController(plane.cp)
        with caplog.at_level(logging.INFO, logger="muto.controller"):
            assert controller.tick() == 1
        controller.close()
        plane.cp.projector.catch_up()
        (decision,) = plane.cp.queries.rollout(ROLLOUT).decisions
        assert decision.event == "CanaryGateFailed"
        evaluation = decision.evaluation
        assert (evaluation["converged"], evaluation["counted"]) == (0, 0)
        assert evaluation["convergedPct"] is None
        assert _pct(evaluation) == "none counted (needs 95%)"
        (told,) = [
            describe(e) for e in entries(plane.cp.log) if e.type == "Rollout.CanaryGateFailed"
        ]
        assert "0/1 converged (none counted vs 95.0%)" in told
        said = [r.getMessage() for r in caplog.records if ROLLOUT in r.getMessage()]
        assert said == [
            f"rollout {ROLLOUT} canary: fail (none counted, codes ['GATE_DEADLINE_EXCEEDED'])"
        ]
    finally:
        plane.cp.close()
