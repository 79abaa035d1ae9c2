"""Releases and each vehicle's latest desired state (the releases and desired views)."""

from __future__ import annotations

from functools import cached_property
from typing import Any, NamedTuple

import msgspec
from sqlalchemy import Select, Text, bindparam, cast, select

from muto.cloud.api.schema import PublishedKeyRotation, Release
from muto.cloud.errors import NotFound
from muto.cloud.rotations import Chain
from muto.domain.desired import Envelope
from muto.domain.release import StackRelease
from muto.projections import Views
from muto.projections.desired import bundle_etag
from muto.projections.store import rows


class ReleaseReads:
    views: Views

    @cached_property
    def _document(self) -> Select[Any]:
        latest, releases = self.views.desired.latest, self.views.releases.releases
        columns = (latest.c.etag, latest.c.revision, latest.c.sequence, latest.c.release_key)
        envelope = cast(latest.c.envelope, Text)  # as stored: decoded only for a 200
        # The release's signatures as of this same read: they are part of the bundle.
        added = releases.c.signatures_added
        joined = latest.outerjoin(releases, releases.c.release_key == latest.c.release_key)
        return (
            select(*columns, envelope, added)
            .select_from(joined)
            .where(latest.c.vehicle_id == bindparam("vehicle"))
        )

    @cached_property
    def _envelope(self) -> Select[Any]:
        releases = self.views.releases.releases
        columns = (releases.c.envelope, releases.c.signatures_added)
        return select(*columns).where(releases.c.release_key == bindparam("key"))

    def release(self, stack: str, version: str) -> Release:
        table = self.views.releases.releases
        with self.views.store.reading() as s:
            found = rows(
                s.execute(table.select().where(table.c.release_key == f"{stack}@{version}"))
            )
        if not found:
            raise NotFound(f"release {stack}@{version} is not registered")
        return release_view(found[0])

    def releases(self, stack: str | None = None) -> list[Release]:
        table = self.views.releases.releases
        query = table.select().order_by(table.c.stack_name, table.c.registered_at)
        if stack:
            query = query.where(table.c.stack_name == stack)
        with self.views.store.reading() as s:
            return [release_view(r) for r in rows(s.execute(query))]

    # -- desired state ------------------------------------------------------------------

    def desired_document(self, vehicle_id: str) -> DesiredDocument | None:
        """What a poll needs, in one read: the ETag, and the signed document as stored
        (~3 KB of JSON), decoded only when the poll is answered 200."""
        found = self.views.store.read(self._document, {"vehicle": vehicle_id})
        if not found:
            return None
        etag, revision, sequence, release_key, envelope, added = found[0]
        added = added or 0  # no release ("run nothing"), or one the view lacks
        return DesiredDocument(
            bundle_etag(etag, added), revision, sequence, release_key, envelope.encode(), added
        )

    def release_envelope(self, release_key: str) -> tuple[dict[str, Any], int]:
        """The release's envelope and how many signatures were added to it since it was
        registered (uncached: envelopes.ReleaseEnvelopes keeps them by both)."""
        found = self.views.store.read(self._envelope, {"key": release_key})
        if not found:
            raise NotFound(f"release {release_key} is not registered")
        envelope, added = found[0]
        return dict(envelope), added

    # -- release key rotations ----------------------------------------------------------

    def key_rotations(self) -> list[PublishedKeyRotation]:
        """Every published release key rotation, oldest (lowest key set version) first."""
        table = self.views.releases.rotations
        with self.views.store.reading() as s:
            found = rows(s.execute(table.select().order_by(table.c.version)))
        return [key_rotation_view(r) for r in found]

    def key_rotation_chain(self) -> Chain:
        """What a bundle carries (`DesiredStateBundle.key_rotations`), oldest first."""
        found = self.key_rotations()
        return Chain([r.envelope for r in found], found[-1].version if found else 1)


class DesiredDocument(NamedTuple):
    etag: str  # the bundle's (projections.desired.etag_for, with its added signatures)
    revision: str
    sequence: int
    release_key: str  # "": the document says "run nothing"
    envelope: bytes  # the envelope's JSON as stored
    signatures_added: int = 0  # to the release, as of the read that gave `etag`

    def decoded_envelope(self) -> Envelope:
        return msgspec.json.decode(self.envelope, type=Envelope)


def release_view(r: dict[str, Any]) -> Release:
    """The API's release from a row of the releases view (its JSON columns hold the
    manifest and envelope as they were registered)."""
    return Release(
        stack_name=r["stack_name"],
        version=r["version"],
        manifest_digest=r["manifest_digest"],
        manifest=msgspec.convert(r["manifest"], StackRelease),
        envelope=msgspec.convert(r["envelope"], Envelope),
        registered_at=r["registered_at"],
    )


def key_rotation_view(r: dict[str, Any]) -> PublishedKeyRotation:
    return PublishedKeyRotation(
        version=r["version"],
        key_ids=list(r["key_ids"]),
        threshold=r["threshold"],
        envelope=msgspec.convert(r["envelope"], Envelope),
        published_at=r["published_at"],
        actor=r["actor"],
    )
