"""A view whose meaning changed with the same columns (`Projection.version`) is rebuilt
from the log when the store opens (ViewStore.reshape): an upgraded deployment's rollouts
view said `rolled_back` for every member given a rollback, confirmed or not; after the
upgrade it says `rolling_back` until the member confirms. A store at the current versions
rebuilds nothing (docs/event-store.md, "Projections and tracking")."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import text

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import assign_desired_state, record_reconcile
from muto.cloud.rollouts import roll_back, start_rollout
from muto.cloud.settings import Settings
from muto.domain.desired import StackRef
from muto.domain.model.vehicle import Vehicle
from muto.domain.requests import RolloutRequest
from muto.projections import Views
from muto.projections.rollouts import RolloutProgress
from muto.projections.store import VERSIONS_TABLE, ViewStore
from tests.support.releases import signed_release
from tests.support.spine import (
    cause,
    desired_request,
    postgres_settings,
    reconcile_report,
    register_fleet,
    registration,
    view_rows,
)

CAR = "v-eu-m3-1"
REBUILT = "view rollouts changed meaning (version 3, built by 1): rebuilding it from the log"


def given_a_rollback_not_taken(cp: ControlPlane) -> None:
    """CAR ran 1.0.0, rollout ro-1 gave it 2.0.0, which it ran, and was rolled back: it
    has not reported on its rollback revision (away)."""
    register_fleet(cp, [registration(CAR, ring="1")])
    old, new = signed_release(version="1.0.0"), signed_release(version="2.0.0")
    cp.execute(old.register())
    cp.execute(new.register())
    given = cp.execute(
        assign_desired_state(desired_request("ring=1", old), [CAR], cause(), cp.sign)
    ).value
    report(cp, given.revision, "1.0.0", 1)
    request = RolloutRequest(selector="ring=1", stack="core", version="2.0.0", rollout_id="ro-1")
    cp.execute(start_rollout(request, [CAR], [], cause(), cp.sign, cp.clock))
    vehicle: Vehicle = cp.log.repository.get(Vehicle.create_id(CAR))
    assert vehicle.assignment is not None
    report(cp, vehicle.assignment["revision"], "2.0.0", 2)
    assert cp.execute(roll_back("ro-1", cause(), cp.sign, cp.clock)).value == 1
    cp.projector.catch_up()


def report(cp: ControlPlane, revision: str, version: str, n: int) -> None:
    running = StackRef(name="core", version=version)
    made = reconcile_report(CAR, f"{CAR}-{n}", revision=revision, running=running)
    cp.execute(record_reconcile(made, f"vehicle:{CAR}"))


def member(cp: ControlPlane) -> str:
    view = msgspec.to_builtins(cp.queries.rollout("ro-1"))
    (status,) = [m["status"] for m in view["vehicles"] if m["vehicleId"] == CAR]
    return str(status)


def as_the_old_code_built_it(cp: ControlPlane, versions: str) -> None:
    """The rows version 1 built (a member given a rollback read `rolled_back` at once),
    with the versions an older store holds: `none` (stored before there were versions)
    or `1`."""
    with cp.views.store.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE view_rollout_vehicles SET status = 'rolled_back' "
                "WHERE status = 'rolling_back'"
            )
        )
        if versions == "none":
            connection.execute(text(f"DELETE FROM {VERSIONS_TABLE}"))
        else:
            connection.execute(
                text(f"UPDATE {VERSIONS_TABLE} SET version = 1 WHERE projection = 'rollouts'")
            )


def said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "muto.projections"]


@pytest.mark.parametrize("versions", ["none", "1"])
def test_a_view_built_by_an_older_meaning_is_rebuilt_when_the_store_opens(
    store_settings: Settings, caplog: pytest.LogCaptureFixture, versions: str
) -> None:
    cp = ControlPlane.open(store_settings)
    try:
        given_a_rollback_not_taken(cp)
        assert member(cp) == "rolling_back"
        before, positions = view_rows(cp.views), cp.projector.positions()
        as_the_old_code_built_it(cp, versions)
        assert member(cp) == "rolled_back"
    finally:
        cp.close()
    with caplog.at_level(logging.WARNING, logger="muto.projections"):
        cp = ControlPlane.open(store_settings)
    try:
        assert said(caplog) == [REBUILT]
        assert member(cp) == "rolling_back"
        assert view_rows(cp.views) == before
        assert cp.projector.positions() == positions  # the others kept theirs
    finally:
        cp.close()


def test_a_store_at_the_current_versions_rebuilds_nothing(
    store_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Reopened at the same versions, no view is rebuilt: a row changed behind the
    view's back stays as it is (a rebuild would have restored it)."""
    cp = ControlPlane.open(store_settings)
    try:
        given_a_rollback_not_taken(cp)
        with cp.views.store.engine.begin() as connection:
            connection.execute(text("UPDATE view_rollout_vehicles SET status = 'marked'"))
    finally:
        cp.close()
    for _ in range(2):
        with caplog.at_level(logging.WARNING, logger="muto.projections"):
            cp = ControlPlane.open(store_settings)
        try:
            assert said(caplog) == []
            assert member(cp) == "marked"
        finally:
            cp.close()


def test_a_new_version_of_a_view_rebuilds_it_once(
    store_settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A view built at version 3 and opened by code at version 4 is rebuilt; the next
    open, at 4 too, rebuilds nothing."""
    cp = ControlPlane.open(store_settings)
    try:
        given_a_rollback_not_taken(cp)
        before = view_rows(cp.views)
    finally:
        cp.close()
    monkeypatch.setattr(RolloutProgress, "version", 4)
    for expected in (
        ["view rollouts changed meaning (version 4, built by 3): rebuilding it from the log"],
        [],
    ):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="muto.projections"):
            cp = ControlPlane.open(store_settings)
        try:
            assert said(caplog) == expected
            assert view_rows(cp.views) == before
        finally:
            cp.close()


@pytest.mark.postgres
def test_processes_opening_together_rebuild_an_old_view_once(
    tmp_path: Path, postgres_url: str
) -> None:
    """Several processes on one PostgreSQL open the views at once (an upgrade restarts
    them together): they take turns on the projector lock, the first drops the old
    view and stores its version, the others find it current."""
    settings = postgres_settings(postgres_url, tmp_path)
    cp = ControlPlane.open(settings)
    try:
        given_a_rollback_not_taken(cp)
        as_the_old_code_built_it(cp, "none")
    finally:
        cp.close()
    stores = [ViewStore(settings.views_url) for _ in range(3)]
    rebuilt: list[list[str]] = []
    ready = threading.Barrier(len(stores))

    def start(store: ViewStore) -> None:
        views = Views(store)
        ready.wait()
        rebuilt.append(views.start())

    threads = [threading.Thread(target=start, args=(s,)) for s in stores]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        for store in stores:
            store.close()
    assert sorted(rebuilt) == [[], [], ["rollouts"]]
    cp = ControlPlane.open(settings)
    try:
        assert member(cp) == "rolling_back"
    finally:
        cp.close()
