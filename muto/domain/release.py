"""StackRelease: an immutable, signed description of one version of a ROS 2 stack."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import msgspec

from muto.domain.wire import Digest, Identifier, Wire


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


class HealthModel(Wire, frozen=True, kw_only=True):
    readiness_timeout_sec: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 180
    # Optional command (argv) that exits 0 once the stack is ready.
    readiness_probe: list[str] | None = None
    crash_loop_restarts: Annotated[int, msgspec.Meta(ge=1)] = 3
    crash_loop_window_sec: Annotated[float, msgspec.Meta(gt=0)] = 60


class Launch(Wire, frozen=True, kw_only=True):
    """How a runtime starts the stack: a command (process), a launch file (ros2_launch)
    or console entry points (python_wheel)."""

    command: list[str] = []
    launch_file: str | None = None
    entry_points: list[str] = []
    env: dict[str, str] = {}


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
