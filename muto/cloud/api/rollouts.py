"""POST /rollouts, GET /rollouts[/{id}], POST /rollouts/{id}/pause|resume|rollback."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from muto.cloud.api.context import (
    body,
    correlation,
    idempotency_key,
    int_param,
    keyed,
    off_loop,
    operator,
    plane,
    replayed,
    write_once,
)
from muto.cloud.api.desired import refuse_unverifiable
from muto.cloud.api.exclusive import one_at_a_time
from muto.cloud.api.responses import ok
from muto.cloud.commands import Cause
from muto.cloud.errors import Conflict
from muto.cloud.idempotency import Answer, KeyedRequest, once
from muto.cloud.queries import (
    members_in_other_active_rollouts,
    rollout_candidates,
    rollouts,
    vehicles_in_active_rollouts,
)
from muto.cloud.rollouts import UncheckedRollbacks, pause, resume, roll_back, start_rollout
from muto.cloud.tokens import Principal
from muto.cloud.writer import Command, Written
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import release_key
from muto.domain.requests import RolloutRequest
from muto.domain.rollout_rules import Candidate, pick_canaries
from muto.domain.selectors import parse_selector


async def create(request: Request) -> Response:
    """With an Idempotency-Key, a resend is answered 201 with the rollout the first
    request started (as it is now), with no second start (muto.cloud.idempotency)."""
    who = await operator(request)
    header = correlation(request)
    key = idempotency_key(request)
    wanted = await body(request, RolloutRequest)
    keyed_request = keyed(request, who, key, wanted)
    cause = Cause.of(who.actor, wanted.correlation_id or header)
    async with one_at_a_time(request, "rollout-start"):  # the check, then the write
        written = await write_once(
            request, keyed_request, lambda: _create(request, wanted, keyed_request, cause)
        )
    cp = plane(request)
    cp.require_views(written)
    answer = written.value
    found = await off_loop(cp.queries.rollout, answer.data["rolloutId"])
    return ok(found, answer.status, {"position": written.position}, replayed(answer))


async def _create(
    request: Request, wanted: RolloutRequest, key: KeyedRequest | None, cause: Cause
) -> Written[Answer]:
    cp = plane(request)
    await refuse_unverifiable(request, wanted.stack, wanted.version)
    vehicle_ids = await off_loop(cp.queries.vehicle_ids, parse_selector(wanted.selector))
    busy = await off_loop(vehicles_in_active_rollouts, cp.queries, vehicle_ids)
    if busy:
        raise Conflict(
            f"{len(busy)} selected vehicle(s) are in another active rollout",
            [{"vehicleId": v, "rolloutId": r} for v, r in sorted(busy.items())],
        )
    candidates = [
        Candidate(
            vehicle_id=r["vehicle_id"],
            region=r["labels"].get("region", ""),
            model=r["labels"].get("model", ""),
            presence=r["presence"],  # None: never connected, ranks last
            blocked=r["last_status"] == "blocked",
            runs_release=r["running_release"] == release_key(wanted.stack, wanted.version),
        )
        for r in await off_loop(rollout_candidates, cp.queries, vehicle_ids)
    ]
    canaries, wave = pick_canaries(candidates)
    # The releases its rollback would restore, as the start computes them (from the
    # vehicles as the write finds them): each checked before the rollout may start.
    checked: set[str] | None = None if cp.signing.configured is None else set()
    for _ in range(CHECK_ROUNDS):
        frozen = None if checked is None else frozenset(checked)
        command = start_rollout(wanted, canaries, wave, cause, cp.sign, cp.clock, frozen)
        try:
            return await cp.write(once(key, command, _started, cause, cp.clock))
        except UncheckedRollbacks as exc:
            assert checked is not None
            await _refuse_unverifiable_rollbacks(request, wanted, exc.targets)
            checked.update(exc.targets)
    raise Conflict(
        "the selected vehicles' releases kept changing while the releases their rollback "
        "would restore were checked; start the rollout again"
    )


# Rounds of checking the releases a rollout's rollback would restore: another round only
# when a vehicle's history changed between the check and the start (a report came in).
CHECK_ROUNDS = 3


async def _refuse_unverifiable_rollbacks(
    request: Request, wanted: RolloutRequest, targets: dict[str, list[str]]
) -> None:
    """VERIFY_SIGNATURE_FAILED (422) naming each release the rollout's rollback would
    restore that the release keys in force do not verify (after a key rotation retired
    the keys that signed it): every member given that rollback would refuse it and keep
    the failing release. Checked as an assignment is (`refuse_unverifiable`)."""
    refused = []
    for target, members in sorted(targets.items()):
        stack, _, version = target.partition("@")
        try:
            await refuse_unverifiable(request, stack, version)
        except ReasonError as exc:
            refused.append(f"{exc.detail} [the rollback of {len(members)} vehicle(s)]")
    if refused:
        raise ReasonError(
            ReasonCode.VERIFY_SIGNATURE_FAILED,
            f"rollout of {release_key(wanted.stack, wanted.version)} not started: its "
            "rollback would restore release(s) the release keys in force do not verify, "
            "and every vehicle would refuse that rollback; re-sign each with the keys in "
            "force and push it again (muto releases push adds the signatures): "
            + "; ".join(refused),
        )


def _started(rollout_id: str) -> Answer:
    """What a rollout's key stores: its id (the answer shows the rollout as it is)."""
    return Answer(201, {"rolloutId": rollout_id})


async def listing(request: Request) -> Response:
    await operator(request)
    limit = int_param(request, "limit", 100, 1, 1000)
    found = await off_loop(rollouts, plane(request).queries, limit)
    return ok(found, metadata={"total": len(found)})


async def one(request: Request) -> Response:
    await operator(request)
    return ok(await off_loop(plane(request).queries.rollout, request.path_params["rollout_id"]))


async def _act(request: Request, who: Principal, action: str) -> Response:
    cp = plane(request)
    rollout_id = request.path_params["rollout_id"]
    cause = Cause.of(who.actor, correlation(request))
    command: Command[Any]
    if action == "pause":
        command = pause(rollout_id, cause, cp.clock)
    elif action == "resume":
        command = resume(rollout_id, cause, cp.clock)
    else:
        command = roll_back(rollout_id, cause, cp.sign, cp.clock)
    written = await cp.write(command)
    cp.require_views(written)
    found = await off_loop(cp.queries.rollout, rollout_id)
    return ok(found, metadata={"position": written.position})


async def pause_rollout(request: Request) -> Response:
    return await _act(request, await operator(request), "pause")


async def resume_rollout(request: Request) -> Response:
    return await _act(request, await operator(request), "resume")


async def rollback_rollout(request: Request) -> Response:
    """Refused while any member is in another active rollout: that rollout would
    assign over the rollback, and later roll back to the release this rollback took
    away. Checked under the rollout-start lock, so that no rollout starts meanwhile."""
    who = await operator(request)
    async with one_at_a_time(request, "rollout-start"):
        cp, rollout_id = plane(request), request.path_params["rollout_id"]
        busy = await off_loop(members_in_other_active_rollouts, cp.queries, rollout_id)
        if busy:
            raise Conflict(
                f"{len(busy)} vehicle(s) of rollout {rollout_id!r} are in another active "
                "rollout: finish or roll back that one first",
                [{"vehicleId": v, "rolloutId": r} for v, r in sorted(busy.items())],
            )
        return await _act(request, who, "rollback")
