"""Latest desired state per vehicle: the signed document, ready to serve with an ETag."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import JSON, Column, Integer, MetaData, String, Table
from sqlalchemy.orm import Session

from muto.domain.events import DesiredAssignment, plain
from muto.projections.base import Announcer, Projection, Update
from muto.projections.rows import Rows


def etag_for(sequence: int, document_digest: str, signatures_added: int = 0) -> str:
    """The ETag of a vehicle's desired-state bundle, the one place its shape is written:
    `"<sequence>-<20 hex of the signed document's digest>"`, and, once signatures were
    added to its release, their count before the closing quote (`"7-0a1b...+1"`): a
    vehicle that fetched the bundle before the addition fetches it again (its
    `If-None-Match` no longer matches). A release never added to keeps the document's
    ETag, as before signatures could be added. The view stores it with none added."""
    tag = f"{sequence}-{document_digest.removeprefix('sha256:')[:20]}"
    return f'"{tag}+{signatures_added}"' if signatures_added else f'"{tag}"'


def bundle_etag(stored: str, signatures_added: int) -> str:
    """The bundle's ETag from the view's (`etag_for` with none added: the view holds no
    document digest) and its release's count of added signatures: etag_for again."""
    if not signatures_added:
        return stored
    sequence, digest = stored.strip('"').split("-", 1)
    return etag_for(int(sequence), digest, signatures_added)


def rotated_etag(etag: str, key_set_version: int) -> str:
    """A bundle's ETag once release key rotations were published: the key set version the
    last one rotated to, before the closing quote (`"7-0a1b...+1.k2"`), since every
    bundle carries every rotation. Unchanged while none was (`key_set_version` 1)."""
    return etag if key_set_version <= 1 else f'{etag[:-1]}.k{key_set_version}"'


class LatestDesired(Projection):
    name = "desired"

    def define(self, metadata: MetaData) -> list[Table]:
        self.latest = Table(
            "view_desired_latest",
            metadata,
            Column("vehicle_id", String(128), primary_key=True),
            Column("revision", String(64), nullable=False),
            Column("sequence", Integer, nullable=False),
            Column("release_key", String(300), nullable=False),
            Column("rollout_id", String(128)),
            Column("envelope", JSON, nullable=False),
            Column("etag", String(64), nullable=False),
            Column("expires_at", String(40), nullable=False),
        )
        self.rows = Rows(self.latest, "vehicle_id")
        self.assigned = Announcer("desired-assigned")  # each vehicle id, after commit
        self._latest: dict[str, dict[str, Any]] = {}
        return [self.latest]

    @property
    def updates(self) -> Mapping[str, Update]:
        return {"Vehicle.DesiredStateAssigned": self._assigned}

    def _assigned(self, s: Session, e: Any, _: int) -> None:
        """Buffered: a batch's newest assignment per vehicle replaces its row at flush."""
        a: DesiredAssignment = e.assignment
        self.assigned.note(e.vehicle_id)
        self._latest[e.vehicle_id] = {
            "vehicle_id": e.vehicle_id,
            "revision": a.revision,
            "sequence": e.sequence,
            # "": a revision that says "run nothing" (served with no release)
            "release_key": a.release_key or "",
            "rollout_id": a.rollout_id,
            "envelope": plain(a.envelope),
            "etag": etag_for(e.sequence, a.document_digest),
            "expires_at": a.expires_at,
        }

    def flush(self, session: Session) -> None:
        if self._latest:
            self.rows.delete_keys(session, list(self._latest))
            self.rows.insert(session, list(self._latest.values()))
            self._latest = {}

    def discard(self) -> None:
        self._latest = {}
        super().discard()

    @property
    def announcers(self) -> list[Announcer]:
        return [self.assigned]
