"""AccessToken: a bearer credential, stored only as its hash. Issued and revoked as
events, so the audit trail shows who could act, from when, until when."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from muto.domain.model import stable_id


class AccessToken(Aggregate):
    @staticmethod
    def create_id(token_id: str, **_: Any) -> UUID:
        return stable_id("token", token_id)

    @event("Issued")
    def __init__(
        self,
        token_id: str,
        token_hash: str,
        role: str,
        vehicle_id: str | None,
        actor: str,
        correlation_id: str,
    ) -> None:
        self.token_id = token_id
        self.token_hash = token_hash
        self.role = role
        self.vehicle_id = vehicle_id
        self.revoked = False

    def revoke(self, actor: str, correlation_id: str) -> None:
        if not self.revoked:
            self._revoked(token_id=self.token_id, actor=actor, correlation_id=correlation_id)

    @event("Revoked")
    def _revoked(self, token_id: str, actor: str, correlation_id: str) -> None:
        self.revoked = True
