"""The control plane's event log: an `eventsourcing` Application over SQLAlchemy.

SQLite file by default, PostgreSQL by URL, in-memory for tests. Snapshots keep
long-lived aggregates (a vehicle with thousands of reports) cheap to load.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from eventsourcing.application import Application
from eventsourcing.persistence import Notification
from sqlalchemy import Engine

from muto.cloud.settings import Settings
from muto.domain.model.rollout import Rollout
from muto.domain.model.vehicle import Vehicle
from muto.trust.files import private_dir, private_file

logger = logging.getLogger("muto.eventlog")


class EventLog(Application[Any]):
    name = "muto"  # tables: muto_events, muto_snapshots
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {Vehicle: 100, Rollout: 50}

    @classmethod
    def open(cls, settings: Settings) -> EventLog:
        if not settings.is_memory and not settings.is_postgres:
            private_dir(settings.data_dir)
        for database in settings.sqlite_files():  # token hashes, all fleet data: 0600
            private_dir(database.parent)
            private_file(database)
        return cls(env={**cls.cache_env(settings), **settings.event_store_env()})

    @staticmethod
    def cache_env(settings: Settings) -> dict[str, str]:
        """Keep recently written aggregates in memory: a report re-loads its vehicle from
        the cache and fast-forwards it with one query for events written since (by other
        processes), instead of reconstructing it from snapshot + tail every time.

        On SQLite (and in memory) this process is the only writer, so the cache is exact
        and the fast-forward query is skipped. On PostgreSQL other API processes write
        too: every cached read fast-forwards. Commands get deep copies, so a refused
        command never leaves a mutated aggregate in the cache."""
        return {
            "AGGREGATE_CACHE_MAXSIZE": str(settings.aggregate_cache_size),
            "AGGREGATE_CACHE_FASTFORWARD": "y" if settings.is_postgres else "n",
        }

    def close(self) -> None:
        super().close()
        # The library leaves its SQLAlchemy engine's pooled connections to the garbage
        # collector (a ResourceWarning each): give them back now.
        engine = getattr(getattr(self.factory, "datastore", None), "engine", None)
        if isinstance(engine, Engine):
            engine.dispose()

    def _take_snapshots(self, processing_event: Any) -> None:
        """Snapshots are taken after the events are committed; one that fails must not
        make a committed write look failed (the writer would re-run its commands). A
        snapshot is only a shortcut: log the failure, keep the events."""
        try:
            super()._take_snapshots(processing_event)
        except Exception:
            logger.exception("snapshot failed after a committed save; continuing without")

    # -- the EventSource port (muto.projections.source) -------------------------------

    def position(self) -> int:
        """The id of the last notification in the log (0 when empty)."""
        return self.recorder.max_notification_id() or 0

    def select(self, after: int, limit: int, until: int | None = None) -> Sequence[Notification]:
        return self.recorder.select_notifications(
            start=after, limit=limit, stop=until, inclusive_of_start=False
        )

    def decode(self, record: Notification) -> Any:
        return self.mapper.to_domain_event(record)
