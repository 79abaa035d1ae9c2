"""A health report that cannot be queued (a full disk) is logged once per distinct
failure, with its traceback, not every 5 s into logs on that same disk; the first that
is queued again says so."""

from __future__ import annotations

import errno
import logging

import pytest

from tests.support.agent_rig import A, converged_on, run, started


def test_a_failing_health_report_is_logged_once_per_kind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        report = rig.agent._report_health
        failures = [
            OSError(errno.ENOSPC, "No space left on device"),
            OSError(errno.ENOSPC, "No space left on device"),
            OSError(errno.ENOSPC, "No space left on device"),
            RuntimeError("something else"),
        ]

        def failing(periodic: bool) -> None:
            raise failures.pop(0)

        rig.agent._report_health = failing  # type: ignore[method-assign]
        with caplog.at_level(logging.DEBUG, logger="muto.agent"):
            for _ in range(4):
                rig.agent.report_health(periodic=True)
            rig.agent._report_health = report  # type: ignore[method-assign]
            rig.agent.report_health(periodic=True)
        said = [
            (r.levelname, r.getMessage())
            for r in caplog.records
            if r.name == "muto.agent" and "health report" in r.getMessage()
        ]
        assert said == [
            ("ERROR", "health report failed (OSError [ENOSPC])"),
            ("DEBUG", "health report failed again: [Errno 28] No space left on device"),
            ("DEBUG", "health report failed again: [Errno 28] No space left on device"),
            ("ERROR", "health report failed (RuntimeError: something else)"),
            ("INFO", "health reports are queued again"),
        ]
        assert [r.exc_info is not None for r in caplog.records if r.levelname == "ERROR"] == [
            True,
            True,
        ]

    run(scenario)
