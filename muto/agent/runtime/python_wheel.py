"""The `python_wheel` runtime: the LUCID components of a release, installed into a
per-release virtual environment and run as supervised console scripts."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from muto.agent.runtime.archive import cached_path, digest12
from muto.agent.runtime.components import ComponentEnvironment, Wheel
from muto.agent.runtime.dist_names import (
    normalize_dist_name,
    parse_wheel_filename,
    wheel_filename_from_ref,
)
from muto.agent.runtime.registry import InstalledComponent
from muto.agent.runtime.supervised import LaunchPlan, SupervisedRuntime, release_env
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact, ArtifactType, StackRelease


class PythonWheelRuntime(SupervisedRuntime):
    """Installs the release's `python_wheel` artifacts (`pip install --no-index
    --no-deps`: every dependency must itself be an artifact) into
    `workdir/releases/<stack>@<version>-<digest12>/venv` and supervises each
    `release.launch.entry_points` console script from that venv.

    A release's environment is built once and reused: applying it again, or rolling
    back to it while its directory is kept, installs nothing (same digests).
    """

    name: str = "python_wheel"

    def __init__(
        self,
        workdir: Path,
        *,
        python: str = sys.executable,
        agent_pip: bool | None = None,
        install_timeout_sec: float = 600.0,
        **options: Any,
    ) -> None:
        super().__init__(workdir, **options)
        self.python = python
        self.agent_pip = agent_pip
        self.install_timeout_sec = install_timeout_sec

    def components(self) -> dict[str, InstalledComponent]:
        """The components of the running release, keyed by normalised dist_name."""
        directory = self.running_directory()
        return ComponentEnvironment(directory).installed() if directory else {}

    async def _prepare(self, release: StackRelease, artifacts: Mapping[str, Path]) -> LaunchPlan:
        wheels = release_wheels(release, artifacts)
        if not release.launch.entry_points:
            raise ReasonError(ReasonCode.APPLY_FAILED, f"{release.key}: no launch.entry_points")
        combined = hashlib.sha256(" ".join(sorted(w.digest for w in wheels)).encode())
        directory = self.releases_dir / f"{release.key}-{digest12(combined.hexdigest())}"
        environment = ComponentEnvironment(
            directory,
            python=self.python,
            agent_pip=self.agent_pip,
            timeout_sec=self.install_timeout_sec,
        )
        await environment.sync(wheels)
        commands = []
        for entry_point in release.launch.entry_points:
            script = environment.bin_dir / entry_point
            if "/" in entry_point or not script.is_file():
                raise ReasonError(
                    ReasonCode.APPLY_FAILED, f"{release.key}: no console script {entry_point!r}"
                )
            commands.append([str(script)])
        env = release_env(release, directory)
        env["VIRTUAL_ENV"] = str(environment.venv)
        env["PATH"] = os.pathsep.join([str(environment.bin_dir), env.get("PATH", os.defpath)])
        return LaunchPlan(directory, commands, env)


def release_wheels(release: StackRelease, artifacts: Mapping[str, Path]) -> list[Wheel]:
    """The release's wheels, each with a strict dist_name. ReasonError(APPLY_FAILED) when
    there are none, one is missing from the cache, or two name the same distribution."""
    wheels = [
        wheel_of(release, a, cached_path(release, a, artifacts))
        for a in release.artifacts
        if a.type == ArtifactType.PYTHON_WHEEL
    ]
    if not wheels:
        raise ReasonError(ReasonCode.APPLY_FAILED, f"{release.key}: no python_wheel artifact")
    names = [w.dist_name for w in wheels]
    if len(set(names)) != len(names):
        raise ReasonError(ReasonCode.APPLY_FAILED, f"{release.key}: duplicate dist_name")
    return wheels


def wheel_of(release: StackRelease, artifact: Artifact, path: Path) -> Wheel:
    """The declared dist_name wins but must agree with the wheel's own file name: an
    uninstall later removes exactly what the registry recorded."""
    filename = wheel_filename_from_ref(artifact.ref) or (
        path.name if path.name.endswith(".whl") else None
    )
    if filename is None:
        raise ReasonError(
            ReasonCode.APPLY_FAILED, f"{release.key}: {artifact.ref!r} names no wheel file"
        )
    from_file, version = parse_wheel_filename(filename)
    dist_name = normalize_dist_name(artifact.dist_name) if artifact.dist_name else from_file
    if dist_name != from_file:
        raise ReasonError(
            ReasonCode.APPLY_FAILED,
            f"{release.key}: dist_name {artifact.dist_name!r} but the wheel is {from_file!r}",
        )
    return Wheel(
        path=path, filename=filename, dist_name=dist_name, version=version, digest=artifact.digest
    )
