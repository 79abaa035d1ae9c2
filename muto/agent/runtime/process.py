"""The `process` runtime: a tar.gz workspace overlay plus a command to run in it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from muto.agent.runtime.archive import extract_release
from muto.agent.runtime.archive_rules import ArchiveLimits
from muto.agent.runtime.supervised import LaunchPlan, SupervisedRuntime, release_env
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import StackRelease


class ProcessRuntime(SupervisedRuntime):
    """Extracts the release's `archive` artifact (safely, atomically) into
    `workdir/releases/<stack>@<version>-<digest12>/` and runs `release.launch.command`
    there, supervised: restarted on exit, restarts counted for the crash-loop rule."""

    name: str = "process"

    def __init__(
        self, workdir: Path, *, archive_limits: ArchiveLimits | None = None, **options: Any
    ) -> None:
        super().__init__(workdir, **options)
        self.archive_limits = archive_limits or ArchiveLimits()

    async def _prepare(self, release: StackRelease, artifacts: Mapping[str, Path]) -> LaunchPlan:
        if not release.launch.command:
            raise ReasonError(ReasonCode.APPLY_FAILED, f"{release.key}: launch.command is empty")
        directory = await extract_release(
            release, artifacts, self.releases_dir, self.archive_limits
        )
        return LaunchPlan(
            directory, [list(release.launch.command)], release_env(release, directory)
        )
