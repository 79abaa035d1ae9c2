"""Any interleaving of reports, pauses, resumes, rollbacks, relabels, late registrations
and deadline ticks keeps the rollout's invariants (issues 6 and 13), each the rule
docs/rollouts.md states:

- no vehicle outside the rollout's members is assigned; no wave before the canary gate;
- a failed rollout rolls back every vehicle it changed, canaries included, and leaves
  none on the new release (item 1, 4): each gets a new revision pointing to its previous
  release, or saying "run nothing" when it had none, and the progress counts say so;
- a rollout completes only after its bake, and never with a tripwire reported before it
  completed (item 2);
- deferred vehicles never fail a gate: a deadline failure is a failure of the others
  (item 3);
- every decision carries its own reason code (item 6);
- a final rollout is never paused, paused means no new assignment, and a deadline falls
  only after limit + time spent paused (item 7);
- membership is fixed at start: late matches are counted, never assigned; a wave member
  relabelled out before its wave leaves (item 8);
- the view's deadline and outstanding members agree with the rollout (item 5).

Every test here passes alone and in any order: the exploration's coverage is checked
by the same test that explores (issue 21 item 2).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import mkdtemp
from typing import Any

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import (
    assign_desired_state,
    record_reconcile,
    register_vehicle,
    update_vehicle,
)
from muto.cloud.controller import RolloutController
from muto.cloud.rollouts import pause, resume, roll_back, start_rollout
from muto.domain.desired import DesiredStateDocument
from muto.domain.model.rollout import Rollout, RolloutStateError
from muto.domain.model.vehicle import Vehicle
from muto.domain.reports import ReconcileReport, ReconcileStatus
from muto.domain.requests import RolloutRequest, RolloutThresholds, VehiclePatch
from muto.domain.rollout_rules import TRIPWIRES, Candidate, pick_canaries
from muto.domain.wire import decode
from tests.support.releases import signed_release
from tests.support.spine import (
    cause,
    desired_request,
    memory_settings,
    register_fleet,
    registration,
)

IN_SELECTOR = [f"v-{r}-{m}-{n}" for r in ("eu", "us", "ap") for m in ("m3", "m4") for n in (1, 2)]
OUTSIDE = ["x-1", "x-2"]
LATE = "v-eu-m3-9"  # registered into the selector during the rollout
# Members running nothing before the rollout (a canary and a wave member): their
# rollback is a revision that says "run nothing" (item 4).
FRESH = frozenset({"v-ap-m3-1", "v-ap-m4-2"})
DEADLINE_SEC, BAKE_SEC = 600, 300
OUTCOMES = [
    (ReconcileStatus.CONVERGED, []),
    (ReconcileStatus.BLOCKED, ["DENY_OUTSIDE_WINDOW"]),
    (ReconcileStatus.BLOCKED, ["DENY_MOVING", "DENY_LOW_BATTERY"]),
    (ReconcileStatus.ROLLED_BACK, ["CRASH_LOOP_DETECTED", "ROLLBACK_APPLIED"]),
    (ReconcileStatus.ROLLED_BACK, ["APPLY_FAILED", "ROLLBACK_APPLIED"]),
    (ReconcileStatus.ROLLED_BACK, ["READINESS_TIMEOUT", "ROLLBACK_APPLIED"]),
]
DECISION_CODES = {
    "Rollout.CanaryGatePassed": "CANARY_GATE_PASSED",
    "Rollout.CanaryGateFailed": "CANARY_GATE_FAILED",
    "Rollout.WaveGatePassed": "WAVE_GATE_PASSED",
    "Rollout.WaveGateFailed": "WAVE_GATE_FAILED",
    "Rollout.BakeCompleted": "BAKE_COMPLETED",
    "Rollout.BakeFailed": "BAKE_FAILED",
}
PHASE_OF_DECISION = {
    "Rollout.CanaryGatePassed": "canary",
    "Rollout.CanaryGateFailed": "canary",
    "Rollout.WaveGatePassed": "wave",
    "Rollout.WaveGateFailed": "wave",
    "Rollout.BakeCompleted": "baking",
    "Rollout.BakeFailed": "baking",
}
FINAL = ("completed", "aborted", "rolled_back")


class RolloutMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.now = datetime(2026, 3, 3, 2, 0, tzinfo=UTC)
        self.cp = ControlPlane.open(memory_settings(Path(mkdtemp())))
        self.cp.clock = lambda: self.now
        regs = [
            registration(v, model=v.split("-")[2], region=v.split("-")[1], ring="1")
            for v in IN_SELECTOR
        ]
        regs += [registration(v, model="m3", region="eu", ring="2") for v in OUTSIDE]
        register_fleet(self.cp, regs)
        self.good, self.new = signed_release(version="1.0.0"), signed_release(version="2.0.0")
        for release in (self.good, self.new):
            self.cp.execute(release.register())
        everyone = [v for v in IN_SELECTOR + OUTSIDE if v not in FRESH]
        self.cp.execute(
            assign_desired_state(
                desired_request("ring=1", self.good),
                everyone,
                cause(),
                self.cp.sign,
                now=self.cp.clock,
            )
        )
        canaries, wave = pick_canaries(
            Candidate(v, v.split("-")[1], v.split("-")[2]) for v in IN_SELECTOR
        )
        request = RolloutRequest(
            selector="ring=1",
            stack=self.new.release.stack_name,
            version="2.0.0",
            rollout_id="ro-1",
            thresholds=RolloutThresholds(
                converged_pct=95,
                canary_deadline_sec=DEADLINE_SEC,
                wave_deadline_sec=DEADLINE_SEC,
                bake_sec=BAKE_SEC,
            ),
        )
        self.cp.execute(
            start_rollout(request, canaries, wave, cause(), self.cp.sign, self.cp.clock)
        )
        self.controller = RolloutController(self.cp)
        self.assignments_at_pause: int | None = None
        self.reports = 0
        # A member's newest report on its rollback revision (the test's own account).
        self.on_rollback: dict[str, str] = {}
        self.relabelled_in_canary: set[str] = set()  # wave members relabelled out early
        self.relabelled: set[str] = set()
        self.late_registered = False
        # The test's own account of time spent paused per phase (item 7).
        self.paused_since: datetime | None = None
        self.paused_sec: dict[str, float] = {}

    def teardown(self) -> None:
        if hasattr(self, "cp"):
            self.controller.close()
            self.cp.close()

    # -- helpers --------------------------------------------------------------------

    def rollout(self) -> Rollout:
        found: Rollout = self.cp.log.repository.get(Rollout.create_id("ro-1"))
        return found

    def history(self) -> list[dict[str, Any]]:
        """The rollout's audit entries as the API answers them."""
        return [
            msgspec.to_builtins(e) for e in self.cp.queries.audit(rollout_id="ro-1", limit=5000)
        ]

    def before(self, vehicle_id: str) -> str | None:
        """The release a member ran before the rollout (None: nothing)."""
        return None if vehicle_id in FRESH else self.good.key

    def assignments(self) -> list[dict[str, Any]]:
        return [e for e in self.history() if e["eventType"] == "Vehicle.DesiredStateAssigned"]

    # -- rules ----------------------------------------------------------------------

    @rule(index=st.integers(0, len(IN_SELECTOR) - 1), outcome=st.sampled_from(OUTCOMES))
    def vehicle_reports(self, index: int, outcome: tuple[ReconcileStatus, list[str]]) -> None:
        vehicle_id = IN_SELECTOR[index]
        revision = self.rollout().assigned.get(vehicle_id)
        if revision is None:
            return
        self._report(vehicle_id, revision, outcome)

    def _report(
        self, vehicle_id: str, revision: str, outcome: tuple[ReconcileStatus, list[str]]
    ) -> None:
        self.reports += 1
        status, codes = outcome
        report = ReconcileReport(
            schema="muto.reconcile-report.v1",
            report_id=f"r{self.reports}",
            vehicle_id=vehicle_id,
            desired_state_revision=revision,
            status=status,
            reason_codes=codes,
            observed_at=self.now,
        )  # type: ignore[arg-type]
        self.cp.execute(record_reconcile(report, f"vehicle:{vehicle_id}"))

    @rule(index=st.integers(0, len(IN_SELECTOR) - 1), outcome=st.sampled_from(OUTCOMES))
    def vehicle_reports_on_its_rollback(
        self, index: int, outcome: tuple[ReconcileStatus, list[str]]
    ) -> None:
        """A member given a rollback revision takes it (converged) or not yet (held by
        its gate, or failing): only a converged one is rolled back."""
        vehicle_id = IN_SELECTOR[index]
        if vehicle_id not in self.rollout().rolled_back:
            return
        vehicle: Vehicle = self.cp.log.repository.get(Vehicle.create_id(vehicle_id))
        assert vehicle.assignment is not None and vehicle.assignment["phase"] == "rollback"
        revision = vehicle.assignment["revision"]
        self._report(vehicle_id, revision, outcome)
        self.on_rollback[vehicle_id] = str(outcome[0])

    @rule()
    def every_assigned_vehicle_converges(self) -> None:
        for index, vehicle_id in enumerate(IN_SELECTOR):
            if vehicle_id in self.rollout().assigned:
                self.vehicle_reports(index, OUTCOMES[0])

    @rule(dice=st.integers(0, 2))
    def a_good_minute(self, dice: int) -> None:
        """Every assigned vehicle converges, a minute passes: so runs also complete."""
        if dice:
            return
        self.every_assigned_vehicle_converges()
        self.controller_ticks(60)

    @rule(seconds=st.sampled_from([1, 60, 400, 700]))
    def controller_ticks(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)
        self.controller.tick()

    @rule(dice=st.integers(0, 3))
    def operator_pauses(self, dice: int) -> None:
        if dice:  # rarer than reports and ticks, so runs also reach their endings
            return
        try:
            self.cp.execute(pause("ro-1", cause(), self.cp.clock))
        except RolloutStateError:
            assert self.rollout().is_final
            return
        if self.paused_since is None:
            self.paused_since = self.now
        self.assignments_at_pause = len(self.assignments())

    @rule()
    def operator_resumes(self) -> None:
        state = self.rollout().state
        try:
            self.cp.execute(resume("ro-1", cause(), self.cp.clock))
        except RolloutStateError:
            assert self.rollout().is_final
            return
        if self.paused_since is not None:
            held = (self.now - self.paused_since).total_seconds()
            self.paused_sec[state] = self.paused_sec.get(state, 0.0) + held
            self.paused_since = None
        self.assignments_at_pause = None

    @rule(dice=st.integers(0, 7))
    def operator_rolls_back(self, dice: int) -> None:
        if dice:  # a rollback ends the story: keep it rare
            return
        self.cp.execute(roll_back("ro-1", cause(), self.cp.sign, self.cp.clock))
        if self.assignments_at_pause is not None:  # an explicit operator act, not the controller
            self.assignments_at_pause = len(self.assignments())
        self.paused_since = None  # final: never paused

    @rule(index=st.integers(0, len(IN_SELECTOR) - 1), dice=st.integers(0, 3))
    def operator_relabels_out(self, index: int, dice: int) -> None:
        if dice:
            return
        vehicle_id = IN_SELECTOR[index]
        if self.rollout().state == "canary" and vehicle_id in self.rollout().wave:
            self.relabelled_in_canary.add(vehicle_id)
        self.relabelled.add(vehicle_id)
        self.cp.execute(update_vehicle(vehicle_id, VehiclePatch(labels={"ring": "2"}), cause()))

    @rule()
    def a_matching_vehicle_registers_late(self) -> None:
        if not self.late_registered:
            self.cp.execute(register_vehicle(registration(LATE, ring="1"), cause()))
            self.late_registered = True

    # -- invariants (one read of the history per step) ----------------------------

    @invariant()
    def invariants_hold(self) -> None:
        self.cp.projector.catch_up()
        rollout, history = self.rollout(), self.history()
        types = {e["eventType"] for e in history}
        members = set(rollout.canaries) | set(rollout.wave)
        assigned = [e for e in history if e["eventType"] == "Vehicle.DesiredStateAssigned"]
        rollout_assigned = [e for e in assigned if e["data"]["assignment"]["rolloutId"] == "ro-1"]
        view = msgspec.to_builtins(self.cp.queries.rollout("ro-1"))
        # Membership is fixed at start: only members are ever assigned (item 8)...
        assert {e["vehicleId"] for e in rollout_assigned} <= members <= set(IN_SELECTOR)
        # ... a wave member relabelled out before its wave never gets the release ...
        for vehicle_id in self.relabelled_in_canary:
            assert vehicle_id not in rollout.assigned
            if "Rollout.CanaryGatePassed" in types:
                assert vehicle_id in rollout.left
        # ... and late matches are counted, not added.
        matching_now = (set(IN_SELECTOR) - self.relabelled) | (
            {LATE} if self.late_registered else set()
        )
        assert view["notInRollout"] == len(matching_now - members)
        # No wave before the canary gate passes.
        if set(rollout.wave) & set(rollout.assigned):
            assert "Rollout.CanaryGatePassed" in types
        # A failed rollout rolls back every vehicle it changed, canaries included; none
        # is left desiring the new release, and the counts say so (items 1, 4).
        if rollout.state in ("aborted", "rolled_back"):
            assert set(rollout.assigned) <= set(rollout.rolled_back)
            latest: dict[str, dict[str, Any]] = {}
            for e in assigned:
                latest[e["vehicleId"]] = e["data"]["assignment"]
            for vehicle_id in rollout.assigned:
                assert latest[vehicle_id]["releaseKey"] == self.before(vehicle_id)
                assert latest[vehicle_id]["phase"] == "rollback"
            # Given a rollback: `rolled_back` once its newest report there is converged,
            # else `rolling_back` (it may still run the release), and outstanding.
            rolled_back = sum(p["rolledBack"] for p in view["phases"].values())
            rolling_back = sum(p["rollingBack"] for p in view["phases"].values())
            assert rolled_back + rolling_back == len(rollout.rolled_back) == len(rollout.assigned)
            shown = {m["vehicleId"]: m["status"] for m in view["vehicles"]}
            took = {v for v, status in self.on_rollback.items() if status == "converged"}
            for vehicle_id in rollout.rolled_back:
                expected = "rolled_back" if vehicle_id in took else "rolling_back"
                assert shown[vehicle_id] == expected, vehicle_id
            waiting = sorted(m["vehicleId"] for m in view["outstanding"])
            assert waiting == sorted(set(rollout.rolled_back) - took)
            assert view["outstandingTotal"] == rolling_back
        if "Rollout.CanaryGateFailed" in types:
            assert not set(rollout.wave) & set(rollout.assigned)
        # Rollback revisions point to the previous release, or say "run nothing" (None)
        # to a vehicle that had none.
        for e in assigned:
            if e["data"]["assignment"]["phase"] == "rollback":
                assert e["data"]["assignment"]["releaseKey"] == self.before(e["vehicleId"])
        self.decisions_hold(rollout, history)
        # A final rollout is never paused; paused means no new assignment (item 7).
        assert not (rollout.is_final and rollout.paused)
        assert view["paused"] == rollout.paused
        if rollout.paused and self.assignments_at_pause is not None:
            assert len(assigned) == self.assignments_at_pause
        # The view says why an active rollout waits (item 5).
        if rollout.is_final:  # it waits only for rollbacks not confirmed
            assert view["deadline"] is None
            assert all(m["status"] == "rolling_back" for m in view["outstanding"])
        elif rollout.paused:  # the clock stands still: no deadline, what is left of it
            assert view["deadline"] is None
            deadline = rollout.deadline(rollout.state)
            if deadline is not None and rollout.paused_at:
                left = datetime.fromisoformat(deadline) - datetime.fromisoformat(rollout.paused_at)
                assert view["deadlineRemainingS"] == max(0.0, round(left.total_seconds(), 3))
        else:
            assert view["deadline"] == rollout.deadline(rollout.state)
            assert view["deadlineRemainingS"] is None
            phase = "wave" if rollout.state == "baking" else rollout.state
            waiting = {
                m["vehicleId"]
                for m in view["vehicles"]
                if m["phase"] == phase and m["status"] in ("pending", "assigned", "deferred")
            }
            assert {w["vehicleId"] for w in view["outstanding"]} == waiting

    def decisions_hold(self, rollout: Rollout, history: list[dict[str, Any]]) -> None:
        rollout_revisions = {
            e["data"]["revision"] for e in history if e["eventType"] == "Rollout.PhaseAssigned"
        }
        started = {
            e["data"]["phase"]: datetime.fromisoformat(e["data"]["at"])
            for e in reversed(history)
            if e["eventType"] == "Rollout.PhaseAssigned"
        }
        for position, e in enumerate(history):
            kind, data = e["eventType"], e["data"]
            if kind not in DECISION_CODES:
                continue
            # Every decision carries its reason code (item 6).
            assert data["reason_code"] == DECISION_CODES[kind]
            evaluation, at = data["evaluation"], datetime.fromisoformat(data["at"])
            phase = PHASE_OF_DECISION[kind]
            if kind == "Rollout.WaveGatePassed":
                started["baking"] = at
            if "GATE_DEADLINE_EXCEEDED" in evaluation["reasonCodes"] or kind in (
                "Rollout.BakeCompleted",
            ):
                # A deadline (or the bake's end) falls only after limit + time paused.
                limit = BAKE_SEC if phase == "baking" else DEADLINE_SEC
                held = self.paused_sec.get(phase, 0.0)
                assert at >= started[phase] + timedelta(seconds=limit + held)
            if "GATE_DEADLINE_EXCEEDED" in evaluation["reasonCodes"]:
                # Deferred vehicles left the denominator: the others failed (item 3).
                counted = evaluation["targeted"] - evaluation["deferred"]
                assert evaluation["counted"] == counted
                share = evaluation["convergedPct"]  # None: none counted
                assert (share is not None and share < evaluation["thresholdPct"]) or (
                    phase == "canary" and evaluation["converged"] == 0
                )
            if kind == "Rollout.BakeCompleted":
                # No tripwire reported on the rollout's revisions before it completed
                # (item 2): a tripwire counts whenever it arrives.
                for report in history[:position]:
                    if report["eventType"] != "Vehicle.ReconcileReported":
                        continue
                    r = report["data"]["report"]
                    if r.get("desiredStateRevision") in rollout_revisions:
                        assert not set(r.get("reasonCodes", [])) & TRIPWIRES


MACHINE_SETTINGS = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,  # reproducible exploration: the coverage check must not flake
    suppress_health_check=[HealthCheck.too_slow],
)


def test_any_interleaving_keeps_the_invariants_and_reaches_the_endings() -> None:
    """The machine's runs, and a guard against a vacuous machine: the same (derandomized)
    runs went through the wave, the bake, completion, a canary abort and a rollback."""
    reached: set[str] = set()

    class Recorded(RolloutMachine):
        @invariant()
        def record_the_state(self) -> None:
            reached.add(self.rollout().state)

    run_state_machine_as_test(Recorded, settings=MACHINE_SETTINGS)
    assert {"wave", "baking", "completed", "aborted", "rolled_back"} <= reached, reached


def scenario() -> RolloutMachine:
    machine = RolloutMachine()
    machine.start()
    return machine


def test_a_good_release_goes_canary_then_wave_then_bakes_then_completed() -> None:
    m = scenario()
    try:
        m.every_assigned_vehicle_converges()
        m.controller_ticks(1)
        assert m.rollout().state == "wave"
        m.every_assigned_vehicle_converges()
        m.controller_ticks(1)
        assert m.rollout().state == "baking"
        m.controller_ticks(60)
        assert m.rollout().state == "baking"  # still watched
        m.controller_ticks(BAKE_SEC)
        assert m.rollout().state == "completed"
        m.invariants_hold()
    finally:
        m.teardown()


def test_a_crash_looping_canary_aborts_and_never_reaches_the_wave() -> None:
    m = scenario()
    try:
        m.vehicle_reports(IN_SELECTOR.index(m.rollout().canaries[0]), OUTCOMES[3])
        m.controller_ticks(1)
        rollout = m.rollout()
        assert rollout.state == "aborted"
        assert set(rollout.canaries) == set(rollout.rolled_back)
        assert not set(rollout.wave) & set(rollout.assigned)
        m.invariants_hold()
    finally:
        m.teardown()


def test_a_deferred_vehicle_holds_the_wave_until_the_deadline_then_it_passes() -> None:
    """Issue 13 item 3: at the deadline the deferred vehicle leaves the denominator; the
    converged ones are not rolled back, and it keeps its desired state."""
    m = scenario()
    try:
        m.every_assigned_vehicle_converges()
        m.controller_ticks(1)
        waiting = m.rollout().wave[0]
        m.every_assigned_vehicle_converges()
        m.vehicle_reports(IN_SELECTOR.index(waiting), OUTCOMES[1])  # outside its window
        m.controller_ticks(60)
        assert m.rollout().state == "wave"  # 5/6 < 95 %: it waits for the window
        view = msgspec.to_builtins(m.cp.queries.rollout("ro-1"))
        assert view["phases"]["wave"]["deferredBy"] == {"DENY_OUTSIDE_WINDOW": 1}
        assert [w["vehicleId"] for w in view["outstanding"]] == [waiting]
        m.controller_ticks(700)  # past the wave deadline
        rollout = m.rollout()
        assert rollout.state == "baking" and rollout.rolled_back == []
        m.controller_ticks(BAKE_SEC)
        assert m.rollout().state == "completed"
        assert m.cp.queries.rollout("ro-1").vehicles[0].status != "rolled_back"
        latest = [e for e in m.assignments() if e["vehicleId"] == waiting][-1]
        assert latest["data"]["assignment"]["releaseKey"] == m.new.key
        m.invariants_hold()
    finally:
        m.teardown()


def test_a_tripwire_during_the_bake_rolls_back_every_vehicle() -> None:
    """Issue 13 items 1, 2: a crash loop reported after the wave gate passed (19/20-style
    threshold met) still rolls back, canaries included."""
    m = scenario()
    try:
        m.every_assigned_vehicle_converges()
        m.controller_ticks(1)
        m.every_assigned_vehicle_converges()
        m.controller_ticks(1)
        assert m.rollout().state == "baking"
        m.vehicle_reports(IN_SELECTOR.index(m.rollout().wave[0]), OUTCOMES[3])
        m.controller_ticks(1)
        rollout = m.rollout()
        assert rollout.state == "rolled_back"
        assert sorted(rollout.rolled_back) == sorted(IN_SELECTOR)
        m.invariants_hold()
    finally:
        m.teardown()


def test_time_paused_does_not_count_toward_the_deadline() -> None:
    """Issue 13 item 7."""
    m = scenario()
    try:
        m.operator_pauses(0)
        m.controller_ticks(700)  # longer than the canary deadline, all of it paused
        m.operator_resumes()
        m.controller_ticks(1)
        assert m.rollout().state == "canary"  # the clock stood still
        m.controller_ticks(DEADLINE_SEC)
        assert m.rollout().state == "aborted"
        m.invariants_hold()
    finally:
        m.teardown()


def test_a_vehicle_without_a_previous_release_is_told_to_run_nothing() -> None:
    """Issue 13 item 4: rolling back a vehicle's first release issues a new revision that
    says "run nothing" (a document with no stack), and only vehicles given a rollback
    revision count as rolled back: the wave member never assigned is not."""
    cp = ControlPlane.open(memory_settings(Path(mkdtemp())))
    try:
        fresh = ["n-eu-m3-1", "n-eu-m3-2"]
        register_fleet(cp, [registration(v, ring="7") for v in fresh])
        first = signed_release(version="1.0.0")
        cp.execute(first.register())
        request = RolloutRequest(
            selector="ring=7", stack=first.release.stack_name, version="1.0.0", rollout_id="ro-7"
        )
        cp.execute(start_rollout(request, fresh[:1], fresh[1:], cause(), cp.sign, cp.clock))
        assert cp.execute(roll_back("ro-7", cause(), cp.sign, cp.clock)).value == 1
        cp.projector.catch_up()
        view = msgspec.to_builtins(cp.queries.rollout("ro-7"))
        assert view["state"] == "rolled_back"
        # Given its rollback, not confirmed yet: rolling back, and outstanding.
        assert sum(p["rollingBack"] for p in view["phases"].values()) == 1
        assert sum(p["rolledBack"] for p in view["phases"].values()) == 0
        assert {v["vehicleId"]: v["status"] for v in view["vehicles"]} == {
            "n-eu-m3-1": "rolling_back",
            "n-eu-m3-2": "not_assigned",  # the rollout ended before its wave
        }
        assert view["outstandingTotal"] == 1
        rolled = [
            e for e in cp.queries.audit(rollout_id="ro-7") if e.event_type == "Rollout.RolledBack"
        ]
        assert [e.data["vehicle_ids"] for e in rolled] == [fresh[:1]]
        revision = rolled[0].data["revision"]
        assert revision
        latest = cp.queries.desired_document(fresh[0])
        assert latest is not None
        assert (latest.revision, latest.release_key) == (revision, "")
        signed = base64.b64decode(latest.decoded_envelope().payload)
        document = decode(signed, DesiredStateDocument)
        assert document.stack is None and document.sequence == 2
    finally:
        cp.close()
