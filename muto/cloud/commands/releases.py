"""Commands on releases: registration (content immutable, signatures may be added), and
loading one for an assignment."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from muto.cloud.commands.cause import Cause
from muto.cloud.errors import Conflict, NotFound
from muto.cloud.writer import Command, UnitOfWork
from muto.domain.desired import Envelope, Signature
from muto.domain.errors import ReasonError
from muto.domain.model.release import Release
from muto.domain.release import StackRelease, release_key

# Raises ReasonError (VERIFY_SIGNATURE_FAILED) unless each signature signs the envelope's
# payload with a trusted key (cloud.signing.Signing.check_signatures).
SignatureCheck = Callable[[Envelope, Sequence[Signature]], None]


@dataclass(frozen=True)
class Registration:
    """What POST /releases did: registered it (`created`), added the signatures of
    the keys `added` to the release registered with this digest, or nothing."""

    created: bool
    added: tuple[str, ...] = ()


def register_release(
    release: StackRelease,
    digest: str,
    envelope: Envelope,
    cause: Cause,
    *,
    check: SignatureCheck | None = None,
    refusal: ReasonError | None = None,
) -> Command[Registration]:
    """A new stack@version is registered. The same stack@version with the same digest
    keeps its content: the envelope's signatures by keys not yet on it are checked
    (`check`: each alone; one that fails refuses them all) and added (`Release.Signed`);
    none new is a no-op. Another digest is a Conflict.

    `refusal`: why the envelope alone is not a release to register (too few valid
    signatures: Signing.open_or_refusal). It is raised unless the envelope only adds
    signatures to the release registered with its digest."""

    def command(uow: UnitOfWork) -> Registration:
        existing = uow.find(Release, Release.create_id(release.key))
        if existing is None or existing.manifest_digest != digest:
            if refusal is not None:
                raise refusal
            if existing is not None:
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
            return Registration(created=True)
        added = existing.new_signatures(envelope)
        if not added:
            return Registration(created=False)
        if check is not None:
            check(envelope, added)  # before any event: a refusal changes nothing
        existing.add_signatures(added, cause.actor, cause.correlation_id)
        return Registration(created=False, added=tuple(s.keyid for s in added))

    return command


def load_release(uow: UnitOfWork, stack: str, version: str) -> Release:
    key = release_key(stack, version)
    release = uow.find(Release, Release.create_id(key))
    if release is None:
        raise NotFound(f"release {key} is not registered")
    return release
