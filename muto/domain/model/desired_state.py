"""DesiredState: one operator (or rollout) intent, one revision.

The per-vehicle consequences are `Vehicle.DesiredStateAssigned` events saved in the
same transaction, each with that vehicle's next sequence."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from muto.domain.events import StoredRequest
from muto.domain.model import stable_id


class DesiredState(Aggregate):
    @staticmethod
    def create_id(revision: str, **_: Any) -> UUID:
        return stable_id("desired-state", revision)

    @event("Created")
    def __init__(
        self,
        revision: str,
        request: StoredRequest,
        release_key: str | None,  # None: the revision says "run nothing"
        manifest_digest: str | None,
        vehicle_ids: list[str],
        rollout_id: str | None,
        actor: str,
        correlation_id: str,
    ) -> None:
        self.revision = revision
        self.request = request
        self.release_key = release_key
        self.manifest_digest = manifest_digest
        self.vehicle_ids = vehicle_ids
        self.rollout_id = rollout_id
