"""Rollout commands: start (canaries assigned in the same transaction), phase decisions,
pause/resume, and fleet rollback (a new, higher revision pointing to each vehicle's
previous release — never a replay of an old document — or, for a vehicle that had none,
a revision that says "run nothing"). A rollback covers every vehicle the rollout
changed, whichever phase failed, and leaves none of them on the rollout's release."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from muto.cloud.commands import (
    Assignment,
    Cause,
    SignDocument,
    assign_desired_state,
    assign_run_nothing,
    incompatibilities,
    load_release,
    registered_vehicle,
)
from muto.cloud.errors import Conflict, Invalid, NotFound
from muto.cloud.writer import Command, UnitOfWork
from muto.domain.desired import DesiredStateRequest, RolloutRef, RunNothing, StackRef, Target
from muto.domain.events import GateEvaluation, RolloutPolicy
from muto.domain.model.desired_state import DesiredState
from muto.domain.model.rollout import Rollout, RolloutState
from muto.domain.model.rollout_states import WAITS_FOR
from muto.domain.model.vehicle import Vehicle
from muto.domain.reasons import ReasonCode
from muto.domain.reports import FAILED_THERE
from muto.domain.requests import RolloutRequest
from muto.domain.rollout_rules import Evaluation, Given, Verdict, rollback_target, supersedes
from muto.domain.selectors import parse_selector
from muto.domain.wire import convert, to_builtins

# The phase of a rollback revision (DesiredAssignment.phase, the desired state's waveId).
ROLLBACK = "rollback"
# The control plane's wall clock (aware UTC datetimes); not the agent's Clock protocol.
WallClock = Callable[[], datetime]


def new_rollout_id() -> str:
    return f"ro_{uuid.uuid4().hex[:16]}"


def _rollout(uow: UnitOfWork, rollout_id: str) -> Rollout:
    rollout = uow.find(Rollout, Rollout.create_id(rollout_id))
    if rollout is None:
        raise NotFound(f"rollout {rollout_id!r} does not exist")
    return rollout


def _previous_release(vehicle: Vehicle, release_key: str) -> str | None:
    """The release a rollback of `release_key` returns the vehicle to
    (`rollout_rules.rollback_target`, which says the rule): from its last report (what
    it runs, on which revision) and its desired state and the one before, a rollback
    revision among them marking what came before it as not known good."""
    given = [
        Given(
            revision=a.get("revision") or "",
            release=a.get("releaseKey"),
            rollback=a.get("phase") == ROLLBACK,
        )
        for a in (vehicle.assignment, vehicle.previous_assignment)
        if a is not None
    ]
    report = vehicle.last_report or {}
    running = report.get("running")
    return rollback_target(
        release_key,
        given,
        running=f"{running['name']}@{running['version']}" if running else None,
        reported_on=report.get("desiredStateRevision"),
        failed=report.get("status") in FAILED_THERE,
    )


def _still_given(uow: UnitOfWork, rollout: Rollout, vehicle_ids: Sequence[str]) -> list[str]:
    """Those of `vehicle_ids` whose desired state is still this rollout's release as a
    rollout gave it: the revision this rollout gave them, or another rollout's rollback
    back to it. A vehicle given a newer intent since (`rollout_rules.supersedes`: a
    direct assignment, even of the same release, another rollout's wave or rollback to
    another release) keeps it: a rollback never overrides a newer intent."""
    still: list[str] = []
    for vehicle_id in vehicle_ids:
        assignment = _vehicle_assignment(uow, vehicle_id)
        given = rollout.assigned.get(vehicle_id)
        if (
            given is not None
            and assignment.get("releaseKey") == rollout.release_key
            and not _supersedes(rollout, given, assignment, issued_since=True)
        ):
            still.append(vehicle_id)
    return still


def _newer_intents(
    uow: UnitOfWork, rollout: Rollout, vehicle_ids: Sequence[str]
) -> dict[str, str | None]:
    """Those of `vehicle_ids` given a newer desired state than the rollout's own for
    them (vehicle id -> the revision they have now), by the rule the rollouts view
    applies too (`rollout_rules.supersedes`). Rolled back and known superseded ones
    excluded."""
    found: dict[str, str | None] = {}
    known = rollout.superseded
    for vehicle_id in vehicle_ids:
        if vehicle_id in rollout.rolled_back or vehicle_id in known:
            continue
        assignment = _vehicle_assignment(uow, vehicle_id)
        current = assignment.get("revision")
        given = rollout.assigned.get(vehicle_id)
        since = given is None and _issued_since_start(uow, rollout, vehicle_id, current)
        if _supersedes(rollout, given, assignment, issued_since=since):
            found[vehicle_id] = current
    return found


def _supersedes(
    rollout: Rollout,
    given: str | None,
    assignment: dict[str, Any],
    *,
    issued_since: bool,
) -> bool:
    """`rollout_rules.supersedes` on a member's desired state now (`assignment`)."""
    return supersedes(
        rollout.rollout_id,
        rollout.release_key,
        given,
        assignment.get("revision"),
        assignment.get("rolloutId"),
        assignment.get("releaseKey"),
        issued_since,
    )


def _issued_since_start(
    uow: UnitOfWork, rollout: Rollout, vehicle_id: str, current: str | None
) -> bool:
    """Whether a member's revision `current` was issued after the rollout started, in
    the store's order: it is not the revision the member had when the rollout started
    (read in the start's own write; revisions are never issued twice, a renewal keeps
    its revision). A rollout started before that was kept has only the wall clocks of
    the two aggregates' creation to go by (they may be two processes' clocks)."""
    if current is None:
        return False
    known, at_start = rollout.desired_at_start(vehicle_id)
    if known:
        return current != at_start
    issued = uow.find(DesiredState, DesiredState.create_id(current))
    return issued is not None and issued.created_on > rollout.created_on


def _vehicle_assignment(uow: UnitOfWork, vehicle_id: str) -> dict[str, Any]:
    vehicle = uow.find(Vehicle, Vehicle.create_id(vehicle_id))
    return (vehicle.assignment if vehicle is not None else None) or {}


def _request(rollout: Rollout, release_key: str, phase: str) -> DesiredStateRequest:
    stack, _, version = release_key.partition("@")
    return convert(
        {
            "target": to_builtins(Target(selector=rollout.selector)),
            "stack": to_builtins(StackRef(name=stack, version=version)),
            "policy": rollout.policy["policy"],
            "agentConfig": rollout.policy["agentConfig"],
            "rollout": to_builtins(
                RolloutRef(strategy="canary", wave_id=phase, rollout_id=rollout.rollout_id)
            ),
        },
        DesiredStateRequest,
    )


def _run_nothing(rollout: Rollout) -> RunNothing:
    return convert(
        {
            "target": to_builtins(Target(selector=rollout.selector)),
            "policy": rollout.policy["policy"],
            "agentConfig": rollout.policy["agentConfig"],
            "rollout": to_builtins(
                RolloutRef(strategy="canary", wave_id=ROLLBACK, rollout_id=rollout.rollout_id)
            ),
        },
        RunNothing,
    )


def _assign_phase(
    uow: UnitOfWork,
    rollout: Rollout,
    phase: str,
    vehicle_ids: list[str],
    cause: Cause,
    sign: SignDocument,
    clock: WallClock,
) -> None:
    if not vehicle_ids:
        return
    assign = assign_desired_state(
        _request(rollout, rollout.release_key, phase),
        vehicle_ids,
        cause,
        sign,
        rollout_id=rollout.rollout_id,
        phase=phase,
        now=clock,
    )
    assignment = assign(uow)
    rollout.record_assigned(
        phase,
        assignment.revision,
        vehicle_ids,
        clock().isoformat(),
        cause.actor,
        cause.correlation_id,
    )


def _roll_back(
    uow: UnitOfWork,
    rollout: Rollout,
    vehicle_ids: Sequence[str],
    why: ReasonCode,
    cause: Cause,
    sign: SignDocument,
    clock: WallClock,
) -> int:
    """One rollback revision per previous release, `why` its reason code; vehicles
    that had no release before the rollout get one revision that says "run nothing".
    Returns how many vehicles were given a rollback revision."""
    by_release: dict[str | None, list[str]] = {}
    still = _still_given(uow, rollout, vehicle_ids)
    for vehicle_id in still:
        if vehicle_id in rollout.rolled_back:
            continue
        by_release.setdefault(rollout.previous_releases.get(vehicle_id), []).append(vehicle_id)
    moved_on = _newer_intents(uow, rollout, [v for v in vehicle_ids if v not in still])
    if moved_on:  # they keep the newer intent, and the rollout's record says so
        rollout.supersede(moved_on, clock().isoformat(), cause.actor, cause.correlation_id)
    issued = 0
    for release_key, members in sorted(by_release.items(), key=lambda kv: kv[0] or ""):
        assignment: Assignment
        if release_key is None:
            assignment = assign_run_nothing(
                _run_nothing(rollout),
                members,
                cause,
                sign,
                rollout_id=rollout.rollout_id,
                phase=ROLLBACK,
                now=clock,
            )(uow)
        else:
            assignment = assign_desired_state(
                _request(rollout, release_key, ROLLBACK),
                members,
                cause,
                sign,
                rollout_id=rollout.rollout_id,
                phase=ROLLBACK,
                now=clock,
            )(uow)
        issued += len(members)
        rollout.record_rolled_back(
            assignment.revision, members, why, cause.actor, cause.correlation_id
        )
    return issued


class UncheckedRollbacks(Exception):
    """A rollout would roll members back to releases not yet checked against the
    release keys in force (`start_rollout`'s `rollbacks_checked`): release -> members.
    Nothing is stored; the caller checks them and starts the rollout again."""

    def __init__(self, targets: dict[str, list[str]]) -> None:
        super().__init__(f"rollback targets to check: {', '.join(sorted(targets))}")
        self.targets = targets


def _rollback_targets(previous: Mapping[str, str | None]) -> dict[str, list[str]]:
    """Each release a rollback would restore (its previous releases, "run nothing"
    aside: it needs no signature) -> the members it would restore it to."""
    targets: dict[str, list[str]] = {}
    for vehicle_id, release in sorted(previous.items()):
        if release is not None:
            targets.setdefault(release, []).append(vehicle_id)
    return targets


def start_rollout(
    request: RolloutRequest,
    canaries: list[str],
    wave: list[str],
    cause: Cause,
    sign: SignDocument,
    clock: WallClock,
    rollbacks_checked: Collection[str] | None = None,
) -> Command[str]:
    """`rollbacks_checked` (None: not checked): the releases already found signed by
    the release keys in force. A rollback to any other raises UncheckedRollbacks before
    anything is stored: the API checks each release the rollout's rollback would
    restore, as computed here, before any canary is assigned (a vehicle refuses a
    rollback its keys do not verify, and would keep the failing release)."""
    rollout_id = request.rollout_id or new_rollout_id()

    def command(uow: UnitOfWork) -> str:
        if uow.find(Rollout, Rollout.create_id(rollout_id)) is not None:
            raise Conflict(f"rollout {rollout_id!r} already exists")
        if not canaries:
            raise Invalid("the selector matches no vehicles", {"selector": request.selector})
        stored = load_release(uow, request.stack, request.version)
        vehicles = [registered_vehicle(uow, vehicle_id) for vehicle_id in [*canaries, *wave]]
        incompatible = incompatibilities(stored.manifest, vehicles)
        if incompatible:
            raise Invalid(
                f"release {stored.key} is incompatible with {len(incompatible)} "
                "selected vehicle(s)",
                incompatible,
            )
        previous = {v.vehicle_id: _previous_release(v, stored.key) for v in vehicles}
        if rollbacks_checked is not None:
            targets = _rollback_targets(previous)
            unchecked = {k: v for k, v in targets.items() if k not in rollbacks_checked}
            if unchecked:
                raise UncheckedRollbacks(unchecked)
        rollout = Rollout(
            rollout_id=rollout_id,
            selector=request.selector,
            release_key=stored.key,
            manifest_digest=stored.manifest_digest,
            policy=RolloutPolicy(policy=request.policy, agent_config=request.agent_config),
            thresholds=request.thresholds,
            canaries=canaries,
            wave=wave,
            previous_releases=previous,
            desired_at_start={v.vehicle_id: (v.assignment or {}).get("revision") for v in vehicles},
            started_at=clock().isoformat(),
            actor=cause.actor,
            correlation_id=cause.correlation_id,
        )
        uow.add(rollout)
        _assign_phase(uow, rollout, RolloutState.CANARY.value, canaries, cause, sign, clock)
        return rollout_id

    return command


def _assign_wave(
    uow: UnitOfWork, rollout: Rollout, cause: Cause, sign: SignDocument, clock: WallClock
) -> None:
    """Membership is fixed at start, with one exception: a wave member whose labels no
    longer match the selector when its wave is assigned leaves the rollout (the
    operator relabelled it out) and is not given the release."""
    selector = parse_selector(rollout.selector)
    staying: list[str] = []
    leaving: list[str] = []
    for vehicle_id in rollout.wave:
        vehicle = uow.find(Vehicle, Vehicle.create_id(vehicle_id))
        matches = vehicle is not None and selector.matches(vehicle.labels)
        (staying if matches else leaving).append(vehicle_id)
    if leaving:
        rollout.leave(leaving, clock().isoformat(), cause.actor, cause.correlation_id)
    # A member given a newer desired state since the rollout started (a direct
    # assignment that raced the refusal) keeps it: the wave never assigns over it.
    newer = _newer_intents(uow, rollout, staying)
    if newer:
        rollout.supersede(newer, clock().isoformat(), cause.actor, cause.correlation_id)
    staying = [v for v in staying if v not in newer]
    _assign_phase(uow, rollout, RolloutState.WAVE.value, staying, cause, sign, clock)


# The reason code a failed gate rolls back with.
ROLLBACK_CAUSES = {
    RolloutState.CANARY: ReasonCode.CANARY_GATE_FAILED,
    RolloutState.WAVE: ReasonCode.WAVE_GATE_FAILED,
    RolloutState.BAKING: ReasonCode.BAKE_FAILED,
}


def decide(
    rollout_id: str,
    phase: str,
    verdict: Verdict,
    evaluation: Evaluation,
    cause: Cause,
    sign: SignDocument,
    clock: WallClock,
) -> Command[bool]:
    """Carry out a verdict on `phase` (canary, wave or baking). False (no decision) when
    the rollout moved on or was paused since the evaluation was made, or a failure
    counted members superseded since (recorded as such): the controller re-evaluates
    next tick. A failure rolls back every vehicle the rollout
    changed (canaries included), with the decision's reason code as the cause."""

    def command(uow: UnitOfWork) -> bool:
        rollout = _rollout(uow, rollout_id)
        if rollout.state != phase or rollout.paused or verdict is Verdict.WAIT:
            return False
        passed = verdict is Verdict.PASS
        if not passed:
            # Members the views still judge though a newer intent replaced the
            # rollout's (the views had not shown it yet): recorded, and the gate is
            # evaluated again without them next tick (they never fail the others).
            waited = WAITS_FOR[phase]
            judged = rollout.canaries if waited == RolloutState.CANARY else rollout.wave
            newer = _newer_intents(uow, rollout, [v for v in judged if v in rollout.assigned])
            if newer:
                rollout.supersede(newer, clock().isoformat(), cause.actor, cause.correlation_id)
                return False
        rollout.decide(
            phase,
            passed=passed,
            evaluation=GateEvaluation.of(evaluation),
            actor=cause.actor,
            correlation_id=cause.correlation_id,
            at=clock().isoformat(),
        )
        if passed:
            if phase == RolloutState.CANARY:
                _assign_wave(uow, rollout, cause, sign, clock)
            return True
        why = ROLLBACK_CAUSES[RolloutState(phase)]
        _roll_back(uow, rollout, sorted(rollout.assigned), why, cause, sign, clock)
        return True

    return command


def pause(rollout_id: str, cause: Cause, clock: WallClock) -> Command[None]:
    def command(uow: UnitOfWork) -> None:
        _rollout(uow, rollout_id).pause(cause.actor, cause.correlation_id, clock().isoformat())

    return command


def resume(rollout_id: str, cause: Cause, clock: WallClock) -> Command[None]:
    def command(uow: UnitOfWork) -> None:
        _rollout(uow, rollout_id).resume(cause.actor, cause.correlation_id, clock().isoformat())

    return command


def roll_back(rollout_id: str, cause: Cause, sign: SignDocument, clock: WallClock) -> Command[int]:
    """Operator fleet rollback: every vehicle the rollout assigned gets its previous
    release back, except those given another release since (`_still_given`). Returns
    how many vehicles were given a rollback revision now. An active rollout ends even
    if none is left to roll back; a completed or aborted one whose vehicles have all
    moved on is a Conflict: rolling it back would change nothing, and saying so beats
    a silent success."""

    def command(uow: UnitOfWork) -> int:
        rollout = _rollout(uow, rollout_id)
        left = sorted(set(rollout.assigned) - set(rollout.rolled_back))
        if not left:
            return 0
        why = ReasonCode.OPERATOR_ROLLBACK
        issued = _roll_back(uow, rollout, left, why, cause, sign, clock)
        if issued or rollout.state == RolloutState.ROLLED_BACK:
            return issued  # repeated: rolls back nobody twice
        if rollout.is_final:
            raise Conflict(
                f"every vehicle of rollout {rollout_id!r} not rolled back yet has been "
                f"given another release than {rollout.release_key} since",
                [_moved_on(uow, vehicle_id) for vehicle_id in left],
            )
        rollout.record_rolled_back("", [], why, cause.actor, cause.correlation_id)  # ends it
        return 0

    return command


def _moved_on(uow: UnitOfWork, vehicle_id: str) -> dict[str, Any]:
    """What a vehicle's desired state is now, for the operator told it moved on."""
    assignment = _vehicle_assignment(uow, vehicle_id)
    return {
        "vehicleId": vehicle_id,
        "revision": assignment.get("revision"),
        "rolloutId": assignment.get("rolloutId"),
        "phase": assignment.get("phase"),
    }
