"""Report ingest: reconcile reports are events (group-committed by the Writer); health
reports update a latest-health table, and only health *transitions* become events;
presence heartbeats update a heartbeat table (presence *changes* are events)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import JSON, Column, Float, MetaData, String, Table

from muto.cloud.commands import Reissued, record_health, record_reconcile
from muto.cloud.writer import Command, Touching, UnitOfWork, WritePath, Written
from muto.domain.model.vehicle import Vehicle
from muto.domain.reasons import ReasonCode
from muto.domain.reports import HealthReport, ReconcileReport, ReconcileStatus
from muto.domain.wire import encode
from muto.projections.rows import LatestRows
from muto.projections.store import ViewStore

FLUSH_SECONDS = 1.0
MAX_VEHICLES = 2_000_000  # beyond that the status memory starts again (a bound)
logger = logging.getLogger("muto.cloud")


def define_health_table(metadata: MetaData) -> Table:
    """Latest health report per vehicle. Not a projection: periodic health is not an
    event firehose, so this table is written directly and is not rebuilt from the log."""
    return Table(
        "health_latest",
        metadata,
        Column("vehicle_id", String(128), primary_key=True),
        Column("status", String(16), nullable=False),
        Column("observed_at", String(40), nullable=False),
        Column("report", JSON, nullable=False),
    )


def define_heartbeat_table(metadata: MetaData) -> Table:
    """The last online heartbeat heard per vehicle, by the cloud's clock (a vehicle's is
    untrusted), and the interval the vehicle announced: what makes it stale. Written
    directly, like health_latest: a heartbeat is not an event."""
    return Table(
        "presence_heartbeats",
        metadata,
        Column("vehicle_id", String(128), primary_key=True),
        Column("heard_at", String(40), nullable=False),
        Column("heartbeat_s", Float),
    )


def said(report: HealthReport) -> str:
    """What a health report says that the views show: its status and reason codes. A
    report that says the same as the vehicle's last transition needs no write."""
    if not report.reason_codes:
        return report.status.value
    return " ".join((report.status.value, *map(str, report.reason_codes)))


class Ingest:
    def __init__(
        self,
        writes: WritePath,
        store: ViewStore,
        health_table: Table,
        heartbeat_table: Table,
    ) -> None:
        self.writes = writes
        self.store = store
        self.health_table = health_table
        self.heartbeat_table = heartbeat_table
        # Last known health status per vehicle: a report with the same status needs no
        # write. Forgotten when any process stores a transition (`forget`); not trusted
        # while `trusted()` says this process may miss one (cloud.invalidation).
        self._status: dict[str, str] = {}
        # Evictions per vehicle, and of everything (`_epoch`): a status is remembered
        # only if no other transition of its vehicle was evicted while its write ran
        # (`_remember`), so a status read before another transition is never kept.
        self._evictions: dict[str, int] = {}
        self._epoch = 0
        self._status_lock = threading.Lock()  # evictions come from the projector's thread
        self.trusted: Callable[[], bool] = lambda: True
        # What re-signs a vehicle's desired state it refused as expired (wired by the
        # control plane, which holds the signing key): commands.renew_desired_state.
        self.renew: Callable[[str, str], Command[int | None]] | None = None
        # And what re-issues the desired state of a vehicle whose report shows it ahead
        # of this cloud (restored from a backup): commands.reissue_desired_state.
        self.reissue: Callable[[str], Command[Reissued | None]] | None = None
        # Rows not flushed yet, in their table's column order: the latest health report
        # (vehicle_id, status, observed_at, report as JSON text) and heartbeat per vehicle.
        self._pending: dict[str, tuple[str, str, str, str]] = {}
        self._heard: dict[str, tuple[str, str, float | None]] = {}
        self._health_rows = LatestRows(health_table, newer_at="observed_at")
        self._heartbeat_rows = LatestRows(heartbeat_table, newer_at="heard_at")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._flush_loop, name="muto-health", daemon=True)

    def start(self) -> None:
        """Flush health and heartbeats every FLUSH_SECONDS from now on."""
        self._thread.start()

    async def reconcile(self, report: ReconcileReport, actor: str) -> Written[bool]:
        """Record the report; a vehicle it shows ahead of this cloud has its desired
        state re-issued in the same write (checked there: one comparison), and one that
        refused its document as expired has it renewed."""
        record = record_reconcile(report, actor)
        if self.reissue is None:
            written = await self.writes.run(record)
        else:
            both = await self.writes.run(_recorded_then(report, record, self.reissue))
            recorded, reissued = both.value
            if reissued is not None:
                _warn_reissued(reissued)
            written = Written(recorded, both.position, both.views_current)
        revision = report.desired_state_revision
        # Also for a report stored before (a resend: the renewal after it may have failed);
        # a renewal already made leaves nothing to renew (`renew_desired_state`).
        if revision is not None and self.renew is not None and _expired(report):
            await self.writes.run(self.renew(report.vehicle_id, revision))
        return written

    def unchanged(self, report: HealthReport) -> bool:
        """Whether the report's status and reason codes are the vehicle's known ones (no
        write needed)."""
        return self.trusted() and self._status.get(report.vehicle_id) == said(report)

    async def health(self, report: HealthReport, actor: str) -> bool:
        """True when the status or its codes changed (a HealthChanged event was stored). A vehicle
        this process has not seen yet goes through the writer, which refuses unknown
        vehicles before anything is kept."""
        if self.keep_if_unchanged(report):
            return False
        vehicle_id = report.vehicle_id
        mark = (self._epoch, self._evictions.get(vehicle_id, 0))
        written = await self.writes.run(record_health(report, actor))
        if written.value is None:  # no news: what it says is not the vehicle's health
            return False
        if written.views_current:
            self._remember(vehicle_id, said(report), mark, written.value)
        self._keep(report)
        return written.value

    def keep_if_unchanged(self, report: HealthReport) -> bool:
        """Keep the report as its vehicle's latest health if its status and codes are
        the known ones (True: nothing else to write), without a write or a wait: the fast lane's
        answer to most health reports."""
        if not self.unchanged(report):
            return False
        self._keep(report)
        return True

    def _keep(self, report: HealthReport) -> None:
        """The report as its vehicle's latest health, flushed within FLUSH_SECONDS
        (an older report than the one kept changes nothing). Times compare as UTC
        text: a vehicle's own offset would order them by their digits."""
        observed_at = report.observed_at.astimezone(UTC).isoformat()
        latest = (report.vehicle_id, report.status.value, observed_at, encode(report).decode())
        with self._lock:
            previous = self._pending.get(report.vehicle_id)
            if previous is None or previous[2] <= observed_at:
                self._pending[report.vehicle_id] = latest

    def heartbeat(self, vehicle_id: str, heartbeat_s: float | None) -> None:
        """An online presence was heard now (a registered vehicle's, stored already)."""
        heard = (vehicle_id, datetime.now(UTC).isoformat(), heartbeat_s)
        with self._lock:
            self._heard[vehicle_id] = heard

    def _remember(
        self, vehicle_id: str, status: str, mark: tuple[int, int], transition: bool
    ) -> None:
        """After the write's commit and its views, so after its own transition's
        eviction when this process projected it (on SQLite, always: one process). Kept
        only if no other eviction of the vehicle came since the write began. On
        PostgreSQL a transition is not remembered at all: its eviction may come from
        this process's projector, another's, and again as its NOTIFY, at any time."""
        own = 1 if transition and not self.store.is_postgres else 0
        with self._status_lock:
            epoch, evictions = mark
            if epoch != self._epoch or self._evictions.get(vehicle_id, 0) - evictions > own:
                return
            if len(self._status) >= MAX_VEHICLES:
                self._forget_all()
            self._status[vehicle_id] = status

    def forget(self, vehicle_id: str | None = None) -> None:
        """A health transition was stored (None: maybe some were missed)."""
        with self._status_lock:
            if vehicle_id is None:
                self._forget_all()
            else:
                self._status.pop(vehicle_id, None)
                if len(self._evictions) >= MAX_VEHICLES:
                    self._forget_all()
                self._evictions[vehicle_id] = self._evictions.get(vehicle_id, 0) + 1

    def _forget_all(self) -> None:
        self._epoch += 1
        self._status.clear()
        self._evictions.clear()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
            heard, self._heard = list(self._heard.values()), {}
        if not pending and not heard:
            return
        try:
            with self.store.writing() as session:
                self._health_rows.write(session, pending)
                self._heartbeat_rows.write(session, heard)
        except Exception:
            with self._lock:  # kept for the next flush, unless newer ones came meanwhile
                for row in pending:
                    self._pending.setdefault(row[0], row)
                for beat in heard:
                    self._heard.setdefault(beat[0], beat)
            raise

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            try:
                self.flush()
            except Exception:  # the rows wait for the next tick; the loop goes on
                logger.exception("health and heartbeat flush failed; retrying")

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.flush()


def _recorded_then(
    report: ReconcileReport,
    record: Command[bool],
    reissue: Callable[[str], Command[Reissued | None]],
) -> Command[tuple[bool, Reissued | None]]:
    """The report recorded, then (a new report only) the vehicle's re-issue if it is
    ahead: one command, so that the common case costs no second write."""
    then = reissue(report.vehicle_id)

    def command(uow: UnitOfWork) -> tuple[bool, Reissued | None]:
        recorded = record(uow)
        return recorded, then(uow) if recorded else None

    return Touching((Vehicle.create_id(report.vehicle_id),), command)


def _warn_reissued(reissued: Reissued) -> None:
    relation = "above" if reissued.reported > reissued.issued else "another document at"
    logger.warning(
        "vehicle %s reported taking desired-state sequence %d, %s the %d this cloud "
        "issued it (a control plane restored from a backup?): its desired state, "
        "revision %s, re-issued under sequence %d",
        reissued.vehicle_id,
        reissued.reported,
        relation,
        reissued.issued,
        reissued.revision,
        reissued.sequence,
    )


def _expired(report: ReconcileReport) -> bool:
    return (
        report.status is ReconcileStatus.REJECTED
        and ReasonCode.DESIRED_STATE_EXPIRED in report.reason_codes
    )
