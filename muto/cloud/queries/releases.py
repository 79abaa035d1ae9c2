"""Releases and each vehicle's latest desired state (the releases and desired views)."""

from __future__ import annotations

from functools import cached_property
from typing import Any, NamedTuple

import msgspec
from sqlalchemy import Select, Text, bindparam, cast, select

from muto.cloud.api.schema import Release
from muto.cloud.errors import NotFound
from muto.domain.desired import Envelope
from muto.domain.release import StackRelease
from muto.projections import Views
from muto.projections.store import rows


class ReleaseReads:
    views: Views

    @cached_property
    def _document(self) -> Select[Any]:
        latest = self.views.desired.latest
        columns = (latest.c.etag, latest.c.revision, latest.c.sequence, latest.c.release_key)
        envelope = cast(latest.c.envelope, Text)  # as stored: decoded only for a 200
        return select(*columns, envelope).where(latest.c.vehicle_id == bindparam("vehicle"))

    @cached_property
    def _envelope(self) -> Select[Any]:
        releases = self.views.releases.releases
        return select(releases.c.envelope).where(releases.c.release_key == bindparam("key"))

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
        etag, revision, sequence, release_key, envelope = found[0]
        return DesiredDocument(etag, revision, sequence, release_key, envelope.encode())

    def release_envelope(self, release_key: str) -> dict[str, Any]:
        """Uncached: envelopes.ReleaseEnvelopes keeps them (releases are immutable)."""
        found = self.views.store.read(self._envelope, {"key": release_key})
        if not found:
            raise NotFound(f"release {release_key} is not registered")
        return dict(found[0][0])


class DesiredDocument(NamedTuple):
    etag: str
    revision: str
    sequence: int
    release_key: str  # "": the document says "run nothing"
    envelope: bytes  # the envelope's JSON as stored

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
