"""The `ros2_launch` runtime: `ros2 launch <launch_file>` from the extracted overlay.

It sources nothing: a real deployment sets up the ROS 2 environment (`source
/opt/ros/<distro>/setup.bash`) in the agent's service unit, and the child inherits it.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from muto.agent.runtime.archive import extract_release
from muto.agent.runtime.archive_rules import ArchiveLimits
from muto.agent.runtime.supervised import LaunchPlan, SupervisedRuntime, release_env
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import StackRelease


class Ros2LaunchRuntime(SupervisedRuntime):
    """Extracts the release's `archive` artifact like `process` and supervises
    `ros2 launch <release.launch.launch_file>` in it (the group SIGTERM on stop reaches
    `ros2 launch` and every node it started)."""

    name: str = "ros2_launch"

    def __init__(
        self,
        workdir: Path,
        *,
        ros2: str = "ros2",
        archive_limits: ArchiveLimits | None = None,
        **options: Any,
    ) -> None:
        super().__init__(workdir, **options)
        self.ros2 = ros2
        self.archive_limits = archive_limits or ArchiveLimits()

    async def _prepare(self, release: StackRelease, artifacts: Mapping[str, Path]) -> LaunchPlan:
        launch_file = release.launch.launch_file
        if not launch_file:
            raise ReasonError(ReasonCode.APPLY_FAILED, f"{release.key}: no launch.launch_file")
        directory = await extract_release(
            release, artifacts, self.releases_dir, self.archive_limits
        )
        inside = (directory / launch_file).resolve()
        if not inside.is_relative_to(directory.resolve()) or not inside.is_file():
            raise ReasonError(
                ReasonCode.APPLY_FAILED, f"{release.key}: no launch file {launch_file!r}"
            )
        env = release_env(release, directory)
        ros2 = shutil.which(self.ros2, path=env.get("PATH"))
        if ros2 is None:
            raise ReasonError(ReasonCode.APPLY_FAILED, f"{self.ros2!r} is not on PATH")
        return LaunchPlan(directory, [[ros2, "launch", launch_file]], env)
