"""Release: a registered, signed StackRelease. Immutable: it has one event."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from muto.domain.model import stable_id


class Release(Aggregate):
    @staticmethod
    def create_id(key: str, **_: Any) -> UUID:
        return stable_id("release", key)

    @event("Registered")
    def __init__(
        self,
        key: str,
        manifest_digest: str,
        manifest: dict[str, Any],
        envelope: dict[str, Any],
        actor: str,
        correlation_id: str,
    ) -> None:
        self.key = key
        self.manifest_digest = manifest_digest
        self.manifest = manifest
        self.envelope = envelope
