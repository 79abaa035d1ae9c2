"""Read models: incremental catch-up equals a rebuild, a position is applied once,
writes are readable at once, and rollout progress counts what vehicles reported."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy.exc
from eventsourcing.persistence import IntegrityError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, String, Table, select, text
from sqlalchemy.orm import Session

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import (
    Assignment,
    SignDocument,
    assign_desired_state,
    record_health,
    record_presence,
    record_reconcile,
    register_vehicle,
    update_vehicle,
)
from muto.cloud.controller import RolloutController
from muto.cloud.errors import AppError
from muto.cloud.settings import Settings
from muto.cloud.tokens import Role, issue_token, revoke_token
from muto.cloud.writer import Command, UnitOfWork
from muto.domain.desired import StackRef
from muto.domain.events import GateEvaluation, RolloutPolicy
from muto.domain.model.rollout import Rollout, RolloutStateError
from muto.domain.reasons import ReasonCode
from muto.domain.reports import HealthStatus, ReconcileStatus
from muto.domain.requests import RolloutThresholds, VehiclePatch
from muto.projections import rows as rows_module
from muto.projections import store as store_module
from muto.projections.base import Projection, Update, event_type
from muto.projections.chain import HashChain
from muto.projections.runner import ProjectionRunner
from muto.projections.store import ViewStore
from tests.support.releases import SignedRelease, signed_release
from tests.support.spine import (
    cause,
    desired_request,
    health_report,
    memory_settings,
    postgres_settings,
    reconcile_report,
    register_fleet,
    registration,
    sqlite_settings,
    table_rows,
    view_rows,
)
from tests.support.waits import eventually

AT = "2026-01-01T00:00:00+00:00"
ANY = signed_release("core", "1.0.0")
M1_ONLY = signed_release("core", "2.0.0", models=["m1"])
RELEASES = (ANY, M1_ONLY)

# -- rollout commands (the Rollout aggregate's events, written as a controller would) -----


def start_rollout(rollout_id: str, canaries: Sequence[str], wave: Sequence[str]) -> Command[str]:
    def command(uow: UnitOfWork) -> str:
        uow.add(
            Rollout(
                rollout_id=rollout_id,
                selector="model=m1",
                release_key=M1_ONLY.key,
                manifest_digest=M1_ONLY.digest,
                policy=RolloutPolicy(),
                thresholds=RolloutThresholds(converged_pct=95.0),
                canaries=list(canaries),
                wave=list(wave),
                previous_releases=dict.fromkeys([*canaries, *wave], ANY.key),
                started_at=AT,
                actor="controller",
                correlation_id=rollout_id,
            )
        )
        return rollout_id

    return command


EVALUATION = GateEvaluation(
    verdict="pass", targeted=1, converged=1, deferred=0, failed=0,
    converged_pct=100.0, threshold_pct=95.0,
)  # fmt: skip


def rollout(uow: UnitOfWork, rollout_id: str) -> Rollout:
    found = uow.find(Rollout, Rollout.create_id(rollout_id))
    if found is None:
        raise RolloutStateError(f"no rollout {rollout_id}")
    return found


def assign_phase(
    rollout_id: str,
    phase: str,
    vehicle_ids: Sequence[str],
    sign: SignDocument,
    release: SignedRelease = M1_ONLY,
) -> Command[Assignment]:
    def command(uow: UnitOfWork) -> Assignment:
        assigned = assign_desired_state(
            desired_request("model=m1", release),
            vehicle_ids,
            cause(rollout_id),
            sign,
            rollout_id=rollout_id,
            phase=phase,
        )(uow)
        rollout(uow, rollout_id).record_assigned(
            phase, assigned.revision, list(vehicle_ids), AT, "controller", rollout_id
        )
        return assigned

    return command


def roll_back(rollout_id: str, vehicle_ids: Sequence[str], sign: SignDocument) -> Command[str]:
    def command(uow: UnitOfWork) -> str:
        assigned = assign_desired_state(
            desired_request("model=m1", ANY), vehicle_ids, cause(rollout_id), sign,
            rollout_id=rollout_id,
        )(uow)  # fmt: skip
        rollout(uow, rollout_id).record_rolled_back(
            assigned.revision, list(vehicle_ids), "operator", "controller", rollout_id
        )
        return assigned.revision

    return command


def decide(rollout_id: str, decision: str) -> Command[None]:
    def command(uow: UnitOfWork) -> None:
        r = rollout(uow, rollout_id)
        match decision:
            case "pause":
                r.pause("operator", rollout_id)
            case "resume":
                r.resume("operator", rollout_id)
            case _:  # pass_canary, fail_wave, ...
                verdict, phase = decision.split("_")
                r.decide(
                    phase,
                    passed=verdict == "pass",
                    evaluation=EVALUATION,
                    actor="controller",
                    correlation_id=rollout_id,
                )

    return command


# -- a scenario: operations applied to a control plane, refusals included ---------------


class Scenario:
    """Runs operations through the Writer without waiting for the views; the views only
    move at explicit `catch_up` operations (and at the end)."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.revisions: dict[str, list[str]] = {}
        self.tokens: list[str] = []
        self.rollouts: list[tuple[str, list[str], list[str]]] = []
        self.write(ANY.register())
        self.write(M1_ONLY.register())

    def write(self, command: Command[Any]) -> Any:
        try:
            return self.cp.writer.execute(command).value
        except (AppError, RolloutStateError):
            return None  # refused: part of the history being tested

    def revision(self, vehicle_id: str, which: str) -> str | None:
        known = self.revisions.get(vehicle_id, [])
        if which == "current":
            return known[-1] if known else None
        if which == "previous":
            return known[-2] if len(known) > 1 else None
        return "dsr_unknown" if which == "unknown" else None

    def assigned(self, result: Assignment | None) -> None:
        if result is None:
            return
        for vehicle_id in result.sequences:
            self.revisions.setdefault(vehicle_id, []).append(result.revision)

    def run(self, op: tuple[Any, ...]) -> None:
        cp, sign = self.cp, self.cp.sign
        match op:
            case ("catch_up", limit):
                cp.projector.catch_up(limit)
            case ("register", vehicle_id, model, region):
                self.write(register_vehicle(registration(vehicle_id, model=model, region=region),
                                            cause()))  # fmt: skip
            case ("patch", vehicle_id, labels, expected):
                patch = VehiclePatch(labels=labels)
                self.write(update_vehicle(vehicle_id, patch, cause(), expected))
            case ("assign", vehicle_ids, release):
                request = desired_request("model=m1", RELEASES[release])
                self.assigned(self.write(assign_desired_state(request, vehicle_ids, cause(), sign)))
            case ("report", vehicle_id, number, status, codes, which, running):
                report = reconcile_report(
                    vehicle_id,
                    f"{vehicle_id}-r{number}",
                    ReconcileStatus(status),
                    revision=self.revision(vehicle_id, which),
                    reason_codes=codes,
                    running=StackRef(name="core", version="1.0.0") if running else None,
                    minute=number,
                )
                self.write(record_reconcile(report, f"vehicle:{vehicle_id}"))
            case ("health", vehicle_id, status, codes):
                report = health_report(vehicle_id, f"h-{status}", HealthStatus(status), codes)
                self.write(record_health(report, f"vehicle:{vehicle_id}"))
            case ("presence", vehicle_id, state):
                self.write(record_presence(vehicle_id, state, AT, "bridge"))
            case ("token", role):
                _, command = issue_token(Role(role), None, cause())
                token_id = self.write(command)
                self.tokens += [token_id] if token_id else []
            case ("revoke", index):
                if self.tokens:
                    self.write(revoke_token(self.tokens[index % len(self.tokens)], cause()))
            case ("rollout", members, split):
                canaries, wave = members[:split], members[split:]
                rollout_id = f"ro-{len(self.rollouts)}"
                if self.write(start_rollout(rollout_id, canaries, wave)):
                    self.rollouts.append((rollout_id, canaries, wave))
            case ("rollout_step", step) if self.rollouts:
                rollout_id, canaries, wave = self.rollouts[-1]
                if step in ("canary", "wave"):
                    members = canaries if step == "canary" else wave
                    phase = assign_phase(rollout_id, step, members, sign, ANY)  # any model
                    self.assigned(self.write(phase))
                elif step == "rollback":
                    self.write(roll_back(rollout_id, [*canaries, *wave], sign))
                else:
                    self.write(decide(rollout_id, step))
            case ("rollout_step", _):
                pass
            case _:
                raise AssertionError(f"unknown operation {op!r}")


VEHICLES = ["v0", "v1", "v2", "v3"]
vehicle_ids = st.sampled_from(VEHICLES)
some_vehicles = st.lists(vehicle_ids, min_size=1, max_size=3, unique=True)
codes = st.lists(st.sampled_from(list(ReasonCode)), max_size=2, unique=True)
some_codes = st.lists(st.sampled_from(list(ReasonCode)), min_size=1, max_size=2, unique=True)
ASSIGN = st.tuples(st.just("assign"), some_vehicles, st.integers(0, 1))
# A status that is not a success carries at least one code (#14 item 13).
REPORT = st.sampled_from(list(ReconcileStatus)).flatmap(
    lambda status: st.tuples(
        st.just("report"),
        vehicle_ids,
        st.integers(0, 4),
        st.just(status),
        codes if status is ReconcileStatus.CONVERGED else some_codes,
        st.sampled_from(["current", "current", "previous", "none", "unknown"]),
        st.booleans(),
    )
)
ROLLOUT_STEP = st.tuples(
    st.just("rollout_step"),
    st.sampled_from(
        [
            "canary",
            "wave",
            "pass_canary",
            "fail_canary",
            "pass_wave",
            "fail_wave",
            "pause",
            "resume",
            "rollback",
        ]
    ),
)
OPERATIONS = st.one_of(
    st.tuples(st.just("catch_up"), st.integers(1, 4)),
    st.tuples(st.just("register"), vehicle_ids, st.sampled_from(["m1", "m2"]), st.just("eu")),
    st.tuples(
        st.just("patch"),
        vehicle_ids,
        st.dictionaries(st.sampled_from(["region", "ring"]), st.none() | st.sampled_from("ab")),
        st.none() | st.integers(1, 4),
    ),
    ASSIGN,
    ASSIGN,
    REPORT,
    REPORT,
    REPORT,
    st.tuples(st.just("health"), vehicle_ids, st.sampled_from(list(HealthStatus)), codes),
    st.tuples(st.just("presence"), vehicle_ids, st.sampled_from(["online", "offline"])),
    st.tuples(st.just("token"), st.sampled_from(["operator", "vehicle"])),
    st.tuples(st.just("revoke"), st.integers(0, 3)),
    st.tuples(
        st.just("rollout"), st.lists(vehicle_ids, min_size=2, unique=True), st.integers(1, 3)
    ),
    ROLLOUT_STEP,
    ROLLOUT_STEP,
)
# Registers every vehicle first so that most operations are accepted.
SETUP = [("register", v, "m1" if i % 2 else "m2", "eu") for i, v in enumerate(VEHICLES)]


def assert_rebuilds_equal(cp: ControlPlane) -> None:
    cp.projector.catch_up()
    assert cp.projector.lag() == 0
    incremental = view_rows(cp.views)
    for name in cp.projector.projections:
        cp.projector.rebuild(name)
        assert view_rows(cp.views) == incremental, f"rebuilding {name} changed the views"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPERATIONS, min_size=1, max_size=40))
def test_catch_up_equals_rebuild(ops: list[tuple[Any, ...]]) -> None:
    cp = ControlPlane.open(memory_settings(Path("unused")))
    try:
        scenario = Scenario(cp)
        for op in [*SETUP, *ops]:
            scenario.run(op)
        assert_rebuilds_equal(cp)
    finally:
        cp.close()


FIXED = [
    *SETUP,
    ("catch_up", 2),
    ("patch", "v1", {"ring": "a", "region": None}, 1),
    ("patch", "v1", {"ring": "b"}, 1),  # stale: refused
    ("assign", ["v1", "v3"], 1),
    ("assign", ["v0", "v1"], 1),  # v0 is an m2: refused whole
    ("assign", ["v0", "v1", "v2"], 0),
    ("report", "v1", 0, "blocked", [ReasonCode.DENY_MOVING], "current", False),
    ("catch_up", 3),
    ("report", "v1", 0, "converged", [], "current", True),  # re-delivery: ignored
    ("report", "v1", 1, "converged", [], "current", True),
    ("report", "v3", 0, "rolled_back", [ReasonCode.APPLY_FAILED], "current", True),
    ("report", "v2", 0, "converged", [], "unknown", False),
    ("health", "v1", "degraded", [ReasonCode.CRASH_LOOP_DETECTED]),
    ("health", "v1", "degraded", []),
    ("presence", "v2", "online"),
    ("token", "operator"),
    ("revoke", 0),
    ("rollout", ["v1", "v3"], 1),
    ("rollout_step", "canary"),
    ("report", "v1", 2, "converged", [], "current", True),
    ("catch_up", 1),
    ("rollout_step", "pass_canary"),
    ("rollout_step", "pause"),
    ("rollout_step", "wave"),  # paused: refused
    ("rollout_step", "resume"),
    ("rollout_step", "wave"),
    ("report", "v3", 1, "blocked", [ReasonCode.DENY_LOW_BATTERY], "current", False),
    ("rollout_step", "fail_wave"),
    ("rollout_step", "rollback"),
    ("register", "v1", "m2", "eu"),  # conflicting twin: refused
]


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        "sqlite without JSON functions",
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def any_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "memory":
        return memory_settings(tmp_path)
    if request.param == "sqlite without JSON functions":  # the views read row by row
        monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setattr(rows_module, "SQLITE_JSON", False)
        monkeypatch.setattr(store_module, "SQLITE_JSON", False)
        return sqlite_settings(tmp_path)
    if request.param == "sqlite":
        return sqlite_settings(tmp_path)
    return postgres_settings(request.getfixturevalue("postgres_url"), tmp_path)


@pytest.fixture
def scenario_cp(any_settings: Settings) -> Iterator[ControlPlane]:
    cp = ControlPlane.open(any_settings)
    scenario = Scenario(cp)
    for op in FIXED:
        scenario.run(op)
    yield cp
    cp.close()


def test_the_positions_read_at_once_are_each_projections_own(scenario_cp: ControlPlane) -> None:
    """`positions()` reads every projection's position in one query (probes, metrics):
    the same as each projection's own tracking record."""
    cp = scenario_cp
    cp.projector.catch_up()
    found = cp.projector.positions()
    assert found == {name: cp.views.store.position_of(name) for name in cp.projector.projections}
    assert min(found.values()) == cp.projector.position() == cp.log.position() > 0


def test_a_fixed_scenario_equals_its_rebuild(scenario_cp: ControlPlane) -> None:
    cp = scenario_cp
    assert_rebuilds_equal(cp)
    views = view_rows(cp.views)
    assert {name: len(rows) for name, rows in views.items()} == {
        "view_vehicles": 4,
        "view_vehicle_labels": 8,
        "view_releases": 2,
        "view_key_rotations": 0,
        "view_desired_latest": 4,
        "view_rollouts": 1,
        "view_rollout_vehicles": 2,
        "view_audit": cp.log.position(),
        "view_tokens": 1,
        "view_audit_chain": cp.log.position(),
    }
    rollout_view = cp.queries.rollout("ro-0")
    assert rollout_view.state == "rolled_back"
    # Given the rollback, never reported on it: not rolled back yet.
    assert [m.status for m in rollout_view.vehicles] == ["rolling_back", "rolling_back"]


def test_the_chain_reads_its_head_only_when_it_did_not_write_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch after batch, the hash chain continues from the link it committed last
    instead of reading it back; after a rebuild (or another projector's links) it reads
    the head again. The links equal those of a rebuild from the log."""
    cp = ControlPlane.open(sqlite_settings(tmp_path))
    try:
        cp.writer.execute(register_vehicle(registration("v1"), cause()))
        for n in range(20):  # stored, not projected: no read-your-writes wait here
            cp.writer.execute(record_reconcile(reconcile_report("v1", f"r{n}", minute=n), "v"))
        reads: list[int] = []
        read_head = HashChain.head

        def counted(chain: HashChain, session: Any) -> tuple[int, bytes]:
            reads.append(1)
            return read_head(chain, session)

        monkeypatch.setattr(HashChain, "head", counted)
        assert cp.projector.catch_up(limit=3) == 21  # seven batches of three
        assert len(reads) == 1
        links = table_rows(cp.views, cp.views.chain.links)
        cp.projector.rebuild("audit_chain")
        assert len(reads) == 2
        assert table_rows(cp.views, cp.views.chain.links) == links
    finally:
        cp.close()


def counted_transactions(cp: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one for every views transaction opened from now on."""
    transactions: list[int] = []
    writing = cp.views.store.writing

    def counted() -> Any:
        transactions.append(1)
        return writing()

    monkeypatch.setattr(cp.views.store, "writing", counted)
    return transactions


def test_a_catch_up_ends_at_a_short_batch_without_an_empty_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch shorter than asked is the end of the log as read: the projector does not
    open another transaction to find nothing. What is stored after it is caught up by
    the next catch-up (the writer wakes the projector after every commit)."""
    cp = ControlPlane.open(sqlite_settings(tmp_path))
    try:
        cp.writer.execute(register_vehicle(registration("v1"), cause()))
        for n in range(7):
            cp.writer.execute(record_reconcile(reconcile_report("v1", f"r{n}", minute=n), "v"))
        transactions = counted_transactions(cp, monkeypatch)
        assert cp.projector.catch_up(limit=3) == 8  # 3 + 3 + 2: the short one is the last
        assert len(transactions) == 3
        assert cp.projector.catch_up(limit=4) == 0  # nothing new: one look
        assert cp.projector.catch_up(limit=4) == 0
        assert len(transactions) == 5
        cp.writer.execute(record_reconcile(reconcile_report("v1", "r7", minute=7), "v"))
        assert cp.projector.catch_up(limit=4) == 1
        assert cp.projector.position() == cp.log.position() == 9
        assert_rebuilds_equal(cp)
    finally:
        cp.close()


def test_a_wake_for_a_position_already_shown_takes_no_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer wakes the projector with the position it stored up to. A step often
    shows several batches, so the wakes of the later ones find their records shown: they
    take no step (each read the log to find nothing), as do the wakes of batches that
    store nothing (re-delivered reports). A write is still shown at once."""
    cp = ControlPlane.open(sqlite_settings(tmp_path))
    cp.projector.start(follow=None)  # steps only when woken, as an API process
    try:
        cp.writes.execute(register_vehicle(registration("v1"), cause()))
        shown = cp.projector.position()
        transactions = counted_transactions(cp, monkeypatch)

        def woken(position: int | None) -> None:
            """Wake it, and wait for a whole turn begun after the wake (the one under
            way may have begun before it)."""
            turns = cp.projector.turns
            cp.projector.wake(position)
            eventually(lambda: cp.projector.turns >= turns + 2, "two turns of the projector")

        for position in (shown, shown - 1, None):
            woken(position)
        assert transactions == []
        written = cp.writes.execute(record_reconcile(reconcile_report("v1", "r1"), "v"))
        assert written.views_current and cp.projector.position() == written.position
        woken(written.position)
        assert len(transactions) == 1  # the write's wakes: one step
        # A re-delivered report stores nothing; the writer's wake after it names the
        # position shown already, and takes no step.
        saved: list[int | None] = []
        wake = cp.writer.on_saved
        assert wake is not None

        def seen(position: int | None) -> None:
            wake(position)
            saved.append(position)

        cp.writer.on_saved = seen
        again = cp.writer.execute(record_reconcile(reconcile_report("v1", "r1"), "v"))
        assert again.value is False and again.position is None
        eventually(lambda: saved == [written.position], "the writer's wake after the batch")
        woken(written.position)
        assert len(transactions) == 1
        assert_rebuilds_equal(cp)
    finally:
        cp.projector.stop()
        cp.close()


def test_the_following_projector_steps_only_when_the_log_holds_new_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process that follows the log (under its duty's lease, checked at every look)
    looks at it every interval for records it was not woken for (another process's). A
    look that finds nothing new takes no step (on PostgreSQL a write transaction and
    three round trips, ten times a second); a record stored without a wake is found by
    the next look."""
    cp = ControlPlane.open(sqlite_settings(tmp_path))
    cp.writes.execute(register_vehicle(registration("v1"), cause()))
    checks: list[int] = []

    def lease() -> bool:
        checks.append(1)
        return True

    cp.projector.start(interval=0.01, follow=lease)
    try:
        transactions = counted_transactions(cp, monkeypatch)
        turns = cp.projector.turns
        eventually(lambda: cp.projector.turns >= turns + 5, "five looks at the log")
        assert transactions == [] and len(checks) >= 5  # the lease is kept all along
        cp.writer.on_saved = None  # stored as another process would: no wake here
        written = cp.writer.execute(record_reconcile(reconcile_report("v1", "r1"), "v"))
        eventually(lambda: cp.projector.position() == written.position, "the record shown")
        assert len(transactions) == 1
        assert_rebuilds_equal(cp)
    finally:
        cp.projector.stop()
        cp.close()


def test_the_rollout_controller_steps_the_views_only_when_the_log_holds_new_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller brings the views up to the log before its gates read them, twice a
    second; a tick with nothing new opens no views transaction, and one after a record
    stored without a wake (another process's) shows it first."""
    cp = ControlPlane.open(sqlite_settings(tmp_path))
    try:
        cp.writes.execute(register_vehicle(registration("v1"), cause()))
        controller = RolloutController(cp)
        transactions = counted_transactions(cp, monkeypatch)
        assert controller.tick() == 0 and controller.tick() == 0
        assert transactions == [] and controller.ticks == 2
        cp.writer.on_saved = None  # stored as another process would: no wake here
        written = cp.writer.execute(record_reconcile(reconcile_report("v1", "r1"), "v"))
        controller.tick()
        assert len(transactions) == 1 and cp.projector.position() == written.position
        assert_rebuilds_equal(cp)
    finally:
        cp.close()


def test_an_sqlite_too_old_for_the_views_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    with pytest.raises(RuntimeError, match=r"SQLite 3\.33\.0 or later .* 3\.31\.1"):
        ViewStore(f"sqlite:///{tmp_path / 'views.db'}")


def test_positions_move_together_or_not_at_all(view_store: ViewStore) -> None:
    """The projector moves every position of a batch in one compare-and-set: if another
    projector moved any of them since it read them, none moves (its transaction, rows
    included, rolls back)."""
    views = view_store
    views.create_table()
    with views.writing() as session:
        views.advance(session, {"a": 0, "b": 0}, 5)
    with views.writing() as session:
        views.advance(session, {"a": 5, "b": 5, "c": 0}, 9)
    assert {n: views.position_of(n) for n in "abc"} == {"a": 9, "b": 9, "c": 9}
    with pytest.raises(IntegrityError), views.writing() as session:
        views.advance(session, {"a": 9, "b": 7}, 12)  # b was read at 7: moved since
    assert {n: views.position_of(n) for n in "abc"} == {"a": 9, "b": 9, "c": 9}


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_view_whose_columns_changed_is_rebuilt_from_the_log(
    store: str, request: pytest.FixtureRequest, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An upgrade that adds a column to a view: opening the old database drops that view
    and rebuilds it from the log; the other views keep their rows and positions."""
    settings = (
        sqlite_settings(tmp_path)
        if store == "sqlite"
        else postgres_settings(request.getfixturevalue("postgres_url"), tmp_path)
    )
    cp = ControlPlane.open(settings)
    scenario = Scenario(cp)
    for op in FIXED:
        scenario.run(op)
    cp.projector.catch_up()
    before, audit_at = view_rows(cp.views), cp.projector.positions()["audit"]
    with cp.views.store.engine.begin() as connection:  # the shape of an older release
        connection.execute(text("ALTER TABLE view_vehicles DROP COLUMN report_ledger"))
    cp.close()
    cp = ControlPlane.open(settings)
    try:
        rebuilt = [r.getMessage() for r in caplog.records if "changed shape" in r.getMessage()]
        assert rebuilt == [
            "view inventory changed shape (view_vehicles): rebuilding it from the log"
        ]
        cp.projector.catch_up()
        assert cp.projector.positions()["audit"] == audit_at
        assert view_rows(cp.views) == before
    finally:
        cp.close()


def test_caches_hear_of_an_assignment_only_once_it_is_committed(tmp_path: Path) -> None:
    """The API's ETag memory is evicted after the view's transaction commits: evicted
    before, a poll in between would read the old row and remember it again."""
    cp = ControlPlane.open(sqlite_settings(tmp_path))
    try:
        seen: list[tuple[str, str | None]] = []

        def poll(vehicle_id: str) -> None:  # on another connection, as a request would
            found = cp.queries.desired_document(vehicle_id)
            seen.append((vehicle_id, found.etag if found else None))

        cp.views.desired.assigned.append(poll)
        scenario = Scenario(cp)
        for op in [*SETUP, ("assign", ["v1", "v3"], 1)]:
            scenario.run(op)
        cp.projector.catch_up()
        assert sorted(v for v, _ in seen) == ["v1", "v3"]
        assert all(etag is not None for _, etag in seen), seen
    finally:
        cp.close()


def replay(cp: ControlPlane, name: str, position: int) -> None:
    """Apply the event at `position` to one projection and record the position, as the
    runner does, in one view transaction."""
    notification = cp.log.recorder.select_notifications(start=position, limit=1)[0]
    event = cp.log.mapper.to_domain_event(notification)
    with cp.views.store.writing() as session:
        cp.projector.projections[name].apply(session, event, position)
        cp.views.store.record_position(session, name, position)


def test_reprocessing_a_position_is_refused_and_changes_nothing(scenario_cp: ControlPlane) -> None:
    cp = scenario_cp
    cp.projector.catch_up()
    before, positions = view_rows(cp.views), cp.projector.positions()
    # An old presence change: applied again, it would turn v2 back "online".
    cp.execute(record_presence("v2", "offline", AT, "bridge"))
    after_offline = view_rows(cp.views)
    online = next(
        e.position
        for e in cp.queries.audit(vehicle_id="v2")
        if e.event_type == "Vehicle.PresenceChanged" and e.data["state"] == "online"
    )
    with pytest.raises(IntegrityError):
        replay(cp, "inventory", online)
    assert view_rows(cp.views) == after_offline
    assert after_offline != before

    # Every projection refuses its own last position again. Insert-only views refuse it
    # on their primary key before the position is reached; nothing changes either way.
    for name, position in positions.items():
        with pytest.raises((IntegrityError, sqlalchemy.exc.IntegrityError)):
            replay(cp, name, position)
    assert view_rows(cp.views) == after_offline


# -- read-your-writes ---------------------------------------------------------------------


def test_every_write_is_readable_when_execute_returns(tmp_path: Path) -> None:
    cp = ControlPlane.open(memory_settings(tmp_path))
    try:
        cp.execute(register_vehicle(registration("v1", model="m1"), cause()))
        assert cp.queries.vehicle_ids(None) == ["v1"]
        cp.execute(ANY.register())
        assert cp.queries.release("core", "1.0.0").manifest_digest == ANY.digest
        request = desired_request("model=m1", ANY)
        assigned = cp.execute(assign_desired_state(request, ["v1"], cause(), cp.sign)).value
        latest = cp.queries.desired_document("v1")
        assert latest is not None and latest.revision == assigned.revision
        report = reconcile_report("v1", "r1", revision=assigned.revision, running=ANY.ref)
        cp.execute(record_reconcile(report, "vehicle:v1"))
        assert cp.queries.vehicle("v1").running_release == "core@1.0.0"
        secret, issue = issue_token(Role.VEHICLE, "v1", cause())
        cp.execute(issue)
        principal = cp.auth.authenticate(secret)
        assert principal is not None and principal.vehicle_id == "v1"

        async def from_a_handler() -> str | None:
            await cp.write(record_health(health_report("v1", "h1", HealthStatus.DEGRADED), "v1"))
            health: str | None = cp.queries.vehicle("v1").health
            return health

        assert asyncio.run(from_a_handler()) == "degraded"
        assert cp.projector.lag() == 0
    finally:
        cp.close()


# -- rollout progress ---------------------------------------------------------------------


def phase(
    targeted: int,
    deferred_by: dict[str, int] | None = None,
    failed_by: dict[str, int] | None = None,
    rolled_back_by: dict[str, int] | None = None,
    **counts: int,
) -> dict[str, Any]:
    zero = dict.fromkeys(
        [
            "pending",
            "assigned",
            "converged",
            "deferred",
            "failed",
            "rolledBack",
            "left",
            "superseded",
            "notAssigned",
        ],
        0,
    )
    return {
        "targeted": targeted,
        **zero,
        **counts,
        "deferredBy": deferred_by or {},
        "failedBy": failed_by or {},
        "rolledBackBy": rolled_back_by or {},
        "rollingBack": counts.get("rollingBack", 0),
        "rollingBackBy": {},
    }


def test_rollout_progress_counts_reports_per_phase(tmp_path: Path) -> None:
    cp = ControlPlane.open(memory_settings(tmp_path))
    try:
        ids = register_fleet(cp, [registration(f"v{i}", model="m1") for i in range(6)])
        canaries, wave = ids[:2], ids[2:]
        cp.execute(ANY.register())
        cp.execute(M1_ONLY.register())
        cp.execute(start_rollout("ro-1", canaries, wave))

        def progress() -> dict[str, Any]:
            phases: dict[str, Any] = msgspec.to_builtins(cp.queries.rollout("ro-1").phases)
            return phases

        def report(vehicle_id: str, n: int, status: str, *codes: ReasonCode, rev: str) -> None:
            body = reconcile_report(
                vehicle_id, f"{vehicle_id}-{n}", ReconcileStatus(status), revision=rev,
                reason_codes=codes,
            )  # fmt: skip
            cp.execute(record_reconcile(body, f"vehicle:{vehicle_id}"))

        assert progress() == {"canary": phase(2, pending=2), "wave": phase(4, pending=4)}

        canary = cp.execute(assign_phase("ro-1", "canary", canaries, cp.sign)).value.revision
        report("v0", 1, "converged", rev=canary)
        report("v1", 1, "blocked", ReasonCode.DENY_MOVING, rev=canary)
        assert progress()["canary"] == phase(2, {"DENY_MOVING": 1}, converged=1, deferred=1)
        report("v1", 2, "converged", rev=canary)
        assert progress()["canary"] == phase(2, converged=2)

        cp.execute(decide("ro-1", "pass_canary"))
        cp.execute(decide("ro-1", "pause"))
        assert cp.queries.rollout("ro-1").paused is True
        cp.execute(decide("ro-1", "resume"))
        revision = cp.execute(assign_phase("ro-1", "wave", wave, cp.sign)).value.revision
        assert progress()["wave"] == phase(4, assigned=4)
        report("v2", 1, "converged", rev=revision)
        report("v3", 1, "blocked", ReasonCode.DENY_LOW_BATTERY, rev=revision)
        report("v4", 1, "rolled_back", ReasonCode.READINESS_TIMEOUT,
               ReasonCode.ROLLBACK_APPLIED, rev=revision)  # fmt: skip
        report("v5", 1, "failed", ReasonCode.APPLY_FAILED, rev=revision)
        report("v2", 2, "failed", ReasonCode.APPLY_FAILED, rev=canary)  # another revision
        assert progress()["wave"] == phase(
            4,
            {"DENY_LOW_BATTERY": 1},
            {"READINESS_TIMEOUT": 1, "ROLLBACK_APPLIED": 1, "APPLY_FAILED": 1},
            converged=1,
            deferred=1,
            failed=2,
        )

        cp.execute(decide("ro-1", "fail_wave"))
        rollback = cp.execute(roll_back("ro-1", wave, cp.sign)).value
        report("v2", 3, "converged", rev=revision)  # too late on the release: changes nothing
        phases = msgspec.to_builtins(cp.queries.rollout("ro-1").phases)
        assert (phases["wave"]["rollingBack"], phases["wave"]["rolledBack"]) == (4, 0)
        report("v3", 2, "blocked", ReasonCode.DENY_MOVING, rev=rollback)  # held: says why
        assert msgspec.to_builtins(cp.queries.rollout("ro-1").phases)["wave"]["rollingBackBy"] == {
            "DENY_MOVING": 1
        }
        for n, vehicle_id in enumerate(wave, 4):
            report(vehicle_id, n, "converged", rev=rollback)
        view = msgspec.to_builtins(cp.queries.rollout("ro-1"))  # as the API answers it
        assert view["state"] == "rolled_back"
        assert [d["event"] for d in view["decisions"]] == ["CanaryGatePassed", "WaveGateFailed"]
        assert view["decisions"][0]["evaluation"] == msgspec.to_builtins(EVALUATION)
        assert view["phases"]["canary"] == phase(2, converged=2)
        assert view["phases"]["wave"]["rolledBack"] == 4
        assert view["phases"]["wave"]["rolledBackBy"] == {  # why each was rolled back
            "DENY_LOW_BATTERY": 1, "READINESS_TIMEOUT": 1, "ROLLBACK_APPLIED": 1, "APPLY_FAILED": 1
        }  # fmt: skip
        assert {v["vehicleId"]: v["phase"] for v in view["vehicles"]} == {
            **dict.fromkeys(canaries, "canary"),
            **dict.fromkeys(wave, "wave"),
        }
        rows = table_rows(cp.views, cp.views.rollouts.vehicles)
        assert {r["vehicle_id"] for r in rows if r["status"] == "rolled_back"} == set(wave)
    finally:
        cp.close()


def test_a_stored_report_is_never_answered_failed_because_the_views_are_slow(
    tmp_path: Path,
) -> None:
    """Reconcile and health ingest take the same write path as every other write
    (WritePath): views that miss the deadline make `views_current` False, not an error."""
    cp = ControlPlane.open(memory_settings(tmp_path))
    try:
        register_fleet(cp, [registration("v1")])
        cp.ingest.writes.views_timeout = 1e-9  # the views can never be in time
        written = asyncio.run(cp.ingest.reconcile(reconcile_report("v1", "r1"), "vehicle:v1"))
        assert written.value is True and written.views_current is False
        report = health_report("v1", "h1", HealthStatus.DEGRADED)
        assert asyncio.run(cp.ingest.health(report, "vehicle:v1")) is True
        assert cp.log.position() == written.position + 1  # both are stored
    finally:
        cp.close()


class EventTypes(Projection):
    """A view that takes each batch whole (`apply_batch`): one row per event."""

    name = "event_types"

    def define(self, metadata: MetaData) -> list[Table]:
        self.batches: list[list[int]] = []
        self.rows = Table(
            "view_event_types",
            metadata,
            Column("position", Integer, primary_key=True),
            Column("event_type", String(100), nullable=False),
        )
        return [self.rows]

    @property
    def updates(self) -> dict[str, Update]:
        return {}

    def apply_batch(self, session: Session, items: list[tuple[Any, int]]) -> None:
        self.batches.append([position for _, position in items])
        rows = [{"position": p, "event_type": event_type(e)} for e, p in items]
        session.execute(self.rows.insert(), rows)


def test_a_view_with_apply_batch_gets_each_batch_whole_and_equals_a_rebuild(
    tmp_path: Path,
) -> None:
    cp = ControlPlane.open(memory_settings(tmp_path))
    store = ViewStore(f"sqlite:///{tmp_path / 'batched.db'}")
    try:
        register_fleet(cp, [registration(f"v{i}") for i in range(5)])
        view = EventTypes(store.metadata)
        store.create_table()
        runner = ProjectionRunner(cp.log, store, [view])
        assert runner.catch_up(limit=3) == 5
        assert view.batches == [[1, 2, 3], [4, 5]]
        cp.execute(record_presence("v0", "online", None, "t"))
        runner.catch_up(limit=3)
        assert view.batches[-1] == [6]  # only what it has not seen

        def stored() -> list[tuple[int, str]]:
            with store.reading() as session:
                return [tuple(r) for r in session.execute(select(view.rows))]

        incremental = stored()
        assert [p for p, _ in incremental] == [1, 2, 3, 4, 5, 6]
        runner.rebuild("event_types")
        assert stored() == incremental
    finally:
        store.close()
        cp.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """One store for two control planes (two API processes)."""
    if request.param == "sqlite":
        return sqlite_settings(tmp_path)
    return postgres_settings(request.getfixturevalue("postgres_url"), tmp_path)


def test_a_catch_up_for_what_another_process_has_shown_projects_nothing_more(
    shared_settings: Settings,
) -> None:
    """Two API processes each project their own writes. One that takes the views' turn
    for a write the other's projector has shown meanwhile takes nothing more: what is
    not shown yet is the other's to show (each showing the other's latest few records
    as well made every step a small one, and half of each process's CPU went to them).
    A catch-up for a position not shown yet shows everything stored."""
    here, there = ControlPlane.open(shared_settings), ControlPlane.open(shared_settings)
    try:
        mine = here.writer.execute(register_vehicle(registration("v1"), cause())).position
        theirs = there.writer.execute(register_vehicle(registration("v2"), cause())).position
        assert mine is not None and theirs is not None and mine < theirs
        there.projector.catch_up()  # shows both
        there.writer.execute(record_reconcile(reconcile_report("v2", "r1"), "v"))  # not shown
        processed = here.projector.processed
        assert here.projector.catch_up(wanted=mine) == 0
        assert here.projector.processed == processed
        assert here.projector.position() == theirs  # the later record left to its writer
        again = here.writer.execute(record_reconcile(reconcile_report("v1", "r2"), "v")).position
        assert here.projector.catch_up(wanted=again) == 2  # theirs too: all that is stored
        assert here.projector.position() == again == here.log.position()
        assert_rebuilds_equal(here)
    finally:
        here.close()
        there.close()
