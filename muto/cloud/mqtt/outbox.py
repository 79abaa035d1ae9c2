"""The notifier's outbox is the event log itself: every `Vehicle.DesiredStateAssigned`
after the notifier's stored position is a notify still to publish.

Invariants:
- the position is stored (view store tracking table, name `mqtt-notifier`) only after
  every notify of the batch up to it was acknowledged by the broker, so a crash or an
  outage re-publishes, never skips;
- within a batch only the newest assignment per vehicle is published: notifies are
  retained, so the last one is what a vehicle sees anyway;
- a fresh store starts from 0 and re-publishes history's latest notify per vehicle:
  harmless, a retained notify is idempotent and agents ignore a sequence they have seen.
- a notify goes out only once the `desired` view serves what it announces (the batch
  stops at that view's position): a vehicle fetching at once must get the new document,
  not a 304 that leaves it waiting for its next poll.

Blocking (database) calls: run them through `asyncio.to_thread`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from eventsourcing.utils import get_topic

from muto.cloud.bootstrap import ControlPlane
from muto.domain.messages import DesiredNotify
from muto.domain.model.vehicle import Vehicle
from muto.projections.locks import Lease, Lock

NOTIFIER = "mqtt-notifier"
SERVED_BY = "desired"  # the view GET /desired-states/latest answers from
BATCH = 500
ASSIGNED = f"{get_topic(Vehicle)}.DesiredStateAssigned"  # the stored event topic


@dataclass(frozen=True)
class Due:
    notifies: list[DesiredNotify]
    through: int  # store this position once every notify is acknowledged


def latest_per_vehicle(events: Iterable[Any], public_url: str) -> list[DesiredNotify]:
    """Coalesce assignment events (in log order) to the newest notify per vehicle."""
    newest: dict[str, DesiredNotify] = {}
    for event in events:
        newest[event.vehicle_id] = DesiredNotify(
            schema="muto.desired-notify.v1",
            vehicle_id=event.vehicle_id,
            revision=event.assignment.revision,
            sequence=event.sequence,
            # Vehicle ids are identifiers (no '&', '#', '/', spaces): safe in a query.
            url=f"{public_url.rstrip('/')}/desired-states/latest?vehicleId={event.vehicle_id}",
        )
    return list(newest.values())


class Outbox:
    def __init__(self, plane: ControlPlane, name: str = NOTIFIER) -> None:
        self.plane = plane
        self.name = name
        # Only one notifier per database publishes, so that no two processes publish
        # one vehicle's notifies out of order.
        self.lease = Lease(plane.views.store.engine, Lock.NOTIFIER)

    def position(self) -> int:
        return self.plane.views.store.position_of(self.name)

    def due(self, after: int, limit: int = BATCH) -> Due:
        """Notifies assigned after `after`: at most `limit` assignments, coalesced."""
        log = self.plane.log
        head = min(log.position(), self.plane.views.store.position_of(SERVED_BY))
        if head <= after:
            return Due([], after)
        found = log.recorder.select_notifications(
            start=after, limit=limit, stop=head, topics=[ASSIGNED], inclusive_of_start=False
        )
        # A full page may stop short of the head; otherwise everything up to it was read
        # (inserts into the log are serialised, so no lower position can appear later).
        through = found[-1].id if len(found) == limit else head
        events = (log.mapper.to_domain_event(n) for n in found)
        return Due(latest_per_vehicle(events, self.plane.settings.public_url), through)

    def advance(self, position: int) -> None:
        """Store `position`. Idempotent: a pass cancelled after this committed (the link
        dropped) may store the same position again. One row is kept, not one per batch."""
        store = self.plane.views.store
        rows = store.tracking_record_cls
        with store.writing() as session:
            session.query(rows).filter(
                rows.application_name == self.name, rows.notification_id <= position
            ).delete()
            store.record_position(session, self.name, position)

    def is_leader(self) -> bool:
        return self.lease.held()

    def release(self) -> None:
        self.lease.release()
