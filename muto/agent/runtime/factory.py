"""build_runtime: the one table of runtime adapters, chosen by name from configuration."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from muto.agent.runtime.base import RuntimeAdapter
from muto.agent.runtime.podman import PodmanRuntime
from muto.agent.runtime.process import ProcessRuntime
from muto.agent.runtime.python_wheel import PythonWheelRuntime
from muto.agent.runtime.ros2_launch import Ros2LaunchRuntime
from muto.agent.runtime.ros_nodes import RosNodesRuntime
from muto.agent.runtime.simulated import SimulatedRuntime
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode

RUNTIMES: dict[str, Callable[..., RuntimeAdapter]] = {
    "process": ProcessRuntime,
    "python_wheel": PythonWheelRuntime,
    "ros2_launch": Ros2LaunchRuntime,
    "ros_nodes": RosNodesRuntime,
    "podman": PodmanRuntime,
    "simulated": SimulatedRuntime,
}

# The adapters that unpack a release archive (and so take `archive_limits`).
ARCHIVE_RUNTIMES = frozenset({"process", "ros2_launch"})


def build_runtime(name: str, workdir: Path, **options: Any) -> RuntimeAdapter:
    """The adapter called `name`, owning `workdir` alone; `options` go to its constructor.
    ReasonError(APPLY_FAILED) for a name that is not in RUNTIMES."""
    try:
        factory = RUNTIMES[name]
    except KeyError:
        raise ReasonError(
            ReasonCode.APPLY_FAILED, f"unknown runtime {name!r}; known: {sorted(RUNTIMES)}"
        ) from None
    return factory(workdir, **options)
