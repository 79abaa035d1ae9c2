"""Composition root: builds the control plane from one Settings object and runs it.
It only wires: the caches and the rules they keep are in their own modules (caches,
etags, envelopes, signing, ratelimit). The API, the MQTT bridge, the CLI and the
tests all start here: `ControlPlane.open` builds the parts, `serving` runs them in a
serving process (the change channel, the projector, the duties of its role)."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Table

from muto.cloud.caches import Caches
from muto.cloud.commands import reissue_desired_state, renew_desired_state
from muto.cloud.eventlog import EventLog
from muto.cloud.ingest import Ingest, define_health_table, define_heartbeat_table
from muto.cloud.queries import Queries
from muto.cloud.ratelimit import RoleLimits
from muto.cloud.settings import Settings
from muto.cloud.signing import Signing
from muto.cloud.snapshots import Snapshots
from muto.cloud.tokens import Authenticator
from muto.cloud.writer import Command, WritePath, Writer, Written
from muto.domain.desired import DesiredStateDocument, Envelope
from muto.projections import Views, ViewsRefused
from muto.projections.locks import Lease, Lock
from muto.projections.runner import ProjectionRunner
from muto.projections.store import ViewStore

T = TypeVar("T")
logger = logging.getLogger("muto.cloud")
# An extension (the MQTT bridge, the rollout controller): an async context manager
# factory given the control plane; what it yields joins the request state.
Extension = Callable[["ControlPlane"], Any]


@dataclass(frozen=True)
class EventCore:
    """The event log and what writes to it and reads from it: built in one place."""

    log: EventLog
    views: Views
    projector: ProjectionRunner
    writer: Writer
    writes: WritePath
    ingest: Ingest
    heartbeats: Table


def open_event_core(settings: Settings) -> EventCore:
    log = EventLog.open(settings)
    store = ViewStore(settings.views_url)
    health = define_health_table(store.metadata)
    heartbeats = define_heartbeat_table(store.metadata)
    views = Views(store)
    # Before anything is projected or written: views ahead of the log would show events
    # it does not hold and skip the next ones (ViewsAhead); rebuilding them is the
    # operator's call (settings.rebuild_views), never made here.
    try:
        if settings.rebuild_views:
            views.drop_all()
        else:
            views.refuse_ahead_of(log)
    except ViewsRefused:
        store.close()
        log.close()
        raise
    views.start()
    projector = ProjectionRunner(log, views.store, views.all)
    projector.catch_up()
    writer = Writer(log, on_saved=projector.wake)
    writer.start()
    writes = WritePath(writer, projector)
    ingest = Ingest(writes, store, health, heartbeats)
    ingest.start()
    return EventCore(log, views, projector, writer, writes, ingest, heartbeats)


@dataclass
class ControlPlane:
    settings: Settings
    log: EventLog
    writer: Writer
    writes: WritePath
    views: Views
    projector: ProjectionRunner
    queries: Queries
    auth: Authenticator
    ingest: Ingest
    signing: Signing
    caches: Caches
    limits: RoleLimits
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @classmethod
    def open(cls, settings: Settings) -> ControlPlane:
        core = open_event_core(settings)
        queries = Queries(core.views, core.heartbeats)
        auth = Authenticator(core.views)
        plane = cls(
            settings=settings,
            log=core.log,
            writer=core.writer,
            writes=core.writes,
            views=core.views,
            projector=core.projector,
            queries=queries,
            auth=auth,
            ingest=core.ingest,
            signing=Signing.from_settings(settings),
            caches=Caches(settings, core.views, queries, auth, core.ingest),
            limits=RoleLimits.from_settings(settings),
        )
        # The release keys in force are the configured ones rotated by the published chain.
        plane.signing.rotations = plane.caches.rotations.published
        core.ingest.renew = lambda vehicle_id, revision: renew_desired_state(
            vehicle_id, revision, plane.sign, lambda: plane.clock()
        )
        core.ingest.reissue = lambda vehicle_id: reissue_desired_state(
            vehicle_id, plane.sign, lambda: plane.clock()
        )
        return plane

    @functools.cached_property
    def snapshots(self) -> Snapshots:
        """What vehicles report about themselves over MQTT (agent/metadata, components)."""
        return Snapshots(self.views.store)

    def sign(self, document: DesiredStateDocument) -> Envelope:
        """Commands that assign desired states take this (signing.Signing.sign)."""
        return self.signing.sign(document)

    def execute(self, command: Command[T], views_timeout: float = 10.0) -> Written[T]:
        """Write, then wait until the views show it (read-your-writes; WritePath)."""
        return self.writes.execute(command, views_timeout)

    async def write(self, command: Command[T], views_timeout: float = 10.0) -> Written[T]:
        return await self.writes.run(command, views_timeout)

    @staticmethod
    def require_views(written: Written[T]) -> None:
        """For a handler that reads the view back: 503 that says the write is stored."""
        if not written.views_current:
            raise TimeoutError(
                f"stored at position {written.position}; the views are "
                "catching up: read it again shortly (do not repeat the write)"
            )

    def close(self) -> None:
        self.caches.stop()
        self.projector.stop()
        self.ingest.close()
        self.writer.close()
        self.projector.catch_up()
        self.views.store.close()
        self.log.close()


def duties(settings: Settings) -> list[Extension]:
    """What a process of this role runs beside the API: the rollout controller and the
    MQTT bridge, each held by one process of a deployment at a time (leases)."""
    if not settings.does_duties:
        return []
    # Imported here: both take the control plane, built above.
    from muto.cloud.controller import controller_factory
    from muto.cloud.mqtt import bridge_factory

    return [controller_factory, bridge_factory] if settings.mqtt_url else [controller_factory]


@asynccontextmanager
async def serving(
    settings: Settings, plane: ControlPlane | None = None, extensions: Sequence[Extension] = ()
) -> AsyncIterator[tuple[ControlPlane, dict[str, Any]]]:
    """Run a control plane in a serving process: yields it and the request state its
    extensions add, with `leases` (name -> Lease: the duties this process may hold).

    `plane` lets a test or an embedding process share one control plane (then it is not
    closed here). The projector follows the log where the process does duties (under
    the projector lease: one process of a deployment); an `api` process projects only
    on demand, its own writes (read-your-writes)."""
    cp = plane or ControlPlane.open(settings)
    cp.caches.listen()
    leases: dict[str, Lease] = {}
    if settings.does_duties:
        leases["projector"] = Lease(cp.views.store.engine, Lock.PROJECTOR)
        cp.projector.start(follow=leases["projector"].held)
    else:
        cp.projector.start(follow=None)
    try:
        async with AsyncExitStack() as stack:
            state: dict[str, Any] = {}
            for factory in extensions:
                found = dict(await stack.enter_async_context(factory(cp)))
                leases.update(found.pop("leases", {}))
                state.update(found)
            yield cp, {**state, "leases": leases}
    finally:
        cp.projector.stop()
        for lease in leases.values():
            lease.release()
        if plane is None:
            cp.close()
