"""Commands on releases: registration (immutable), and loading one for an assignment."""

from __future__ import annotations

from muto.cloud.commands.cause import Cause
from muto.cloud.errors import Conflict, NotFound
from muto.cloud.writer import Command, UnitOfWork
from muto.domain.desired import Envelope
from muto.domain.model.release import Release
from muto.domain.release import StackRelease, release_key


def register_release(
    release: StackRelease, digest: str, envelope: Envelope, cause: Cause
) -> Command[bool]:
    """Immutable: the same stack@version with the same digest is a no-op (False), with
    another digest a Conflict."""

    def command(uow: UnitOfWork) -> bool:
        existing = uow.find(Release, Release.create_id(release.key))
        if existing is not None:
            if existing.manifest_digest == digest:
                return False
            raise Conflict(
                f"release {release.key} is already registered with digest "
                f"{existing.manifest_digest}; releases are immutable",
                {"registeredDigest": existing.manifest_digest, "digest": digest},
            )
        uow.add(
            Release(
                key=release.key,
                manifest_digest=digest,
                manifest=release,
                envelope=envelope,
                actor=cause.actor,
                correlation_id=cause.correlation_id,
            )
        )
        return True

    return command


def load_release(uow: UnitOfWork, stack: str, version: str) -> Release:
    key = release_key(stack, version)
    release = uow.find(Release, Release.create_id(key))
    if release is None:
        raise NotFound(f"release {key} is not registered")
    return release
