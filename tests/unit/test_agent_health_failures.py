"""A health report that cannot be queued (a full disk) is logged once per distinct
failure, with its traceback, not every 5 s into logs on that same disk; the first that
is queued again says so."""

from __future__ import annotations

import asyncio
import errno
import logging

import pytest

from muto.agent.journal.events import ConfigApplied
from muto.domain.desired import AgentConfig
from muto.domain.report_order import ReportPlace, health_overtaken
from muto.domain.wire import convert
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


def full(*events: object) -> int:
    """A journal's append on a full disk."""
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_journal_that_refuses_writes_still_tells_the_cloud_why() -> None:
    """A full disk: the journal takes no report, so none could be queued and the fleet view
    kept the vehicle's last word before the disk filled (`healthy`). A health report now
    goes without the journal, with the refusal's code, at each health tick while it lasts;
    once the disk takes writes again the journaled reports go on and say `healthy`."""

    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        journal_append = rig.journal.append

        rig.journal.append = full  # type: ignore[method-assign]  # the disk fills
        rig.agent.report_health(periodic=True)
        rig.agent.report_health(periodic=True)
        await asyncio.gather(*rig.agent.flares)
        healths = [r for r in rig.cloud.reports if r["kind"] == "health"]
        assert [(r["status"], r["reasonCodes"]) for r in healths] == [
            ("degraded", ["INSUFFICIENT_DISK"]),
            ("degraded", ["INSUFFICIENT_DISK"]),
        ]
        assert (healths[0]["running"]["name"], healths[0]["running"]["version"]) == (
            A.stack_name,
            A.version,
        )
        rig.journal.append = journal_append  # type: ignore[method-assign]
        rig.agent.report_health(periodic=True)
        await rig.deliver()
        assert [r["status"] for r in rig.cloud.reports if r["kind"] == "health"][2:] == ["healthy"]

    run(scenario)


def test_a_pass_failure_the_journal_cannot_take_is_told_once() -> None:
    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)

        rig.journal.append = full  # type: ignore[method-assign]  # the disk fills
        for _ in range(3):
            rig.agent._failed(OSError(errno.ENOSPC, "No space left on device"))
        await asyncio.gather(*rig.agent.flares)
        healths = [r for r in rig.cloud.reports if r["kind"] == "health"]
        assert [(r["status"], r["reasonCodes"]) for r in healths] == [
            ("degraded", ["INSUFFICIENT_DISK"])
        ]

    run(scenario)


def test_no_health_report_leaves_without_telemetry() -> None:
    async def scenario() -> None:
        rig = await started()
        await converged_on(
            rig,
            A,
            1,
        )
        rig.journal.append(
            ConfigApplied(
                at=rig.clock.now(), revision="dsr_1", config=AgentConfig(telemetry_enabled=False)
            )
        )

        before = len(rig.cloud.reports)
        rig.journal.append = full  # type: ignore[method-assign]  # the disk fills
        rig.agent.report_health(periodic=True)
        rig.agent._failed(OSError(errno.ENOSPC, "No space left on device"))
        assert not rig.agent.flares
        assert len(rig.cloud.reports) == before

    run(scenario)


def test_a_health_report_sent_without_the_journal_sits_between_the_queued_ones() -> None:
    """Its number is the journal's last position: after every report queued before it,
    before the next one queued, in whichever order the two reach the cloud (a flare slowed
    by timeouts must not overwrite the `healthy` queued once the disk took writes again)."""

    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        journal_append = rig.journal.append

        rig.journal.append = full  # type: ignore[method-assign]  # the disk fills
        rig.agent.report_health(periodic=True)
        await asyncio.gather(*rig.agent.flares)
        rig.journal.append = journal_append  # type: ignore[method-assign]
        rig.agent.report_health(periodic=True)
        await rig.deliver()
        flare, queued = [r for r in rig.cloud.reports if r["kind"] == "health"][-2:]
        before, after = (convert(r["journal"], ReportPlace) for r in (flare, queued))
        assert before.number < after.number
        assert not health_overtaken(before, flare["reportId"], after, queued["reportId"])
        assert health_overtaken(after, queued["reportId"], before, flare["reportId"])

    run(scenario)
