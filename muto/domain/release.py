"""StackRelease: an immutable, signed description of one version of a ROS 2 stack."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import msgspec

from muto.domain.wire import ROS_NAME_PATTERN, Digest, Identifier, Wire


class ArtifactType(StrEnum):
    OCI_IMAGE = "oci_image"
    PYTHON_WHEEL = "python_wheel"
    ARCHIVE = "archive"  # a tar.gz workspace overlay (process / ros2_launch runtimes)
    FILE = "file"


class Artifact(Wire, frozen=True, kw_only=True):
    type: ArtifactType
    ref: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    digest: Annotated[str, Digest]
    size: Annotated[int, msgspec.Meta(ge=0)]
    # The PEP 503 distribution name of a python_wheel artifact (strict, never inferred
    # at uninstall time); None for other artifact types.
    dist_name: str | None = None


class Compatibility(Wire, frozen=True, kw_only=True):
    vehicle_models: list[str] = []
    os: list[str] = []
    ros_distro: list[str] = []


class ResourceProfile(Wire, frozen=True, kw_only=True):
    disk_mb_min: Annotated[int, msgspec.Meta(ge=0)] = 0


# A ROS 2 graph name: a node name, or a fully qualified topic or namespace ("/nav/scan").
RosName = Annotated[str, msgspec.Meta(pattern=ROS_NAME_PATTERN)]


class RosNode(Wire, frozen=True, kw_only=True):
    name: RosName
    namespace: RosName = "/"

    @property
    def fqn(self) -> str:
        return f"{self.namespace.rstrip('/')}/{self.name}"


class RosTopic(Wire, frozen=True, kw_only=True):
    name: RosName  # fully qualified
    # Published at least this often, measured over the last `window_sec` (0: one message).
    min_rate_hz: Annotated[float, msgspec.Meta(ge=0, le=10000)] = 0
    window_sec: Annotated[float, msgspec.Meta(gt=0, le=60)] = 2


class RosGraphHealth(Wire, frozen=True, kw_only=True):
    """What "ready" means for a ROS 2 stack, judged from the ROS graph: these nodes are
    up, these topics are published at their rate, these lifecycle nodes are ACTIVE."""

    nodes: list[RosNode] = []
    topics: list[RosTopic] = []
    lifecycle_active: list[RosNode] = []


class HealthModel(Wire, frozen=True, kw_only=True):
    readiness_timeout_sec: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 180
    # Optional command (argv) that exits 0 once the stack is ready.
    readiness_probe: list[str] | None = None
    crash_loop_restarts: Annotated[int, msgspec.Meta(ge=1)] = 3
    crash_loop_window_sec: Annotated[float, msgspec.Meta(gt=0)] = 60
    ros: RosGraphHealth | None = None


class NodeLaunch(Wire, frozen=True, kw_only=True):
    """One ROS 2 node of a `ros_nodes` release: `command` (an executable in the release
    directory or on PATH, and its arguments) started with `--ros-args` naming it."""

    name: RosName
    namespace: RosName = "/"
    command: Annotated[list[str], msgspec.Meta(min_length=1)]
    params: dict[str, str | int | float | bool] = {}
    remap: dict[str, str] = {}


class Launch(Wire, frozen=True, kw_only=True):
    """How a runtime starts the stack: a command (process), a launch file (ros2_launch),
    console entry points (python_wheel) or ROS 2 nodes (ros_nodes)."""

    command: list[str] = []
    launch_file: str | None = None
    entry_points: list[str] = []
    env: dict[str, str] = {}
    nodes: list[NodeLaunch] = []


class Security(Wire, frozen=True, kw_only=True):
    signature_ref: str | None = None


class StackRelease(Wire, frozen=True, kw_only=True):
    stack_name: Annotated[str, Identifier]
    version: Annotated[str, Identifier]
    artifacts: list[Artifact]
    compatibility: Compatibility = Compatibility()
    resource_profile: ResourceProfile = ResourceProfile()
    health_model: HealthModel = HealthModel()
    launch: Launch = Launch()
    security: Security = Security()

    @property
    def key(self) -> str:
        return release_key(self.stack_name, self.version)


def release_key(stack: str, version: str) -> str:
    return f"{stack}@{version}"
