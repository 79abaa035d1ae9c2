"""Latest desired state per vehicle: the signed document, ready to serve with an ETag."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import JSON, Column, Integer, MetaData, String, Table
from sqlalchemy.orm import Session

from muto.projections.base import Announcer, Projection, Update
from muto.projections.rows import Rows


def etag_for(sequence: int, document_digest: str) -> str:
    return f'"{sequence}-{document_digest.removeprefix("sha256:")[:20]}"'


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
        return [self.latest]

    @property
    def updates(self) -> Mapping[str, Update]:
        return {"Vehicle.DesiredStateAssigned": self._assigned}

    def _assigned(self, s: Session, e: Any, _: int) -> None:
        a = e.assignment
        self.assigned.note(e.vehicle_id)
        self.rows.delete(s, vehicle_id=e.vehicle_id)
        self.rows.insert(
            s,
            {
                "vehicle_id": e.vehicle_id,
                "revision": a["revision"],
                "sequence": e.sequence,
                # "": a revision that says "run nothing" (served with no release)
                "release_key": a["releaseKey"] or "",
                "rollout_id": a.get("rolloutId"),
                "envelope": a["envelope"],
                "etag": etag_for(e.sequence, a["documentDigest"]),
                "expires_at": a["expiresAt"],
            },
        )

    @property
    def announcers(self) -> list[Announcer]:
        return [self.assigned]
