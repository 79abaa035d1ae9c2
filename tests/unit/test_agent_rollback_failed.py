"""A rollback that does not restore the previous known good says so (ROLLBACK_FAILED),
after the failure it answered and before the restore's own cause, each code once: the
same code twice (ARTIFACT_DOWNLOAD_FAILED, ARTIFACT_DOWNLOAD_FAILED) could not be told
from a single failure. A target that failed gives its place as known good up; one refused
for want of disk did not fail, and is restored once space returns."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import msgspec
import pytest

from muto.agent.artifacts import Fetched
from muto.agent.journal.journal import fold_records
from muto.agent.reports import health_of
from muto.agent.runtime.simulated import SimulatedBehaviour
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact, StackRelease
from muto.domain.reports import HealthStatus
from tests.support.agent_rig import A, B, C, Rig, converged_on, failing, run, started, types

DISK = ReasonCode.INSUFFICIENT_DISK


@pytest.mark.parametrize(
    ("restore_fails_with", "reported"),
    [
        (
            ReasonCode.APPLY_FAILED,
            ["APPLY_FAILED", "ROLLBACK_FAILED"],  # B's apply failed, and so did A's restore
        ),
        (
            ReasonCode.ARTIFACT_DOWNLOAD_FAILED,
            ["APPLY_FAILED", "ROLLBACK_FAILED", "ARTIFACT_DOWNLOAD_FAILED"],
        ),
    ],
)
def test_a_failed_rollback_is_named_once_after_its_cause(
    restore_fails_with: ReasonCode, reported: list[str]
) -> None:
    async def scenario() -> None:
        rig = await started(behaviours={B.key: failing(apply=True)})
        await converged_on(rig, A, 1)
        apply = rig.runtime.apply

        async def restore_fails(release: StackRelease, artifacts: Mapping[str, Path]) -> None:
            if release.key == A.key:
                raise ReasonError(restore_fails_with, "the restore did not come up")
            await apply(release, artifacts)

        rig.runtime.apply = restore_fails  # type: ignore[method-assign]
        rig.cloud.serve(rig.signers.bundle(B, 2))
        await rig.reconcile()
        assert rig.runtime.status().release is None  # never half-restored
        await rig.deliver()
        assert rig.cloud.reconcile_reports()[-1] == ("dsr_2", "failed", reported)
        state = rig.journal.state  # A failed to come up: no longer known good
        assert A.key not in state.known_good and state.rollback_due is None

    run(scenario)


class FullDisk:
    """The vehicle's disk, full until `free`: A's restore is refused INSUFFICIENT_DISK,
    by its install (`apply`) or by the download of its evicted archive (`download`)."""

    def __init__(self, rig: Rig, refused_by: str) -> None:
        self.full = True
        apply, ensure = rig.runtime.apply, rig.artifacts.ensure
        ours = {a.digest for a in A.artifacts}

        async def install(release: StackRelease, artifacts: Mapping[str, Path]) -> None:
            if self.full and release.key == A.key:
                raise ReasonError(DISK, "pip install: [Errno 28] No space left on device")
            await apply(release, artifacts)

        async def download(artifact: Artifact) -> Fetched:
            if self.full and artifact.digest in ours:
                raise ReasonError(DISK, f"{artifact.ref}: no space left on device")
            return await ensure(artifact)

        if refused_by == "apply":
            rig.runtime.apply = install  # type: ignore[method-assign]
        else:
            rig.artifacts.missing |= ours  # evicted: downloaded again to restore A
            rig.artifacts.ensure = download  # type: ignore[method-assign]

    def free(self) -> None:
        self.full = False


@pytest.mark.parametrize("refused_by", ["apply", "download"])
def test_a_rollback_target_refused_for_want_of_disk_stays_known_good_and_runs_once_space_returns(
    refused_by: str,
) -> None:
    """B crash-loops; its rollback to A finds the disk full. A is not at fault: it stays
    known good, the failure is reported once, the rollback is tried again at each pass
    (once each) and A runs again once space returns (docs/agent.md, "Rollback")."""
    refused = ["CRASH_LOOP_DETECTED", "ROLLBACK_FAILED", "INSUFFICIENT_DISK"]

    async def scenario() -> None:
        rig = await started(behaviours={B.key: SimulatedBehaviour(restart_every_sec=1.0)})
        rig.runtime.time_scale = 1.0  # B restarts every second of the rig's clock
        await converged_on(rig, A, 1)
        await converged_on(rig, B, 2)
        disk = FullDisk(rig, refused_by)
        rig.clock.advance(5)
        assert rig.agent.drifted()
        before = rig.journal.state.position
        await rig.reconcile()
        assert types(rig, before).count("RollbackFailed") == 1  # not again in this pass
        state = rig.journal.state
        assert rig.runtime.status().release is None
        assert A.key in state.known_good and state.rollback_due is not None
        assert health_of(state, rig.runtime.status()) == (HealthStatus.UNHEALTHY, refused)
        await rig.deliver()
        assert rig.cloud.reconcile_reports()[-1] == ("dsr_2", "failed", refused)
        said = len(rig.cloud.reports)
        before = rig.journal.state.position
        await rig.reconcile()  # the next poll: still full, tried again, nothing new said
        assert types(rig, before).count("RollbackFailed") == 1
        await rig.deliver()
        assert len(rig.cloud.reports) == said
        disk.free()
        await rig.reconcile()
        assert rig.runtime.status().release == A.key
        state = rig.journal.state
        assert state.running is not None and state.running.key == A.key
        assert (state.rollback_due, state.halted) == (None, None)
        assert health_of(state, rig.runtime.status()) == (HealthStatus.HEALTHY, [])
        await rig.deliver()
        assert rig.cloud.reconcile_reports()[-1] == (
            "dsr_2",
            "rolled_back",
            ["CRASH_LOOP_DETECTED", "ROLLBACK_APPLIED"],
        )
        replayed = fold_records(rig.journal.records())
        assert msgspec.json.encode(replayed) == msgspec.json.encode(rig.journal.state)

    run(scenario)


def test_a_newer_desired_state_outranks_a_rollback_the_disk_refused() -> None:
    """The code review's case: B crash-loops, its rollback to A is refused for want of
    disk (due, retried each poll); the operator assigns C, which fits. C is taken and
    converges; before, every pass retried the rollback and C was never planned nor
    reported."""

    async def scenario() -> None:
        rig = await started(behaviours={B.key: SimulatedBehaviour(restart_every_sec=1.0)})
        rig.runtime.time_scale = 1.0
        await converged_on(rig, A, 1)
        await converged_on(rig, B, 2)
        ours = {a.digest for a in A.artifacts}
        ensure = rig.artifacts.ensure
        rig.artifacts.missing |= ours

        async def download(artifact: Artifact) -> Fetched:
            if artifact.digest in ours:
                raise ReasonError(DISK, "no space left on device")
            return await ensure(artifact)

        rig.artifacts.ensure = download  # type: ignore[method-assign]
        rig.clock.advance(5)
        await rig.reconcile()
        await rig.deliver()
        assert rig.cloud.reconcile_reports()[-1][:2] == ("dsr_2", "failed")
        rig.cloud.serve(rig.signers.bundle(C, 3))
        assert (await rig.reconcile()).kind == "converged"
        await rig.deliver()
        assert rig.runtime.status().release == C.key
        assert rig.journal.state.rollback_due is None
        assert rig.cloud.reconcile_reports()[-1] == ("dsr_3", "converged", [])

    run(scenario)
