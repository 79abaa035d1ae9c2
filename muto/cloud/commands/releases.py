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
    """A new stack@version is registered (its envelope as pushed: a signature that does
    not verify is stored but never counted, there or on a vehicle). The same
    stack@version with the same digest keeps its content: the envelope's signatures by
    keys with no valid signature on it are checked (`check`: each alone; one that fails
    refuses them all) and added (`Release.Signed`), each replacing its key's stored
    signature that `check` refuses; none new is a no-op. Another digest is a Conflict.
    Without `check` (or one that checks nothing: no release keys), every stored
    signature counts, since none can be told from a valid one.

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
        counts = None if check is None else _verifies(existing.envelope, check)
        added = existing.new_signatures(envelope, counts)
        if not added:
            return Registration(created=False)
        if check is not None:
            check(envelope, added)  # before any event: a refusal changes nothing
        existing.add_signatures(added, cause.actor, cause.correlation_id, counts)
        return Registration(created=False, added=tuple(s.keyid for s in added))

    return command


def _verifies(envelope: Envelope, check: SignatureCheck) -> Callable[[Signature], bool]:
    """Whether a signature stored on the release passes `check` alone (its key trusted,
    its signature of this payload valid). Asked only of the keys offered again, each
    stored signature verified once."""
    judged: dict[tuple[str, str], bool] = {}

    def counts(signature: Signature) -> bool:
        found = judged.get((signature.keyid, signature.sig))
        if found is None:
            try:
                check(envelope, [signature])
                found = True
            except ReasonError:
                found = False
            judged[(signature.keyid, signature.sig)] = found
        return found

    return counts


def load_release(uow: UnitOfWork, stack: str, version: str) -> Release:
    key = release_key(stack, version)
    release = uow.find(Release, Release.create_id(key))
    if release is None:
        raise NotFound(f"release {key} is not registered")
    return release
