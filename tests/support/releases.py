"""The one builder of the releases tests publish, assign and run, and of their signatures.

A release's artifacts come in three kinds here: a placeholder that is never downloaded
(control-plane tests, simulated agents), an archive made on disk and, when a server is
given, served over HTTP (real runtimes and agents), or any artifact the caller made (wheels,
images). `signed` wraps a release in the DSSE envelope `muto release` makes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from muto.cloud.commands import Cause, register_release
from muto.cloud.commands.releases import Registration
from muto.cloud.writer import Command
from muto.domain.desired import Envelope, StackRef
from muto.domain.release import (
    Artifact,
    ArtifactType,
    Compatibility,
    HealthModel,
    Launch,
    ResourceProfile,
    StackRelease,
)
from muto.domain.wire import to_builtins
from muto.trust.keys import Signer
from muto.trust.releases import manifest_digest, sign_release
from tests.support.artifact_server import ArtifactServer
from tests.support.runtime_kit import artifact_for, make_archive
from tests.support.spine import cause


def placeholder(stack: str, version: str, *, size: int = 1) -> Artifact:
    """A file artifact nobody downloads: its own digest per release; another `size` gives
    another manifest digest for the same key."""
    digest = "sha256:" + hashlib.sha256(f"{stack}@{version}".encode()).hexdigest()
    ref = f"https://artifacts.invalid/{stack}/{version}/stack.tar.gz"
    return Artifact(type=ArtifactType.FILE, ref=ref, digest=digest, size=size)


def archive(
    tmp: Path,
    stack: str,
    version: str,
    files: dict[str, str],
    *,
    server: ArtifactServer | None = None,
) -> tuple[Artifact, Path]:
    """A tar.gz of `files` written under `tmp`, served by `server` when given (its URL is
    the ref, else the file name); returns the artifact and the archive's path."""
    path = make_archive(tmp / f"{stack}-{version}.tar.gz", files)
    ref = server.put(f"/{path.name}", path.read_bytes()) if server is not None else None
    return artifact_for(path, ArtifactType.ARCHIVE, ref=ref), path


def blob_release(server: ArtifactServer, tmp: Path, n: int, size: int = 300_000) -> StackRelease:
    """Release big@1.0.n: one file of `size` random bytes, served by `server`."""
    path = tmp / f"blob-{n}.bin"
    path.write_bytes(os.urandom(size))
    url = server.put(f"/{path.name}", path.read_bytes())
    return stack_release("big", f"1.0.{n}", [artifact_for(path, ArtifactType.FILE, ref=url)])


def stack_release(
    stack: str = "core",
    version: str = "1.0.0",
    artifacts: Sequence[Artifact] | None = None,
    *,
    launch: Launch | None = None,
    health: HealthModel | None = None,
    models: Sequence[str] = (),
    os: Sequence[str] = (),
    ros_distros: Sequence[str] = (),
    disk_mb_min: int = 0,
    size: int = 1,
) -> StackRelease:
    """A stack manifest; without `artifacts`, one placeholder of `size` bytes. Empty
    compatibility lists mean "any"."""
    if artifacts is None:
        artifacts = [placeholder(stack, version, size=size)]
    return StackRelease(
        stack_name=stack,
        version=version,
        artifacts=list(artifacts),
        compatibility=Compatibility(
            vehicle_models=list(models), os=list(os), ros_distro=list(ros_distros)
        ),
        resource_profile=ResourceProfile(disk_mb_min=disk_mb_min),
        health_model=health or HealthModel(),
        launch=launch or Launch(),
    )


@dataclass(frozen=True)
class SignedRelease:
    release: StackRelease
    digest: str
    envelope: Envelope

    @property
    def key(self) -> str:
        return self.release.key

    @property
    def ref(self) -> StackRef:
        return StackRef(name=self.release.stack_name, version=self.release.version)

    def body(self) -> dict[str, Any]:
        """The JSON body of POST /releases."""
        found: dict[str, Any] = to_builtins(self.envelope)
        return found

    def register(self, by: Cause | None = None) -> Command[Registration]:
        return register_release(self.release, self.digest, self.envelope, by or cause())

    def register_envelope(
        self, envelope: Envelope, by: Cause | None = None
    ) -> Command[Registration]:
        """Register this release as `envelope` signs it (more signatures, or others)."""
        return register_release(self.release, self.digest, envelope, by or cause())


def signed(release: StackRelease, *signers: Signer) -> SignedRelease:
    """`release` signed by `signers` (one fresh key when none is given)."""
    envelope = sign_release(release, list(signers) or [Signer.generate()])
    return SignedRelease(release, manifest_digest(release), envelope)


def signed_release(
    stack: str = "core",
    version: str = "1.0.0",
    *,
    models: Sequence[str] = (),
    os: Sequence[str] = (),
    ros_distros: Sequence[str] = (),
    size: int = 1,
) -> SignedRelease:
    """A placeholder release signed by a fresh key."""
    manifest = stack_release(
        stack, version, models=models, os=os, ros_distros=ros_distros, size=size
    )
    return signed(manifest)


def release_envelope(
    stack: str, version: str = "1.0.0", *, size: int = 1, models: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A signed release as `muto release` makes it, as the JSON body of POST /releases."""
    return signed_release(stack, version, models=models, size=size).body()


def signed_payload(envelope: dict[str, Any]) -> dict[str, Any]:
    """The manifest inside a POST /releases body."""
    decoded: dict[str, Any] = json.loads(base64.b64decode(envelope["payload"]))
    return decoded
