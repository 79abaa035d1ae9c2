"""A rollback that does not restore the previous known good says so (ROLLBACK_FAILED),
after the failure it answered and before the restore's own cause, each code once: the
same code twice (ARTIFACT_DOWNLOAD_FAILED, ARTIFACT_DOWNLOAD_FAILED) could not be told
from a single failure."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import StackRelease
from tests.support.agent_rig import A, B, converged_on, failing, run, started


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

    run(scenario)
