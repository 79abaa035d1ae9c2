"""Releases: every registered release with its signed envelope."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import JSON, Column, MetaData, String, Table
from sqlalchemy.orm import Session

from muto.domain.events import plain
from muto.projections.base import Projection, Update


class Releases(Projection):
    name = "releases"

    def define(self, metadata: MetaData) -> list[Table]:
        self.releases = Table(
            "view_releases",
            metadata,
            Column("release_key", String(300), primary_key=True),
            Column("stack_name", String(128), nullable=False, index=True),
            Column("version", String(128), nullable=False),
            Column("manifest_digest", String(80), nullable=False),
            Column("manifest", JSON, nullable=False),
            Column("envelope", JSON, nullable=False),
            Column("registered_at", String(40), nullable=False),
        )
        return [self.releases]

    @property
    def updates(self) -> Mapping[str, Update]:
        return {"Release.Registered": self._registered}

    def _registered(self, s: Session, e: Any, _: int) -> None:
        s.execute(
            self.releases.insert().values(
                release_key=e.key,
                stack_name=e.manifest.stack_name,
                version=e.manifest.version,
                manifest_digest=e.manifest_digest,
                manifest=plain(e.manifest),
                envelope=plain(e.envelope),
                registered_at=e.timestamp.isoformat(),
            )
        )
