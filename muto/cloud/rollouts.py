"""Rollout commands: start (canaries assigned in the same transaction), phase decisions,
pause/resume, and fleet rollback (a new, higher revision pointing to each vehicle's
previous release — never a replay of an old document — or, for a vehicle that had none,
a revision that says "run nothing"). A rollback covers every vehicle the rollout
changed, whichever phase failed, and leaves none of them on the rollout's release."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

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
from muto.domain.model.rollout import Rollout, RolloutState
from muto.domain.model.vehicle import Vehicle
from muto.domain.reasons import ReasonCode
from muto.domain.requests import RolloutRequest
from muto.domain.rollout_rules import Evaluation, Verdict
from muto.domain.selectors import parse_selector
from muto.domain.wire import convert, to_builtins

# The control plane's wall clock (aware UTC datetimes); not the agent's Clock protocol.
WallClock = Callable[[], datetime]


def new_rollout_id() -> str:
    return f"ro_{uuid.uuid4().hex[:16]}"


def _rollout(uow: UnitOfWork, rollout_id: str) -> Rollout:
    rollout = uow.find(Rollout, Rollout.create_id(rollout_id))
    if rollout is None:
        raise NotFound(f"rollout {rollout_id!r} does not exist")
    return rollout


def _previous_release(vehicle: Vehicle) -> str | None:
    """What the vehicle ran before this rollout: its last reported running release,
    else its last assigned one."""
    running = (vehicle.last_report or {}).get("running")
    if running:
        return f"{running['name']}@{running['version']}"
    return (vehicle.assignment or {}).get("releaseKey")


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
                RolloutRef(strategy="canary", wave_id="rollback", rollout_id=rollout.rollout_id)
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
    for vehicle_id in vehicle_ids:
        if vehicle_id in rollout.rolled_back:
            continue
        by_release.setdefault(rollout.previous_releases.get(vehicle_id), []).append(vehicle_id)
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
                phase="rollback",
                now=clock,
            )(uow)
        else:
            assignment = assign_desired_state(
                _request(rollout, release_key, "rollback"),
                members,
                cause,
                sign,
                rollout_id=rollout.rollout_id,
                phase="rollback",
                now=clock,
            )(uow)
        issued += len(members)
        rollout.record_rolled_back(
            assignment.revision, members, why, cause.actor, cause.correlation_id
        )
    return issued


def start_rollout(
    request: RolloutRequest,
    canaries: list[str],
    wave: list[str],
    cause: Cause,
    sign: SignDocument,
    clock: WallClock,
) -> Command[str]:
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
        rollout = Rollout(
            rollout_id=rollout_id,
            selector=request.selector,
            release_key=stored.key,
            manifest_digest=stored.manifest_digest,
            policy=RolloutPolicy(policy=request.policy, agent_config=request.agent_config),
            thresholds=request.thresholds,
            canaries=canaries,
            wave=wave,
            previous_releases={v.vehicle_id: _previous_release(v) for v in vehicles},
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
    """Carry out a verdict on `phase` (canary, wave or baking). False (nothing stored)
    when the rollout moved on or was paused since the evaluation was made: the
    controller re-evaluates next tick. A failure rolls back every vehicle the rollout
    changed (canaries included), with the decision's reason code as the cause."""

    def command(uow: UnitOfWork) -> bool:
        rollout = _rollout(uow, rollout_id)
        if rollout.state != phase or rollout.paused or verdict is Verdict.WAIT:
            return False
        passed = verdict is Verdict.PASS
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
    release back. Returns how many vehicles were given a rollback revision now."""

    def command(uow: UnitOfWork) -> int:
        rollout = _rollout(uow, rollout_id)
        if rollout.state == RolloutState.ROLLED_BACK and not (
            set(rollout.assigned) - set(rollout.rolled_back)
        ):
            return 0
        return _roll_back(
            uow,
            rollout,
            sorted(rollout.assigned),
            ReasonCode.OPERATOR_ROLLBACK,
            cause,
            sign,
            clock,
        )

    return command
