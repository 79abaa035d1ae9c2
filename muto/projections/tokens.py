"""Access tokens by hash, for authenticating requests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Boolean, Column, MetaData, String, Table, update
from sqlalchemy.orm import Session

from muto.projections.base import Announcer, Projection, Update


class Tokens(Projection):
    name = "tokens"

    def define(self, metadata: MetaData) -> list[Table]:
        self.tokens = Table(
            "view_tokens",
            metadata,
            Column("token_hash", String(80), primary_key=True),
            Column("token_id", String(64), nullable=False, unique=True),
            Column("role", String(16), nullable=False),
            Column("vehicle_id", String(128)),
            Column("revoked", Boolean, nullable=False),
            Column("issued_at", String(40), nullable=False),
        )
        self.revoked = Announcer("token-revoked")  # each revoked token id, after commit
        return [self.tokens]

    @property
    def updates(self) -> Mapping[str, Update]:
        return {"AccessToken.Issued": self._issued, "AccessToken.Revoked": self._revoked}

    def _issued(self, s: Session, e: Any, _: int) -> None:
        s.execute(
            self.tokens.insert().values(
                token_hash=e.token_hash,
                token_id=e.token_id,
                role=e.role,
                vehicle_id=e.vehicle_id,
                revoked=False,
                issued_at=e.timestamp.isoformat(),
            )
        )

    def _revoked(self, s: Session, e: Any, _: int) -> None:
        self.revoked.note(e.token_id)
        s.execute(
            update(self.tokens).where(self.tokens.c.token_id == e.token_id).values(revoked=True)
        )

    @property
    def announcers(self) -> list[Announcer]:
        return [self.revoked]
