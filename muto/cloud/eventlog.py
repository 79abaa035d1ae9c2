"""The control plane's event log: an `eventsourcing` Application over SQLAlchemy.

SQLite file by default, PostgreSQL by URL, in-memory for tests. Snapshots keep
long-lived aggregates (a vehicle with thousands of reports) cheap to load.
"""

from __future__ import annotations

from typing import Any, ClassVar

from eventsourcing.application import Application

from muto.cloud.settings import Settings
from muto.domain.model.rollout import Rollout
from muto.domain.model.vehicle import Vehicle


class EventLog(Application[Any]):
    name = "muto"  # tables: muto_events, muto_snapshots
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {Vehicle: 100, Rollout: 50}

    @classmethod
    def open(cls, settings: Settings) -> EventLog:
        if not settings.is_memory and not settings.is_postgres:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        return cls(env=settings.event_store_env())

    def position(self) -> int:
        """The id of the last notification in the log (0 when empty)."""
        return self.recorder.max_notification_id() or 0
