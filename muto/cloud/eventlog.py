"""The control plane's event log: an `eventsourcing` Application over SQLAlchemy.

SQLite file by default, PostgreSQL by URL, in-memory for tests. Snapshots keep
long-lived aggregates (a vehicle with thousands of reports) cheap to load.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, TypeVar, cast

from eventsourcing.application import Application, ProcessingEvent, Repository
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Mapper, Notification, Recording, StoredEvent
from eventsourcing.utils import strtobool
from sqlalchemy import Engine

from muto.cloud.eventcodec import EventMapper
from muto.cloud.recorder import EventRecorder
from muto.cloud.settings import Settings
from muto.domain.model.rollout import Rollout
from muto.domain.model.vehicle import Vehicle
from muto.trust.files import private_dir, private_file

logger = logging.getLogger("muto.eventlog")
T = TypeVar("T")


def project(aggregate: Any, events: Iterable[Any]) -> Any:
    """The library's `project_aggregate` (each event mutates the aggregate in turn)
    without its runtime-Protocol isinstance check per event: ~13 µs each on Python 3.11,
    a millisecond to rebuild a vehicle from its snapshot and 100 events."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class WriterRepository(Repository[Any]):
    """The library's repository, whose cache the writer works on in place (batch lock held).

    The library deep-copies a cached aggregate for every command, so that a refused
    command cannot leave a mutated aggregate in the cache; with a vehicle's remembered
    report ids that copy was a fifth of a report's cost. The writer instead takes the
    cached aggregate itself (`deepcopy_from_cache=False`) and evicts everything a
    command touched when the command or its save fails (writer.UnitOfWork.forget).
    Every other reader still gets a deep copy, taken while no batch is running
    (`batch_lock`, held by the writer around each batch), so never a half-applied one."""

    def __init__(self, *args: Any, fresh_reads: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_lock = threading.RLock()
        self.fresh_reads = fresh_reads

    def get(self, aggregate_id: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("projector_func", project)
        if kwargs.get("version") is not None or not kwargs.get("deepcopy_from_cache", True):
            return super().get(aggregate_id, **kwargs)
        with self.batch_lock:
            aggregate = super().get(aggregate_id, **kwargs)
        if newer := self._newer(aggregate_id, aggregate.version):
            aggregate = project(aggregate, newer)
        return aggregate

    def peek(self, aggregate_id: Any, read: Callable[[Any], T]) -> T:
        """`read(aggregate)` on the current aggregate, without the deep copy `get` takes:
        a rollout's copy (every member's revision) cost 20 ms a controller tick at
        10,000 vehicles, under the batch lock. `read` runs under that lock, so it sees
        no half-applied batch; it must neither change the aggregate nor keep it."""
        with self.batch_lock:
            aggregate: Any = super().get(
                aggregate_id, deepcopy_from_cache=False, projector_func=project
            )
            if newer := self._newer(aggregate_id, aggregate.version):
                # On a copy: the cache's aggregate is the writer's to move.
                aggregate = project(copy.deepcopy(aggregate), newer)
            return read(aggregate)

    def _newer(self, aggregate_id: Any, version: int) -> list[Any]:
        """With fresh reads (other processes write too), what they stored since `version`."""
        if not self.fresh_reads:
            return []
        return list(self.event_store.get(originator_id=aggregate_id, gt=version))


class Recent:
    """The last notifications this process stored, by position: the projector reads a
    run of them here instead of selecting back from the log what the writer has just
    committed (that read was a third of the projector's step under report load).

    Only a run that starts right after the asked position and has no hole is served:
    positions are unique, so a hole is a record another process stored (or a sequence
    value a rolled-back transaction used), and the log itself is read then."""

    def __init__(self, size: int = 8192) -> None:
        self._size = size
        # An OrderedDict drops its oldest in O(1); a dict's `next(iter(...))` walks
        # the slots its earlier deletions left (~6 µs an event at this size).
        self._by_id: OrderedDict[int, Notification] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, recordings: Sequence[Recording[Any]]) -> None:
        with self._lock:
            for recording in recordings:
                notification = recording.notification
                self._by_id[notification.id] = notification
            while len(self._by_id) > self._size:
                self._by_id.popitem(last=False)  # oldest first (insertion order)

    def run(self, after: int, limit: int, until: int | None) -> list[Notification]:
        """The records after `after` (up to `limit`, up to `until`) if this process
        stored them all; none if a record it did not store lies among them (read the
        log then): so a run shorter than asked ends at the newest record stored here."""
        last = after + limit if until is None else min(after + limit, until)
        found = []
        with self._lock:
            newest = next(reversed(self._by_id), 0)
            for position in range(after + 1, min(last, newest) + 1):
                notification = self._by_id.get(position)
                if notification is None:
                    return []
                found.append(notification)
        return found


class EventLog(Application[Any]):
    name = "muto"  # tables: muto_events, muto_snapshots
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {Vehicle: 100, Rollout: 50}
    FRESH_READS = "AGGREGATE_CACHE_FRESH_READS"

    @classmethod
    def open(cls, settings: Settings) -> EventLog:
        if not settings.is_memory and not settings.is_postgres:
            private_dir(settings.data_dir)
        for database in settings.sqlite_files():  # token hashes, all fleet data: 0600
            private_dir(database.parent)
            private_file(database)
        return cls(env={**cls.cache_env(settings), **settings.event_store_env()})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recent = Recent()

    def construct_mapper(self) -> Mapper[Any]:
        """Typed msgspec payloads, old events upcast on read (eventcodec.py)."""
        return self.factory.mapper(transcoder=self.construct_transcoder(), mapper_class=EventMapper)

    def construct_repository(self) -> WriterRepository:
        """The library's repository, from the same environment keys."""
        maxsize = self.env.get(self.AGGREGATE_CACHE_MAXSIZE)
        return WriterRepository(
            event_store=self.events,
            snapshot_store=self.snapshots,
            cache_maxsize=int(maxsize) if maxsize else None,
            fastforward=strtobool(self.env.get(self.AGGREGATE_CACHE_FASTFORWARD, "y")),
            fresh_reads=strtobool(self.env.get(self.FRESH_READS, "n")),
        )

    @property
    def writer_repository(self) -> WriterRepository:
        assert isinstance(self.repository, WriterRepository)
        return self.repository

    @staticmethod
    def cache_env(settings: Settings) -> dict[str, str]:
        """Keep recently written aggregates in memory: a report finds its vehicle in the
        cache instead of reconstructing it from snapshot + tail every time.

        The writer does not fast-forward a cached aggregate (a query per command); it
        validates every aggregate a batch read when the batch saves, in one query
        (recorder.EventRecorder, `read_versions`), so an aggregate that another process
        moved makes the save conflict and the writer reload. Readers outside the writer
        (the rollout controller) get a copy fast-forwarded with what other processes
        stored, on PostgreSQL, where several processes write."""
        return {
            "AGGREGATE_CACHE_MAXSIZE": str(settings.aggregate_cache_size),
            "AGGREGATE_CACHE_FASTFORWARD": "n",
            EventLog.FRESH_READS: "y" if settings.is_postgres else "n",
        }

    def close(self) -> None:
        if isinstance(self.recorder, EventRecorder):
            self.recorder.release()
        super().close()
        # The library leaves its SQLAlchemy engine's pooled connections to the garbage
        # collector (a ResourceWarning each): give them back now.
        engine = getattr(getattr(self.factory, "datastore", None), "engine", None)
        if isinstance(engine, Engine):
            engine.dispose()

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[Any]]:
        """The library's save, collecting an Aggregate's events with a class check
        instead of its two runtime-Protocol `isinstance` checks per object (a tenth
        of a group-commit batch's CPU); anything else goes the library's way."""
        processing_event: ProcessingEvent[Any] = ProcessingEvent()
        for obj in objs:
            if isinstance(obj, Aggregate):
                processing_event.events.extend(obj.collect_events())
                processing_event.aggregates[obj.id] = obj
            else:
                processing_event.collect_events(obj)
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        self.recent.add(recordings)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        return recordings

    def load_many(self, aggregate_ids: Sequence[Any]) -> dict[Any, Aggregate] | None:
        """The aggregates of `aggregate_ids` that exist, each reconstructed as the
        repository would (its latest snapshot, then the events after it), from two
        queries in all; None where the store cannot (the in-memory one)."""
        if not isinstance(self.recorder, EventRecorder):
            return None
        snapshots = self.snapshots.recorder if self.snapshots is not None else None
        table = getattr(snapshots, "events_record_cls", None)
        histories = self.recorder.histories(
            aggregate_ids, table.__table__ if table is not None else None
        )
        loaded: dict[Any, Aggregate] = {}
        decode: Callable[[StoredEvent], Any] = self.mapper.to_domain_event
        for aggregate_id, (snapshot, events) in histories.items():
            stored = [snapshot, *events] if snapshot is not None else events
            aggregate = project(None, map(decode, stored))
            if aggregate is not None:
                loaded[aggregate_id] = aggregate
        return loaded

    def fast_forward(self, aggregate_ids: Sequence[Any]) -> int:
        """Bring the cached aggregates among `aggregate_ids` up to what the store holds,
        in one query: the events other processes stored since each was cached, applied
        to it in place, as the library's fast-forward does one aggregate (one query) at
        a time. Returns how many moved. One that cannot be brought forward (an event
        does not follow its version) is evicted: the next find loads it whole. Only on
        the writer's thread, under its batch lock, like every change to the cache."""
        cache = self.repository.cache
        if cache is None or not isinstance(self.recorder, EventRecorder):
            return 0
        cached: dict[Any, Aggregate] = {}
        for aggregate_id in dict.fromkeys(aggregate_ids):
            with contextlib.suppress(KeyError):
                cached[aggregate_id] = cast(Aggregate, cache.get(aggregate_id))
        tails = self.recorder.tails({i: a.version for i, a in cached.items()})
        for aggregate_id, stored in tails.items():
            try:
                project(cached[aggregate_id], map(self.mapper.to_domain_event, stored))
            except Exception:
                logger.warning("evicted %s: its stored events do not follow its cached version",
                               aggregate_id)  # fmt: skip
                with contextlib.suppress(KeyError):
                    cache.get(aggregate_id, evict=True)
        return len(tails)

    def _take_snapshots(self, processing_event: ProcessingEvent[Any]) -> None:
        """A snapshot of each aggregate whose events just saved reached a multiple of its
        interval, taken from the aggregate in memory at the version just committed (all
        of one save in one transaction). The library instead loads each aggregate back
        from the store, its last snapshot and up to `interval` events, to snapshot it
        at exactly that multiple: a fifth of the writer thread under report load. A
        snapshot at a later version serves loads the same way (the newest at or below
        the asked version is used).

        Snapshots are taken after the events are committed; one that fails must not
        make a committed write look failed (the writer would re-run its commands). A
        snapshot is only a shortcut: log the failure, keep the events."""
        if self.snapshots is None or not self.snapshotting_intervals:
            return
        due: dict[Any, Any] = {}
        for event in processing_event.events:
            aggregate = processing_event.aggregates.get(event.originator_id)
            interval = self.snapshotting_intervals.get(type(aggregate))
            if interval and aggregate is not None and event.originator_version % interval == 0:
                due[aggregate.id] = aggregate
        if not due:
            return
        try:
            self.snapshots.put([_snapshot_class(self, a).take(a) for a in due.values()])
        except Exception:
            logger.exception("snapshot failed after a committed save; continuing without")

    # -- the EventSource port (muto.projections.source) -------------------------------

    def position(self) -> int:
        """The id of the last notification in the log (0 when empty)."""
        return self.recorder.max_notification_id() or 0

    def select(self, after: int, limit: int, until: int | None = None) -> Sequence[Notification]:
        """Records after `after`: this process's own latest ones from memory, when they
        follow `after` without a hole; otherwise from the log. Fewer than `limit` (and
        short of `until`): no more were stored when read."""
        return self.recent.run(after, limit, until) or self.recorder.select_notifications(
            start=after, limit=limit, stop=until, inclusive_of_start=False
        )

    def decode(self, record: Notification) -> Any:
        return self.mapper.to_domain_event(record)


def _snapshot_class(log: EventLog, aggregate: Aggregate) -> Any:
    """The aggregate's own `Snapshot` class if it has one, else the application's (the
    library's rule)."""
    return getattr(type(aggregate), "Snapshot", type(log).snapshot_class)
