"""Composition root: wires the event log, writer, views, projector and signer from
one Settings object. The API, the MQTT bridge, the CLI and the tests all start here."""

from __future__ import annotations

import base64
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from muto.cloud.eventlog import EventLog
from muto.cloud.ingest import Ingest, define_health_table, define_heartbeat_table
from muto.cloud.invalidation import ViewChanges
from muto.cloud.queries import Queries
from muto.cloud.ratelimit import RateLimiter
from muto.cloud.settings import Settings
from muto.cloud.snapshots import Snapshots
from muto.cloud.tokens import Authenticator, Role
from muto.cloud.writer import Command, WritePath, Writer, Written
from muto.domain.desired import DesiredStateDocument, Envelope
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import StackRelease
from muto.domain.wire import WireError, decode
from muto.projections import Views
from muto.projections.runner import ProjectionRunner
from muto.projections.store import ViewStore
from muto.trust.desired_state import sign_desired_state
from muto.trust.dsse import RELEASE_TYPE, digest
from muto.trust.files import private_dir
from muto.trust.keys import Signer, write_key_pair
from muto.trust.keyset import KeySet
from muto.trust.releases import open_release

T = TypeVar("T")
ETAG_SECONDS = 1.0
logger = logging.getLogger("muto.cloud")
CONTROL_PLANE_KEY = "control-plane.key"


def control_plane_signer(settings: Settings) -> Signer:
    """The key that signs desired-state documents: kept in the data dir, created once.
    Vehicles trust its public half (keys/control-plane.pub)."""
    if settings.is_memory:
        return Signer.generate()
    keys = settings.data_dir / "keys"
    private = keys / CONTROL_PLANE_KEY
    if not private.exists() and settings.role != "all":
        # Replicas that each made a key of their own would sign with keys the vehicles
        # do not all trust: a deployment of several processes is given one key.
        raise FileNotFoundError(
            f"{private}: the control-plane signing key is missing; --role "
            f"{settings.role} processes share one key (a Kubernetes Secret, docs/deploy.md)"
        )
    if not private.exists():
        private_dir(keys)
        write_key_pair(Signer.generate(), private, keys / "control-plane.pub")
    return Signer.load(private)


@dataclass
class ControlPlane:
    settings: Settings
    log: EventLog
    writer: Writer
    views: Views
    projector: ProjectionRunner
    queries: Queries
    auth: Authenticator
    signer: Signer
    ingest: Ingest
    release_keys: KeySet | None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _release_envelopes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # vehicle id -> (monotonic time, ETag of its latest desired state): answers a repeated
    # poll with 304 without a query. Evicted when any process projects a new assignment
    # (on PostgreSQL heard through `changes`; not trusted while that channel is down).
    _etags: dict[str, tuple[float, str]] = field(default_factory=dict)
    _etag_forgets: int = 0
    changes: ViewChanges | None = None
    # Per-token rate limits by role (muto/cloud/ratelimit.py).
    limits: dict[Role, RateLimiter] = field(default_factory=dict)
    writes: WritePath = field(init=False)

    def __post_init__(self) -> None:
        self.writes = WritePath(self.writer, self.projector)
        self.auth.trusted = self.ingest.trusted = self.caches_live
        s = self.settings
        self.limits = {
            Role.VEHICLE: RateLimiter(s.vehicle_rate_per_s, s.vehicle_burst),
            Role.OPERATOR: RateLimiter(s.operator_rate_per_s, s.operator_burst),
        }
        self.views.tokens.revoked.append(self.auth.forget)
        self.views.desired.assigned.append(self.forget_etag)
        self.views.inventory.health_changed.append(self.ingest.forget)

    def listen_for_changes(self) -> None:
        """Serving processes on PostgreSQL: hear other processes' changes (caches)."""
        if self.settings.is_postgres and self.changes is None:
            assert self.settings.database_url is not None
            self.changes = ViewChanges(self.settings.database_url, self.views, self.forget_all)
            self.changes.start()

    def caches_live(self) -> bool:
        """Whether the in-process caches hear every change now (see invalidation.py)."""
        if not self.settings.is_postgres:
            return True  # one process: its own projector announces every change
        return self.changes is not None and self.changes.live

    def forget_all(self) -> None:
        self._etag_forgets += 1
        self._etags.clear()
        self.auth.clear()
        self.ingest.forget()

    @functools.cached_property
    def snapshots(self) -> Snapshots:
        """What vehicles report about themselves over MQTT (agent/metadata, components)."""
        return Snapshots(self.views.store)

    def forget_etag(self, vehicle_id: str) -> None:
        self._etags.pop(vehicle_id, None)
        self._etag_forgets += 1

    def etag_generation(self) -> int:
        """Read before a poll's query and hand to `remember_etag`: an ETag read before an
        assignment committed must not be remembered after that assignment's eviction."""
        return self._etag_forgets

    def recent_etag(self, vehicle_id: str) -> str | None:
        found = self._etags.get(vehicle_id) if self.caches_live() else None
        if found is None or time.monotonic() - found[0] > ETAG_SECONDS:
            return None
        return found[1]

    def remember_etag(self, vehicle_id: str, etag: str, generation: int) -> None:
        if generation != self._etag_forgets:
            return  # an assignment committed meanwhile: this ETag may be the old one
        if len(self._etags) > 1_000_000:
            self._etags.clear()
        self._etags[vehicle_id] = (time.monotonic(), etag)

    @classmethod
    def open(cls, settings: Settings) -> ControlPlane:
        log = EventLog.open(settings)
        store = ViewStore(settings.views_url)
        health = define_health_table(store.metadata)
        heartbeats = define_heartbeat_table(store.metadata)
        views = Views(store)
        views.start()
        projector = ProjectionRunner(log, views.store, views.all)
        projector.catch_up()
        writer = Writer(log, on_saved=projector.wake)
        writer.start()
        ingest = Ingest(writer, projector, store, health, heartbeats)
        ingest.start()
        keys = [p.read_text() for p in settings.release_keys]
        return cls(
            settings,
            log,
            writer,
            views,
            projector,
            Queries(views, heartbeats),
            Authenticator(views),
            control_plane_signer(settings),
            ingest,
            KeySet(keys=keys) if keys else None,
        )

    def open_release(self, envelope: Envelope) -> tuple[StackRelease, str]:
        """Decode (and, with release keys configured, verify) a signed release."""
        if self.release_keys is not None:
            return open_release(envelope, self.release_keys)
        if envelope.payload_type != RELEASE_TYPE:
            raise ReasonError(
                ReasonCode.VERIFY_SIGNATURE_FAILED, f"payloadType must be {RELEASE_TYPE}"
            )
        try:
            payload = base64.b64decode(envelope.payload, validate=True)
        except ValueError:
            raise WireError("payload is not base64", "$.payload") from None
        return decode(payload, StackRelease), digest(payload)

    def release_envelope(self, release_key: str) -> dict[str, Any]:
        """Releases are immutable, so their envelopes are cached forever."""
        found = self._release_envelopes.get(release_key)
        if found is None:
            found = self._release_envelopes[release_key] = self.queries.release_envelope(
                release_key
            )
        return found

    def sign(self, document: DesiredStateDocument) -> Envelope:
        return sign_desired_state(document, self.signer)

    @property
    def public_key_path(self) -> Path:
        return self.settings.data_dir / "keys" / "control-plane.pub"

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
        if self.changes is not None:
            self.changes.stop()
        self.projector.stop()
        self.ingest.close()
        self.writer.close()
        self.projector.catch_up()
        self.views.store.close()
        self.log.close()
