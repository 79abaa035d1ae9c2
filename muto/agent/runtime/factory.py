"""build_runtime: the one table of runtime adapters, chosen by name from configuration.

The table names each adapter's module and class: only the one an agent runs is imported
(an agent on the process runtime never loads podman's, ROS 2's or the wheels' code).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from muto.agent.runtime.base import RuntimeAdapter
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode

# name -> (module, class)
RUNTIMES: dict[str, tuple[str, str]] = {
    "process": ("muto.agent.runtime.process", "ProcessRuntime"),
    "python_wheel": ("muto.agent.runtime.python_wheel", "PythonWheelRuntime"),
    "ros2_launch": ("muto.agent.runtime.ros2_launch", "Ros2LaunchRuntime"),
    "ros_nodes": ("muto.agent.runtime.ros_nodes", "RosNodesRuntime"),
    "podman": ("muto.agent.runtime.podman", "PodmanRuntime"),
    "simulated": ("muto.agent.runtime.simulated", "SimulatedRuntime"),
}

# The adapters that unpack a release archive (and so take `archive_limits`).
ARCHIVE_RUNTIMES = frozenset({"process", "ros2_launch"})


def build_runtime(name: str, workdir: Path, **options: Any) -> RuntimeAdapter:
    """The adapter called `name`, owning `workdir` alone; `options` go to its constructor.
    ReasonError(APPLY_FAILED) for a name that is not in RUNTIMES."""
    try:
        module, cls = RUNTIMES[name]
    except KeyError:
        raise ReasonError(
            ReasonCode.APPLY_FAILED, f"unknown runtime {name!r}; known: {sorted(RUNTIMES)}"
        ) from None
    adapter: RuntimeAdapter = getattr(importlib.import_module(module), cls)(workdir, **options)
    return adapter
