"""Release: a registered, signed StackRelease. Its content is immutable: the manifest,
its digest and the signed payload never change. Only signatures change (`Signed`): one
is added for a key that has none on it that counts, and replaces a signature of that key
stored with it that does not verify (registration keeps the envelope as pushed, and an
envelope opens once enough of its signatures verify, whatever the rest). A key's valid
signature is never removed or replaced: a release registered with fewer signatures than
a fleet's threshold needs is completed, not re-versioned (docs/trust.md). No snapshots,
so its state keeps the typed manifest and envelope."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from muto.domain.desired import Envelope, Signature
from muto.domain.model import stable_id
from muto.domain.release import StackRelease

# Whether a signature stored on the release is its key's signature of the release's
# payload, by a key the control plane trusts (commands.releases asks the cloud's check).
# None: nothing can be verified (no release keys configured), so every stored one counts.
Counts = Callable[[Signature], bool] | None


def signatures_by_new_keys(
    on: Iterable[Signature], offered: Iterable[Signature], counts: Counts = None
) -> list[Signature]:
    """The signatures of `offered` whose key has no signature among `on` that `counts`,
    the first one per key, in the order offered. A key with a counting signature on the
    release is signed: its signature there is never replaced."""
    offered = list(offered)
    keys = {s.keyid for s in offered}  # only these keys' stored signatures are judged
    seen = {s.keyid for s in on if s.keyid in keys and (counts is None or counts(s))}
    added = []
    for signature in offered:
        if signature.keyid not in seen:
            seen.add(signature.keyid)
            added.append(signature)
    return added


def with_signatures(signatures: Iterable[Signature], added: list[Signature]) -> list[Signature]:
    """A `Signed` event applied to the signatures of an envelope: those of the added
    signatures' keys (which did not verify) give way to them, appended in order. One
    rule for the aggregate and the releases view."""
    keys = {s.keyid for s in added}
    return [*(s for s in signatures if s.keyid not in keys), *added]


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
        """The keys of its signatures, in the order they were stored (the cloud's check
        decides which verify: commands.releases)."""
        return [s.keyid for s in self.envelope.signatures]

    def new_signatures(self, offered: Envelope, counts: Counts = None) -> list[Signature]:
        """What `offered` (an envelope of this very payload) would add: its signatures
        by keys with no signature on this release that `counts`."""
        if (offered.payload_type, offered.payload) != (
            self.envelope.payload_type,
            self.envelope.payload,
        ):
            raise ValueError(f"release {self.key}: another payload's signatures")
        return signatures_by_new_keys(self.envelope.signatures, offered.signatures, counts)

    def add_signatures(
        self,
        signatures: list[Signature],
        actor: str,
        correlation_id: str,
        counts: Counts = None,
    ) -> None:
        """Add signatures by keys with no signature on it that `counts` (the caller
        verified them); each replaces its key's signatures on it, which do not count.
        Nothing to add is a no-op; a key signed on it, or twice among them, is refused."""
        if not signatures:
            return
        on = self.envelope.signatures
        if signatures_by_new_keys(on, signatures, counts) != signatures:
            raise ValueError(
                f"release {self.key}: a key signs once; its valid signature is never replaced"
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
            signatures=with_signatures(envelope.signatures, signatures),
        )
