"""Releases: every registered release with its signed envelope, signatures added since
registration included (`Release.Signed`; each replaces its key's stored signature that
did not verify, as on the aggregate: model.release.with_signatures). And the release
key rotations published (`ReleaseKeys`), by key set version: served to every vehicle."""

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
        # A table added after the releases view was first made: created empty where it
        # is missing, which is right, since no rotation was published before it existed.
        self.rotations = Table(
            "view_key_rotations",
            metadata,
            Column("version", Integer, primary_key=True, autoincrement=False),
            Column("key_ids", JSON, nullable=False),
            Column("threshold", Integer, nullable=False),
            Column("envelope", JSON, nullable=False),
            Column("published_at", String(40), nullable=False),
            Column("actor", String(128), nullable=False),
        )
        self.rotated = Announcer("release-keys-rotated")  # each key set version, after commit
        return [self.releases, self.rotations]

    @property
    def updates(self) -> Mapping[str, Update]:
        return {
            "Release.Registered": self._registered,
            "Release.Signed": self._signed,
            "ReleaseKeys.Rotated": self._rotated,
            "ReleaseKeys.RotatedAgain": self._rotated,
        }

    @property
    def announcers(self) -> list[Announcer]:
        return [self.signed, self.rotated]

    def _rotated(self, s: Session, e: Any, _: int) -> None:
        s.execute(
            self.rotations.insert().values(
                version=e.version,
                key_ids=list(e.key_ids),
                threshold=e.threshold,
                envelope=plain(e.envelope),
                published_at=e.timestamp.isoformat(),
                actor=e.actor,
            )
        )
        self.rotated.note(str(e.version))

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
