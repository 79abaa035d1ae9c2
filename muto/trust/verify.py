"""Vehicle-side verification of a desired-state bundle: offline, pure, never writes.

Order matters only when several things are wrong at once: signatures and the release
binding first (nothing unsigned is believed), then vehicle, freshness, clock, expiry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from muto.domain.desired import DesiredStateBundle, DesiredStateDocument
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import StackRelease
from muto.trust.config import TrustConfig, TrustedState
from muto.trust.desired_state import open_desired_state
from muto.trust.releases import open_release


@dataclass(frozen=True)
class VerifiedDesiredState:
    document: DesiredStateDocument
    release: StackRelease | None  # None: the document says "run nothing"
    release_digest: str | None
    document_digest: str


class AuthenticDocumentRejected(ReasonError):
    """A rejection of a document whose own signature held: it carries the document, so
    that the agent can tell what the rejection is news about (its revision, a hold on an
    untrusted clock) without opening the signature again."""

    def __init__(self, cause: ReasonError, document: DesiredStateDocument, digest: str) -> None:
        super().__init__(cause.code, cause.detail)
        self.document = document
        self.document_digest = digest


def verify_bundle(
    bundle: DesiredStateBundle,
    config: TrustConfig,
    trusted: TrustedState,
    vehicle_id: str,
    now: datetime,
    *,
    clock_trusted: bool = True,
) -> VerifiedDesiredState:
    """Raise ReasonError, or return what `TrustStore.accept` may record. `now` must be
    timezone-aware; `clock_trusted` is the agent's judgement of its own clock."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    document, document_digest = open_desired_state(bundle.desired_state, config.control_plane_keys)
    try:
        release: StackRelease | None = None
        release_digest: str | None = None
        if bundle.release is not None:
            release, release_digest = open_release(bundle.release, config.release_keys)
        check_binding(document, release, release_digest)
        if document.vehicle_id != vehicle_id:
            raise ReasonError(
                ReasonCode.WRONG_VEHICLE, f"for {document.vehicle_id}, this is {vehicle_id}"
            )
        check_fresh(document, document_digest, trusted)
        if not clock_trusted:
            raise ReasonError(
                ReasonCode.UNTRUSTED_CLOCK, "cannot judge expiry without trusted time"
            )
        check_not_expired(document, now)
    except ReasonError as exc:
        raise AuthenticDocumentRejected(exc, document, document_digest) from exc
    return VerifiedDesiredState(document, release, release_digest, document_digest)


def check_binding(
    document: DesiredStateDocument, release: StackRelease | None, digest: str | None
) -> None:
    """Mix-and-match: the document must name exactly this release, by digest; a
    "run nothing" document (no stack) comes with no release, and only it."""
    stack = document.stack
    if stack is None or release is None:
        if stack is not None or release is not None:
            said = "nothing" if stack is None else f"{stack.name}@{stack.version}"
            carried = "no release" if release is None else release.key
            raise ReasonError(
                ReasonCode.VERIFY_SIGNATURE_FAILED,
                f"desired state names {said}, bundle carries {carried}",
            )
        return
    if (stack.name, stack.version) != (release.stack_name, release.version):
        raise ReasonError(
            ReasonCode.VERIFY_SIGNATURE_FAILED,
            f"desired state names {stack.name}@{stack.version}, bundle carries {release.key}",
        )
    if stack.manifest_digest != digest:
        raise ReasonError(
            ReasonCode.VERIFY_SIGNATURE_FAILED,
            f"desired state pins {stack.manifest_digest}, release is {digest}",
        )


def check_fresh(document: DesiredStateDocument, digest: str, trusted: TrustedState) -> None:
    """Rollback/replay: lower sequences never pass; an equal one only if identical."""
    if document.sequence < trusted.sequence or (
        document.sequence == trusted.sequence and digest != trusted.document_digest
    ):
        raise ReasonError(
            ReasonCode.STALE_REVISION,
            f"sequence {document.sequence}, already accepted {trusted.sequence}",
        )


def check_not_expired(document: DesiredStateDocument, now: datetime) -> None:
    """Freeze: a document stops being valid at expires_at, measured on trusted time."""
    if document.expires_at.tzinfo is None:
        raise ReasonError(ReasonCode.VERIFY_SIGNATURE_FAILED, "expiresAt has no time zone")
    if now >= document.expires_at:
        raise ReasonError(
            ReasonCode.DESIRED_STATE_EXPIRED, f"expired {document.expires_at.isoformat()}"
        )
