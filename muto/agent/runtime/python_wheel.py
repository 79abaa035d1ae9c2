"""The `python_wheel` runtime: the LUCID components of a release, installed into a
per-release virtual environment and run as supervised console scripts."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from muto.agent.disk import disk_full
from muto.agent.runtime.archive import cached_path, digest12
from muto.agent.runtime.components import ComponentEnvironment, Wheel
from muto.agent.runtime.dist_names import (
    normalize_dist_name,
    parse_wheel_filename,
    wheel_filename_from_ref,
    wheel_filename_in,
)
from muto.agent.runtime.file_list import (
    damage,
    file_list_path,
    list_tree,
    set_aside,
    write_file_list,
)
from muto.agent.runtime.registry import InstalledComponent
from muto.agent.runtime.supervised import LaunchPlan, SupervisedRuntime, release_env
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact, ArtifactType, StackRelease

MADE_BY = "installation"  # names the maker in what `damage` says differs

logger = logging.getLogger("muto.agent.runtime")


class PythonWheelRuntime(SupervisedRuntime):
    """Installs the release's `python_wheel` artifacts (`pip install --no-index
    --no-deps`: every dependency must itself be an artifact) into
    `workdir/releases/<stack>@<version>-<digest12>/venv` and supervises each
    `release.launch.entry_points` console script from that venv.

    A release's environment is built once and reused: applying it again, or rolling
    back to it while its directory is kept, installs nothing, as long as the directory
    still holds what the installation put there (its FileList, `<directory>.files`,
    taken once the install completed and before anything ran from it). One that does not
    (a file changed or deleted: a bad disk, a hand edit, an install cut short; or no
    list: built by an older agent) is logged, set aside and installed again from the
    cached wheels (verified against their digests by the cache); ReasonError
    (APPLY_FAILED, INSUFFICIENT_DISK) naming the damage if that fails.
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
        wheels = await asyncio.to_thread(release_wheels, release, artifacts)
        if not release.launch.entry_points:
            raise ReasonError(ReasonCode.APPLY_FAILED, f"{release.key}: no launch.entry_points")
        combined = hashlib.sha256(" ".join(sorted(w.digest for w in wheels)).encode())
        directory = self.releases_dir / f"{release.key}-{digest12(combined.hexdigest())}"
        environment = ComponentEnvironment(
            directory,
            python=self.python,
            agent_pip=self.agent_pip,
            timeout_sec=self.install_timeout_sec,
            # Marked like the stack: a venv or pip a crash left running is reaped too.
            mark={**self.ledger.environment, "MUTO_RELEASE": release.key},
        )
        await self._installed(release, environment, wheels, f"sha256:{combined.hexdigest()}")
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

    async def _installed(
        self,
        release: StackRelease,
        environment: ComponentEnvironment,
        wheels: Sequence[Wheel],
        source: str,
    ) -> None:
        """The kept environment if it is intact (nothing is run), else a new one."""
        directory = environment.root
        if not directory.is_dir():
            await install_listed(environment, wheels, source)
            return
        problem = await asyncio.to_thread(damage, directory, source, made_by=MADE_BY)
        if problem is None:
            return
        logger.warning(
            "%s: %s differs from its installation (%s): installing it again",
            release.key,
            directory,
            problem,
        )
        try:
            await asyncio.to_thread(set_aside, directory)
            await install_listed(environment, wheels, source)
        except ReasonError as exc:
            detail = (
                f"{release.key}: {directory.name} differs from its installation ({problem}):"
                f" {exc.detail}"
            )
            raise ReasonError(exc.code, detail) from None


async def install_listed(
    environment: ComponentEnvironment, wheels: Sequence[Wheel], source: str
) -> None:
    """Build the environment where none is (in place: its console scripts name the venv's
    own path, so it cannot be built elsewhere and renamed), then write the list of what it
    holds, naming `source` (the wheels' combined digest). The list is written last and
    atomically: a directory without one is never reused. On failure nothing is left."""
    directory = environment.root
    listing = file_list_path(directory)
    try:
        listing.unlink(missing_ok=True)  # one of a directory set aside or pruned
        await environment.sync(wheels)
        listed = await asyncio.to_thread(list_tree, directory, source)
        await asyncio.to_thread(write_file_list, directory, listed)
    except Exception as exc:
        await asyncio.to_thread(shutil.rmtree, directory, True)
        listing.unlink(missing_ok=True)
        if not isinstance(exc, OSError):
            raise
        code = ReasonCode.INSUFFICIENT_DISK if disk_full(exc) else ReasonCode.APPLY_FAILED
        raise ReasonError(code, f"cannot install into {directory.name}: {exc}") from None


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
    uninstall later removes exactly what the registry recorded. That file name is the
    ref's, or else (a ref such as `artifacts/sha256:<hex>`, the cached file named by its
    digest) made from the wheel's own dist-info."""
    filename = wheel_filename_from_ref(artifact.ref) or (
        path.name if path.name.endswith(".whl") else None
    )
    if filename is None:
        try:
            filename = wheel_filename_in(path)
        except ReasonError as exc:
            raise ReasonError(
                exc.code, f"{release.key}: {artifact.ref!r} names no wheel file and is {exc.detail}"
            ) from None
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
