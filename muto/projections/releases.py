"""Releases: every registered release with its signed envelope, signatures added since
registration included (`Release.Signed`; each replaces its key's stored signature that
did not verify, as on the aggregate: model.release.with_signatures)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, select
from sqlalchemy.orm import Session

from muto.domain.desired import Signature
from muto.domain.events import plain
from muto.domain.model.release import with_signatures
from muto.projections.base import Announcer, Projection, Update


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
            # Signatures added since registration (one replacing a stored signature that
            # did not verify counts too): 0 as registered. Only ever grows, so with the
            # release key it names one state of the envelope: the desired-state ETag and
            # the envelope memory (cloud.envelopes) are keyed by it.
            Column("signatures_added", Integer, nullable=False, default=0),
        )
        self.signed = Announcer("release-signed")  # each release key, after commit
        return [self.releases]

    @property
    def updates(self) -> Mapping[str, Update]:
        return {"Release.Registered": self._registered, "Release.Signed": self._signed}

    @property
    def announcers(self) -> list[Announcer]:
        return [self.signed]

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
                signatures_added=0,
            )
        )

    def _signed(self, s: Session, e: Any, _: int) -> None:
        t = self.releases
        found = s.execute(
            select(t.c.envelope, t.c.signatures_added).where(t.c.release_key == e.key)
        ).one()
        envelope = dict(found.envelope)
        stored = msgspec.convert(envelope["signatures"], list[Signature])
        added = msgspec.convert(plain(e.signatures), list[Signature])
        envelope["signatures"] = plain(with_signatures(stored, added))
        s.execute(
            t.update()
            .where(t.c.release_key == e.key)
            .values(envelope=envelope, signatures_added=found.signatures_added + len(e.signatures))
        )
        self.signed.note(e.key)
