"""One contract for the event store, proved on every backend.

`EventStoreContract` holds the assertions; `TestMemory`, `TestSQLite` and `TestPostgres`
only say how to open the backend. `DurableContract` adds what only a real database
can show: two writers racing on one aggregate, and data surviving a restart.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.application import Repository
from eventsourcing.persistence import IntegrityError

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import (
    Assignment,
    assign_desired_state,
    record_health,
    record_presence,
    record_reconcile,
    register_vehicle,
    update_vehicle,
)
from muto.cloud.commands.releases import Registration
from muto.cloud.errors import Conflict, Invalid, NotFound
from muto.cloud.eventlog import EventLog
from muto.cloud.settings import Settings
from muto.cloud.writer import MAX_ATTEMPTS, UnitOfWork, Writer
from muto.domain.events import HealthSummary
from muto.domain.model.release import Release
from muto.domain.model.vehicle import Vehicle
from muto.domain.reasons import ReasonCode
from muto.domain.reports import HealthStatus, ReconcileStatus
from muto.domain.requests import VehiclePatch
from muto.trust.dsse import cosign
from muto.trust.keys import Signer
from muto.trust.releases import sign_release
from tests.support.releases import signed_release
from tests.support.spine import (
    cause,
    desired_request,
    fleet,
    health_report,
    memory_settings,
    postgres_settings,
    reconcile_report,
    register_fleet,
    registration,
    sqlite_settings,
    view_rows,
)


def stored_elsewhere(settings: Settings, vehicle_id: UUID, *states: str) -> None:
    """Another process (an event log of its own on the same store) stores a vehicle's
    presence changes."""
    other = EventLog.open(settings)
    try:
        for state in states:
            found = other.repository.get(vehicle_id)
            assert found.record_presence(state, None, "rival", "c")
            other.save(found)
    finally:
        other.close()


class EventStoreContract:
    """Assertions every backend must pass. Subclasses provide the `settings` fixture."""

    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        raise NotImplementedError

    @pytest.fixture
    def cp(self, settings: Settings) -> Iterator[ControlPlane]:
        plane = ControlPlane.open(settings)
        try:
            yield plane
        finally:
            plane.close()

    def assign(self, cp: ControlPlane, vehicle_ids: list[str], release: Any) -> Assignment:
        request = desired_request("model=m3", release)
        return cp.execute(assign_desired_state(request, vehicle_ids, cause(), cp.sign)).value

    def sequences(self, cp: ControlPlane, vehicle_ids: list[str]) -> dict[str, int]:
        return {v: cp.queries.vehicle(v).sequence for v in vehicle_ids}

    # -- vehicles -------------------------------------------------------------------------

    def test_register_is_idempotent_and_refuses_a_conflicting_twin(self, cp: ControlPlane) -> None:
        body = registration("v1")
        assert cp.execute(register_vehicle(body, cause())).value == (True, 1)
        position = cp.log.position()

        assert cp.execute(register_vehicle(body, cause())).value == (False, 1)
        assert cp.log.position() == position

        with pytest.raises(Conflict):
            cp.execute(register_vehicle(registration("v1", region="us"), cause()))
        assert cp.log.position() == position
        assert cp.queries.vehicle("v1").labels == {"model": "m3", "region": "eu"}

    def test_patch_with_expected_version(self, cp: ControlPlane) -> None:
        register_fleet(cp, [registration("v1", ring="beta")])
        patch = VehiclePatch(labels={"region": "us", "ring": None})

        assert cp.execute(update_vehicle("v1", patch, cause(), expected_version=1)).value == 2
        with pytest.raises(Conflict) as stale:
            cp.execute(update_vehicle("v1", patch, cause(), expected_version=1))
        assert stale.value.details == {"expectedVersion": 1, "actualVersion": 2}

        vehicle = cp.queries.vehicle("v1")
        assert vehicle.labels == {"model": "m3", "region": "us"}
        assert vehicle.version == 2
        with pytest.raises(NotFound):
            cp.execute(update_vehicle("ghost", patch, cause()))

    # -- releases -------------------------------------------------------------------------

    def test_releases_are_immutable(self, cp: ControlPlane) -> None:
        release = signed_release("core", "1.0.0")
        assert cp.execute(release.register()).value == Registration(created=True)
        position = cp.log.position()

        assert cp.execute(release.register()).value == Registration(created=False)
        assert cp.log.position() == position

        other = signed_release("core", "1.0.0", size=2)
        with pytest.raises(Conflict) as refused:
            cp.execute(other.register())
        assert refused.value.details == {
            "registeredDigest": release.digest,
            "digest": other.digest,
        }
        assert cp.log.position() == position
        assert cp.queries.release("core", "1.0.0").manifest_digest == release.digest

    def test_signatures_are_added_to_a_release_never_its_content(self, cp: ControlPlane) -> None:
        release = signed_release("core", "1.0.0")
        cp.execute(release.register())
        second = Signer.generate()
        cosigned = cosign(release.envelope, second)
        position = cp.log.position()

        added = cp.execute(release.register_envelope(cosigned))
        assert added.value == Registration(created=False, added=(second.keyid,))
        assert added.position == position + 1
        cp.projector.catch_up()
        shown = cp.queries.release("core", "1.0.0")
        assert shown.envelope == cosigned  # both signatures, in order
        assert shown.manifest_digest == release.digest
        assert cp.queries.release_envelope(release.key)[1] == 1
        stored = cp.log.repository.get(Release.create_id(release.key))
        assert (stored.version, stored.envelope) == (2, cosigned)

        # The same signatures again, or fewer: nothing new, nothing stored.
        for again in (cosigned, release.envelope, sign_release(release.release, [second])):
            assert cp.execute(release.register_envelope(again)).value == Registration(False)
        assert cp.log.position() == position + 1

    # -- desired state --------------------------------------------------------------------

    def test_sequences_increase_per_vehicle_across_revisions(self, cp: ControlPlane) -> None:
        ids = register_fleet(cp, fleet(3))
        release = signed_release()
        cp.execute(release.register())

        first = self.assign(cp, ids, release)
        second = self.assign(cp, ids[:1], release)
        third = self.assign(cp, ids, release)

        assert first.sequences == dict.fromkeys(ids, 1)
        assert second.sequences == {ids[0]: 2}
        assert third.sequences == {ids[0]: 3, ids[1]: 2, ids[2]: 2}
        assert len({first.revision, second.revision, third.revision}) == 3
        assert self.sequences(cp, ids) == third.sequences
        for vehicle_id in ids:
            latest = cp.queries.desired_document(vehicle_id)
            assert latest is not None
            assert (latest.revision, latest.sequence) == (
                third.revision,
                third.sequences[vehicle_id],
            )

    def test_an_assignment_is_one_transaction(self, cp: ControlPlane) -> None:
        ids = register_fleet(cp, fleet(4))
        release = signed_release()
        cp.execute(release.register())
        before = cp.log.position()

        request = desired_request("model=m3", release)
        written = cp.execute(assign_desired_state(request, ids, cause(), cp.sign))

        # One DesiredState.Created and one assignment per vehicle, contiguous in the log,
        # the last of them the position the writer reported.
        assert written.position == before + len(ids) + 1
        events = cp.queries.audit(after=before)
        assert sorted(e.event_type for e in events) == [
            "DesiredState.Created",
            *["Vehicle.DesiredStateAssigned"] * len(ids),
        ]
        assert {e.correlation_id for e in events} == {events[0].correlation_id}

    def test_an_unknown_vehicle_assigns_nothing(self, cp: ControlPlane) -> None:
        ids = register_fleet(cp, fleet(3))
        release = signed_release()
        cp.execute(release.register())
        self.assign(cp, ids, release)
        position, sequences = cp.log.position(), self.sequences(cp, ids)

        with pytest.raises(NotFound):
            self.assign(cp, [*ids, "ghost"], release)

        assert cp.log.position() == position
        assert self.sequences(cp, ids) == sequences
        vehicle = cp.log.repository.get(Vehicle.create_id(ids[0]))
        assert vehicle.sequence == 1

    def test_an_incompatible_vehicle_assigns_nothing_and_is_named(self, cp: ControlPlane) -> None:
        ids = register_fleet(
            cp,
            [
                registration("v1"),
                registration("v2", model="m9"),
                registration("v3", os="debian-12", ros_distro="iron"),
            ],
        )
        release = signed_release(models=["m3"], os=["ubuntu-22.04"], ros_distros=["humble"])
        cp.execute(release.register())
        position = cp.log.position()

        with pytest.raises(Invalid) as refused:
            self.assign(cp, ids, release)

        assert refused.value.details == [
            {"vehicleId": "v2", "reasonCodes": [ReasonCode.INCOMPATIBLE_MODEL]},
            {
                "vehicleId": "v3",
                "reasonCodes": [ReasonCode.INCOMPATIBLE_OS, ReasonCode.INCOMPATIBLE_ROS],
            },
        ]
        assert cp.log.position() == position
        assert self.sequences(cp, ids) == dict.fromkeys(ids, 0)
        assert self.assign(cp, ids[:1], release).sequences == {"v1": 1}

    # -- reports --------------------------------------------------------------------------

    def test_a_redelivered_reconcile_report_adds_no_event(self, cp: ControlPlane) -> None:
        register_fleet(cp, [registration("v1")])
        report = reconcile_report(
            "v1", "r-1", ReconcileStatus.BLOCKED, reason_codes=[ReasonCode.DENY_MOVING]
        )
        assert cp.execute(record_reconcile(report, "vehicle:v1")).value is True
        position = cp.log.position()

        assert cp.execute(record_reconcile(report, "vehicle:v1")).value is False
        assert cp.log.position() == position
        vehicle = cp.queries.vehicle("v1")
        assert (vehicle.last_status, vehicle.last_reason_codes) == ("blocked", ["DENY_MOVING"])

    def test_health_stores_transitions_only(self, cp: ControlPlane) -> None:
        register_fleet(cp, [registration("v1")])
        statuses = ["healthy", "healthy", "degraded", "degraded", "healthy"]
        changed = [
            cp.execute(record_health(health_report("v1", f"h{i}", HealthStatus(s)), "v1")).value
            for i, s in enumerate(statuses)
        ]
        assert changed == [True, False, True, False, True]
        health = [e for e in cp.queries.audit(vehicle_id="v1") if "Health" in e.event_type]
        assert [(e.data["previous"], e.data["status"]) for e in health] == [
            (None, "healthy"),
            ("healthy", "degraded"),
            ("degraded", "healthy"),
        ]
        assert cp.queries.vehicle("v1").health == "healthy"


class DurableContract(EventStoreContract):
    """What a shared, durable database adds: other processes and restarts."""

    def test_two_logs_saving_one_version_conflict(self, cp: ControlPlane) -> None:
        register_fleet(cp, [registration("v1")])
        other = EventLog.open(cp.settings)
        try:
            vehicle_id = Vehicle.create_id("v1")
            mine, theirs = cp.log.repository.get(vehicle_id), other.repository.get(vehicle_id)
            position = cp.log.position() + 1
            mine.record_presence("online", None, "test", "c1")
            theirs.record_presence("offline", None, "test", "c2")

            cp.log.save(mine)
            with pytest.raises(IntegrityError):
                other.save(theirs)

            # The loser's writer decides again against the winner's write: v1 is
            # already online, so asking for "online" stores nothing.
            loser = Writer(other)
            loser.start()
            try:
                assert loser.execute(record_presence("v1", "online", None, "t")).value is False
            finally:
                loser.close()
            assert cp.log.position() == position
        finally:
            other.close()

    def test_a_conflicting_save_stores_none_of_its_events_and_the_log_writes_on(
        self, cp: ControlPlane
    ) -> None:
        register_fleet(cp, [registration("v1"), registration("v2")])
        other = EventLog.open(cp.settings)
        try:
            v1, v2 = Vehicle.create_id("v1"), Vehicle.create_id("v2")
            theirs = other.repository.get(v2)
            fresh, stale = cp.log.repository.get(v1), cp.log.repository.get(v2)
            theirs.record_presence("online", None, "test", "c1")
            other.save(theirs)
            position = cp.log.position()
            fresh.record_presence("online", None, "test", "c2")
            stale.record_presence("offline", None, "test", "c3")

            with pytest.raises(IntegrityError):  # v2's version is taken: v1's event neither
                cp.log.save(fresh, stale)
            assert cp.log.position() == position

            again = EventLog.open(cp.settings)  # the same connection pool is still sound
            try:
                retry = again.repository.get(v1)
                retry.record_presence("online", None, "test", "c4")
                (recording,) = cp.log.save(retry)
            finally:
                again.close()
            # PostgreSQL's sequence does not give back the failed insert's ids: a gap.
            assert recording.notification.id > position
            assert cp.log.position() == recording.notification.id
            assert [n.id for n in cp.log.select(position, 10)] == [recording.notification.id]
        finally:
            other.close()

    def test_the_writer_rereads_after_another_process_wins(self, cp: ControlPlane) -> None:
        register_fleet(cp, [registration("v1")])
        other = EventLog.open(cp.settings)
        attempts: list[int] = []

        def command(uow: UnitOfWork) -> bool:
            vehicle = uow.find(Vehicle, Vehicle.create_id("v1"))
            assert vehicle is not None
            attempts.append(vehicle.version)
            if len(attempts) == 1:  # another process writes between our read and save
                rival = other.repository.get(vehicle.id)
                rival.record_presence("offline", None, "rival", "c")
                other.save(rival)
            summary = HealthSummary(report_id="h1", reason_codes=[], observed_at="t")
            return bool(vehicle.record_health("healthy", summary, "test", "c"))

        try:
            assert cp.execute(command).value is True
        finally:
            other.close()
        assert attempts == [1, 2]
        assert cp.queries.vehicle("v1").presence == "offline"
        assert cp.queries.vehicle("v1").health == "healthy"

    def test_after_a_conflict_a_stale_cached_vehicle_is_brought_up_to_date_before_saving(
        self, cp: ControlPlane, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Once another process's write has made a save conflict, the writer brings the
        vehicles a command names up to date before running it (one query for their
        tails): a vehicle the other process moved again saves at the first attempt,
        where a save on the stale vehicle fails and the command runs twice."""
        register_fleet(cp, [registration("v1")])
        vehicle_id = Vehicle.create_id("v1")
        saves: list[int] = []
        recorder = cp.log.recorder
        insert = recorder.insert_events

        def counted(*args: Any, **kwargs: Any) -> Any:
            saves.append(len(args[0]))
            return insert(*args, **kwargs)

        monkeypatch.setattr(recorder, "insert_events", counted)
        stored_elsewhere(cp.settings, vehicle_id, "online")  # version 2 there, 1 here
        assert cp.execute(record_presence("v1", "offline", None, "t")).value is True
        assert saves == [1, 1]  # the stale save failed, the second stored
        stored_elsewhere(cp.settings, vehicle_id, "online")  # version 4 there, 3 here
        saves.clear()
        assert cp.execute(record_presence("v1", "offline", None, "t")).value is True
        assert saves == [1]
        cached = cp.log.repository.get(vehicle_id, deepcopy_from_cache=False)
        assert (cached.version, cached.presence) == (5, "offline")
        assert cp.queries.vehicle("v1").presence == "offline"

    def test_fast_forward_applies_what_other_processes_stored_to_cached_aggregates(
        self, cp: ControlPlane
    ) -> None:
        """`EventLog.fast_forward`: the cached aggregates among those named, each brought
        to what a fresh load gives, in one query; uncached ones are left alone."""
        register_fleet(cp, [registration(v) for v in ("v1", "v2", "v3")])
        v1, v2, v3 = (Vehicle.create_id(v) for v in ("v1", "v2", "v3"))
        cache = cp.log.repository.cache
        assert cache is not None
        with contextlib.suppress(KeyError):
            cache.get(v3, evict=True)
        stored_elsewhere(cp.settings, v1, "online", "offline")
        stored_elsewhere(cp.settings, v3, "online")
        assert cp.log.fast_forward([v1, v2, v3]) == 1
        fresh = EventLog.open(cp.settings)
        try:
            loaded = fresh.repository.get(v1)
        finally:
            fresh.close()
        cached = cp.log.repository.get(v1, deepcopy_from_cache=False)
        assert (cached.version, cached.presence) == (3, "offline")
        assert cached.__dict__ == loaded.__dict__
        assert cp.log.repository.get(v2, deepcopy_from_cache=False).version == 1
        assert v3 not in cache.cache  # not cached: not loaded either

    def test_an_aggregate_that_cannot_be_fast_forwarded_is_evicted(
        self, cp: ControlPlane, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        register_fleet(cp, [registration("v1")])
        vehicle_id = Vehicle.create_id("v1")
        stored_elsewhere(cp.settings, vehicle_id, "online")

        def undecodable(stored: Any) -> Any:
            raise ValueError("not this one")

        with monkeypatch.context() as patched:
            patched.setattr(cp.log.mapper, "to_domain_event", undecodable)
            assert cp.log.fast_forward([vehicle_id]) == 1
        cache = cp.log.repository.cache
        assert cache is not None and vehicle_id not in cache.cache
        assert cp.log.repository.get(vehicle_id).presence == "online"  # loaded whole

    def test_a_decision_to_store_nothing_is_not_made_on_a_stale_cache(
        self, cp: ControlPlane
    ) -> None:
        """The writer's cache is validated when a batch saves, also for commands that
        store nothing: "already online" must not be answered from a cached vehicle that
        another process has since set offline."""
        register_fleet(cp, [registration("v1")])
        cp.execute(record_presence("v1", "online", None, "t"))  # cached here: online
        stored_elsewhere(cp.settings, Vehicle.create_id("v1"), "offline")
        assert cp.execute(record_presence("v1", "online", None, "t")).value is True
        assert cp.queries.vehicle("v1").presence == "online"

    def test_a_refusal_is_not_decided_on_a_stale_cache(self, cp: ControlPlane) -> None:
        """A PATCH naming the version another process just wrote is not refused because
        this process's cached vehicle is one version behind."""
        register_fleet(cp, [registration("v1")])
        vehicle_id = Vehicle.create_id("v1")
        assert cp.log.repository.get(vehicle_id).version == 1  # cached here
        stored_elsewhere(cp.settings, vehicle_id, "offline")
        patch = VehiclePatch(labels={"ring": "beta"})
        cp.execute(update_vehicle("v1", patch, cause(), expected_version=2))
        assert cp.queries.vehicle("v1").labels["ring"] == "beta"

    def test_a_command_insisting_on_a_stale_version_ends_in_conflict(
        self, cp: ControlPlane
    ) -> None:
        register_fleet(cp, [registration("v1")])
        vehicle_id = Vehicle.create_id("v1")
        cp.execute(update_vehicle("v1", VehiclePatch(labels={"ring": "beta"}), cause()))
        position = cp.log.position()
        attempts = 0

        def command(uow: UnitOfWork) -> None:
            nonlocal attempts
            attempts += 1
            stale = uow.log.repository.get(vehicle_id, version=1)
            uow.add(stale)  # saved as if version 1 were current
            stale.record_presence("online", None, "test", "c")

        with pytest.raises(Conflict):
            cp.execute(command)
        assert attempts == MAX_ATTEMPTS
        assert cp.log.position() == position

    def test_data_survives_close_and_reopen(self, settings: Settings) -> None:
        first = ControlPlane.open(settings)
        ids = register_fleet(first, fleet(3))
        release = signed_release()
        first.execute(release.register())
        first.execute(
            assign_desired_state(desired_request("model=m3", release), ids, cause(), first.sign)
        )
        first.execute(record_reconcile(reconcile_report(ids[0], "r1"), "vehicle"))
        positions, views = first.projector.positions(), view_rows(first.views)
        first.close()

        second = ControlPlane.open(settings)
        try:
            assert second.projector.processed == 0  # nothing was re-applied on open
            assert second.projector.positions() == positions
            assert view_rows(second.views) == views
            assert second.log.repository.get(Vehicle.create_id(ids[0])).sequence == 1

            second.execute(record_reconcile(reconcile_report(ids[1], "r2"), "vehicle"))
            assert second.projector.position() == max(positions.values()) + 1
            assert second.queries.vehicle(ids[1]).last_status == "converged"
            assert len(second.queries.vehicle_ids(None)) == 3
        finally:
            second.close()

    def test_a_batch_loads_the_vehicles_it_lacks_in_one_go(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """After a restart no vehicle is cached: a batch of reports loads every vehicle
        it names in one go (its latest snapshot and the events after), each exactly as
        the library's repository rebuilds it, and no command loads one alone."""
        reports = {"v0": 0, "v1": 1, "v2": 98, "v3": 99, "v4": 100, "v5": 230}
        first = ControlPlane.open(settings)
        register_fleet(first, [registration(v) for v in reports])
        release = signed_release()
        first.execute(release.register())
        futures = [
            first.writer.submit(record_reconcile(reconcile_report(v, f"{v}-{n}"), "vehicle"))
            for v, count in reports.items()
            for n in range(count)
        ]
        assert all(f.result().value for f in futures)
        first.close()
        ids = {v: Vehicle.create_id(v) for v in reports}

        log = EventLog.open(settings)
        try:
            loaded = log.load_many([*ids.values(), Vehicle.create_id("ghost")])
            assert loaded is not None and set(loaded) == set(ids.values())
            for vehicle_id, aggregate_id in ids.items():
                rebuilt = log.repository.get(aggregate_id, version=reports[vehicle_id] + 1)
                assert vars(loaded[aggregate_id]) == vars(rebuilt), vehicle_id
        finally:
            log.close()

        alone: list[object] = []
        library = Repository._reconstruct_aggregate

        def counted(repository: Any, aggregate_id: Any, *args: Any) -> Any:
            alone.append(aggregate_id)
            return library(repository, aggregate_id, *args)

        monkeypatch.setattr(Repository, "_reconstruct_aggregate", counted)
        log = EventLog.open(settings)
        try:
            writer = Writer(log)  # not started: close() runs the queue as one batch
            sick = [
                writer.submit(record_health(health_report(v, f"h-{v}", HealthStatus.DEGRADED), "v"))
                for v in reports
            ]
            writer.close()
            assert writer.batches == 1
            assert [f.result().value for f in sick] == [True] * len(reports)
            assert alone == []
            writer = Writer(log)
            ghost = health_report("ghost", "h", HealthStatus.DEGRADED)
            lone = writer.submit(record_health(ghost, "v"))
            writer.close()
            with pytest.raises(NotFound):  # one command: looked for as before
                lone.result()
            assert alone == [Vehicle.create_id("ghost")]
        finally:
            log.close()

        alone.clear()
        cp = ControlPlane.open(settings)
        try:  # an assignment names many vehicles: looked for in one go too
            request = desired_request("model=m3", release)
            cp.execute(assign_desired_state(request, list(reports), cause(), cp.sign))
            assert alone == [Release.create_id(release.key)]
        finally:
            cp.close()

    def test_a_store_written_by_the_library_recorder_opens_and_continues(
        self, settings: Settings
    ) -> None:
        """Stores written before muto.cloud.recorder (the library's own
        eventsourcing_sqlalchemy recorder, same tables muto_events / muto_snapshots)
        open unchanged: no migration."""
        env = {**EventLog.cache_env(settings), **settings.event_store_env()}
        old = EventLog(env={**env, "PERSISTENCE_MODULE": "eventsourcing_sqlalchemy"})
        writer = Writer(old)
        writer.start()
        try:
            writer.execute(register_vehicle(registration("v1"), cause()))
            for i in range(3):
                writer.execute(record_reconcile(reconcile_report("v1", f"r{i}", minute=i), "v"))
        finally:
            writer.close()
            old.close()

        cp = ControlPlane.open(settings)
        try:
            assert cp.log.position() == 4
            assert [n.id for n in cp.log.select(0, 10)] == [1, 2, 3, 4]
            assert cp.log.repository.get(Vehicle.create_id("v1")).version == 4
            written = cp.execute(record_reconcile(reconcile_report("v1", "r3", minute=3), "v"))
            assert written.position == 5
            assert cp.queries.vehicle("v1").version == 5
        finally:
            cp.close()


class TestMemory(EventStoreContract):
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        return memory_settings(tmp_path)


class TestSQLite(DurableContract):
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        return sqlite_settings(tmp_path)


@pytest.mark.postgres
class TestPostgres(DurableContract):
    @pytest.fixture
    def settings(self, tmp_path: Path, postgres_url: str) -> Settings:
        return postgres_settings(postgres_url, tmp_path)
