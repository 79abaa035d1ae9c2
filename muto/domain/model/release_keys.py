"""ReleaseKeys: the fleet's published chain of release key rotations (docs/trust.md,
"Rotating release keys"). One stream for the fleet, so that two operators publishing at
once are ordered by the store's optimistic concurrency: the second is decided again on
the chain the first made. The chain only grows; a rotation, once published, is served
to every vehicle for good (one that is any number of rotations behind walks it).

Each event holds the signed KeyRotation envelope as the operator published it, and, for
the audit and the views, what it says: its key set version, the new keys' ids and their
threshold. The cloud checks the signatures before the first event (commands)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from muto.domain.desired import Envelope
from muto.domain.model import stable_id


class ReleaseKeys(Aggregate):
    @staticmethod
    def create_id(**_: Any) -> UUID:
        return stable_id("release-keys", "fleet")

    @event("Rotated")
    def __init__(
        self,
        version: int,
        envelope: Envelope,
        key_ids: list[str],
        threshold: int,
        actor: str,
        correlation_id: str,
    ) -> None:
        self.rotations: list[Envelope] = []
        self.versions: list[int] = []
        self._keep(version, envelope)

    def rotate(
        self,
        version: int,
        envelope: Envelope,
        key_ids: list[str],
        threshold: int,
        actor: str,
        correlation_id: str,
    ) -> None:
        """A later rotation (the command checked it follows the chain)."""
        if version <= self.versions[-1]:
            raise ValueError(f"key set version {version}, published {self.versions[-1]}")
        self._rotated_again(
            version=version,
            envelope=envelope,
            key_ids=key_ids,
            threshold=threshold,
            actor=actor,
            correlation_id=correlation_id,
        )

    @event("RotatedAgain")
    def _rotated_again(
        self,
        version: int,
        envelope: Envelope,
        key_ids: list[str],
        threshold: int,
        actor: str,
        correlation_id: str,
    ) -> None:
        self._keep(version, envelope)

    def _keep(self, version: int, envelope: Envelope) -> None:
        self.rotations.append(envelope)
        self.versions.append(version)

    def published(self, version: int) -> Envelope | None:
        """The rotation published with this key set version, if any."""
        for at, envelope in zip(self.versions, self.rotations, strict=True):
            if at == version:
                return envelope
        return None
