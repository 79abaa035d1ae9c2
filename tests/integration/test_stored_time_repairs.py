"""A store written before two bounds were added still reads (docs/event-store.md): a
reconcile report whose `observedAt` converts to a UTC time no datetime holds
(`0001-01-01T00:00:00+01:00`), and a rollout whose canary deadline, wave deadline or bake
no date can hold (1e300 s), were accepted until 2026-12 and stopped every view behind
them, on every pass, and the server's start after a restart. They are written here
straight into the store (a Struct built by its constructor, or patched, is not
validated), and read back within range: the views catch up past them, equal a rebuild,
and a reopened store works and takes writes."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import msgspec
import pytest

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import record_reconcile
from muto.cloud.commands.vehicles import registered_vehicle
from muto.cloud.settings import Settings
from muto.cloud.writer import Command, UnitOfWork
from muto.domain.desired import StackRef
from muto.domain.events import RolloutPolicy, StoredReconcile
from muto.domain.model.rollout import Rollout
from muto.domain.report_order import EARLIEST_UTC, LATEST_UTC
from muto.domain.requests import RolloutThresholds
from muto.domain.rollout_rules import MAX_PHASE_SEC
from tests.support.spine import reconcile_report, register_fleet, registration, view_rows

VEHICLE = "car-1"
STARTED = "2026-12-01T00:00:00+00:00"


class Planes:
    """The control plane of the test's store, reopened on demand (a restart)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.now = ControlPlane.open(settings)

    def restart(self) -> ControlPlane:
        self.now.close()
        self.now = ControlPlane.open(self.settings)
        return self.now


@pytest.fixture
def planes(store_settings: Settings) -> Iterator[Planes]:
    opened = Planes(store_settings)
    register_fleet(opened.now, [registration(VEHICLE), registration("car-2")])
    try:
        yield opened
    finally:
        opened.now.close()


def restarts(planes: Planes, views: dict[str, list[dict[str, object]]]) -> None:
    """The store opens (its catch-up passes the event), shows the same views and takes
    writes."""
    reopened = planes.restart()
    reopened.projector.catch_up()
    assert view_rows(reopened.views) == views
    register_fleet(reopened, [registration("after-restart")])
    assert reopened.queries.vehicle("after-restart").vehicle_id == "after-restart"


def report_observed(report_id: str, observed_at: str, version: str) -> Command[bool]:
    """A report stored with `observedAt` as the wire accepted it before the bound."""

    def command(uow: UnitOfWork) -> bool:
        valid = reconcile_report(VEHICLE, report_id, running=StackRef(name="core", version=version))
        stored = StoredReconcile.of(valid)
        msgspec.structs.force_setattr(stored, "observed_at", observed_at)
        vehicle = registered_vehicle(uow, VEHICLE)
        return bool(vehicle.record_reconcile(stored, f"vehicle:{VEHICLE}", report_id))

    return command


def rollout_with(thresholds: RolloutThresholds) -> Command[str]:
    """A rollout started with limits the API accepted before the bound."""

    def command(uow: UnitOfWork) -> str:
        rollout = Rollout(
            rollout_id="ro-huge",
            selector="model=m3",
            release_key="core@2.0.0",
            manifest_digest="sha256:" + "0" * 64,
            policy=RolloutPolicy(),
            thresholds=thresholds,
            canaries=[VEHICLE],
            wave=["car-2"],
            previous_releases={VEHICLE: None, "car-2": None},
            started_at=STARTED,
            actor="controller",
            correlation_id="ro-huge",
        )
        # The canary phase starts: its deadline is computed (where the views stopped).
        rollout.record_assigned("canary", "rev-1", [VEHICLE], STARTED, "controller", "ro-huge")
        uow.add(rollout)
        return "ro-huge"

    return command


def shown(cp: ControlPlane) -> tuple[str | None, str | None]:
    cp.projector.catch_up()
    vehicle = cp.queries.vehicle(VEHICLE)
    return vehicle.running_release, vehicle.last_report_at


@pytest.mark.parametrize(
    ("observed_at", "read"),
    [("0001-01-01T00:00:00+01:00", EARLIEST_UTC), ("9999-12-31T23:59:59-14:00", LATEST_UTC)],
)
def test_a_report_observed_beyond_utc_is_read_within_range(
    planes: Planes, observed_at: str, read: str, caplog: pytest.LogCaptureFixture
) -> None:
    plane = planes.now
    plane.writer.execute(report_observed("r-edge", observed_at, "1.0.0"))
    with caplog.at_level(logging.WARNING, logger="muto.cloud"):
        assert shown(plane) == ("core@1.0.0", read)  # the views are not stopped behind it
    repaired = [r.getMessage() for r in caplog.records if "repaired" in r.getMessage()]
    assert repaired and "Vehicle.ReconcileReported" in repaired[0], caplog.text
    assert f"observedAt {observed_at} read as {read}" in repaired[0]

    # Reports after it are placed as before (both without a journal place: the newer
    # by the vehicle's clock is shown), and the aggregate loads from the store.
    plane.log.repository.cache = None
    later = reconcile_report(
        VEHICLE, "r-next", minute=1, running=StackRef(name="core", version="1.1.0")
    )
    plane.writer.execute(record_reconcile(later, f"vehicle:{VEHICLE}"))
    # Read as year 1, it is older than the 2026 report; read as year 9999, newer.
    assert shown(plane)[0] == ("core@1.1.0" if read == EARLIEST_UTC else "core@1.0.0")

    incremental = view_rows(plane.views)
    plane.projector.rebuild("inventory")
    assert view_rows(plane.views) == incremental

    restarts(planes, incremental)


WIRE_NAMES = {"canary_deadline_sec": "canaryDeadlineSec", "wave_deadline_sec": "waveDeadlineSec",
              "bake_sec": "bakeSec"}  # fmt: skip


@pytest.mark.parametrize("name", ["canary_deadline_sec", "wave_deadline_sec", "bake_sec"])
def test_a_rollout_limit_no_date_holds_is_read_as_the_bound(
    planes: Planes, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    plane = planes.now
    thresholds = msgspec.structs.replace(RolloutThresholds(), **{name: 1e300})
    plane.writer.execute(rollout_with(thresholds))
    with caplog.at_level(logging.WARNING, logger="muto.cloud"):
        plane.projector.catch_up()
    assert plane.projector.lag() == 0
    repaired = [r.getMessage() for r in caplog.records if "repaired" in r.getMessage()]
    assert repaired and "Rollout.Started" in repaired[0], caplog.text

    wire_name = WIRE_NAMES[name]
    data = msgspec.to_builtins(plane.queries.rollout("ro-huge"))
    assert data["thresholds"][wire_name] == MAX_PHASE_SEC
    if name == "canary_deadline_sec":  # the phase it is in: its deadline is a date
        assert data["deadline"].startswith("2036-"), data

    # The aggregate, loaded from the store, decides with the bound too.
    plane.log.repository.cache = None
    loaded: Rollout = plane.log.repository.get(Rollout.create_id("ro-huge"))
    assert loaded.thresholds[wire_name] == MAX_PHASE_SEC
    assert str(loaded.deadline("canary")) == data["deadline"]

    incremental = view_rows(plane.views)
    plane.projector.rebuild("rollouts")
    assert view_rows(plane.views) == incremental
    restarts(planes, incremental)
