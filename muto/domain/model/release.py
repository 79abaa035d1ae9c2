"""Release: a registered, signed StackRelease. Immutable: it has one event (no snapshots,
so its state keeps the typed manifest and envelope)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from muto.domain.desired import Envelope
from muto.domain.model import stable_id
from muto.domain.release import StackRelease


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
