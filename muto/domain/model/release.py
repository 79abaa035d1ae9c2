"""Release: a registered, signed StackRelease. Its content is immutable: the manifest,
its digest and the signed payload never change. Only signatures may be added, by keys
not yet on it (`Signed`), never removed or replaced: a release registered with fewer
signatures than a fleet's threshold needs is completed, not re-versioned (docs/trust.md).
No snapshots, so its state keeps the typed manifest and envelope."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from muto.domain.desired import Envelope, Signature
from muto.domain.model import stable_id
from muto.domain.release import StackRelease


def signatures_by_new_keys(
    on: Iterable[Signature], offered: Iterable[Signature]
) -> list[Signature]:
    """The signatures of `offered` whose key is not among `on`'s, the first one per key,
    in the order offered. A key already on the release counts as signed, whatever its
    signature there: a signature is added, never replaced."""
    seen = {s.keyid for s in on}
    added = []
    for signature in offered:
        if signature.keyid not in seen:
            seen.add(signature.keyid)
            added.append(signature)
    return added


class Release(Aggregate):
    @staticmethod
    def create_id(key: str, **_: Any) -> UUID:
        return stable_id("release", key)

    @event("Registered")
    def __init__(
        self,
        key: str,
        manifest_digest: str,
        manifest: StackRelease,
        envelope: Envelope,
        actor: str,
        correlation_id: str,
    ) -> None:
        self.key = key
        self.manifest_digest = manifest_digest
        self.manifest = manifest
        self.envelope = envelope

    @property
    def keyids(self) -> list[str]:
        """The keys that signed it, in the order their signatures were stored."""
        return [s.keyid for s in self.envelope.signatures]

    def new_signatures(self, offered: Envelope) -> list[Signature]:
        """What `offered` (an envelope of this very payload) would add: its signatures
        by keys not yet on this release."""
        if (offered.payload_type, offered.payload) != (
            self.envelope.payload_type,
            self.envelope.payload,
        ):
            raise ValueError(f"release {self.key}: another payload's signatures")
        return signatures_by_new_keys(self.envelope.signatures, offered.signatures)

    def add_signatures(self, signatures: list[Signature], actor: str, correlation_id: str) -> None:
        """Add signatures by keys not yet on it (the caller verified them). Nothing to
        add is a no-op; a key already on it, or twice among them, is refused."""
        if not signatures:
            return
        if signatures_by_new_keys(self.envelope.signatures, signatures) != signatures:
            raise ValueError(
                f"release {self.key}: a key signs once; its signature is never replaced"
            )
        self._signed(
            key=self.key,
            manifest_digest=self.manifest_digest,
            signatures=signatures,
            actor=actor,
            correlation_id=correlation_id,
        )

    @event("Signed")
    def _signed(
        self,
        key: str,
        manifest_digest: str,
        signatures: list[Signature],
        actor: str,
        correlation_id: str,
    ) -> None:
        envelope = self.envelope
        self.envelope = Envelope(
            payload_type=envelope.payload_type,
            payload=envelope.payload,
            signatures=[*envelope.signatures, *signatures],
        )
