"""Publishing a release key rotation: appended to the fleet's chain (ReleaseKeys), which
every vehicle then gets in its desired-state bundle (docs/trust.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from muto.cloud.commands.cause import Cause
from muto.cloud.errors import Conflict
from muto.cloud.writer import Command, UnitOfWork
from muto.domain.desired import Envelope
from muto.domain.errors import ReasonError
from muto.domain.model.release_keys import ReleaseKeys
from muto.domain.reasons import ReasonCode
from muto.trust.rotation import KeyRotation

# Raises ReasonError unless the rotation follows the published chain (oldest first):
# signed by the keys in force before it; Conflict with no release keys configured to
# check it against (cloud.signing.Signing.check_rotation).
ChainCheck = Callable[[Envelope, Sequence[Envelope]], None]


@dataclass(frozen=True)
class Publication:
    """What POST /trust/key-rotations did: published it (`created`), or nothing (the
    same rotation was published already)."""

    version: int
    created: bool


def publish_key_rotation(
    rotation: KeyRotation, envelope: Envelope, cause: Cause, check: ChainCheck
) -> Command[Publication]:
    """`rotation` is what `envelope` says (read and checked against its own keys by the
    caller). Decided on the chain as stored, inside the write: two publications at once
    are ordered by the store, the second decided again on the first's chain.

    The same rotation again (its payload; the signatures may differ) changes nothing.
    Another payload under a published version is a Conflict; a version below the last
    published one is STALE_REVISION naming both; one that does not follow the chain is
    refused by `check` (VERIFY_SIGNATURE_FAILED), and so is any other while the cloud
    has no release keys to check it against (Conflict)."""

    def command(uow: UnitOfWork) -> Publication:
        chain = uow.find(ReleaseKeys, ReleaseKeys.create_id())
        published = [] if chain is None else chain.rotations
        version = rotation.version
        if chain is not None:
            same = chain.published(version)
            if same is not None:
                if same.payload == envelope.payload:
                    return Publication(version, created=False)
                raise Conflict(
                    f"key set version {version} is already published, with other keys",
                    {"version": version},
                )
            last = chain.versions[-1]
            if version < last:
                raise ReasonError(
                    ReasonCode.STALE_REVISION,
                    f"key set version {version} is below the last published version {last}",
                )
        check(envelope, published)  # before any event: a refusal changes nothing
        key_ids = sorted(rotation.release_keys.trusted())
        threshold = rotation.release_keys.threshold
        if chain is None:
            uow.add(
                ReleaseKeys(
                    version=version,
                    envelope=envelope,
                    key_ids=key_ids,
                    threshold=threshold,
                    actor=cause.actor,
                    correlation_id=cause.correlation_id,
                )
            )
        else:
            chain.rotate(version, envelope, key_ids, threshold, cause.actor, cause.correlation_id)
        return Publication(version, created=True)

    return command
