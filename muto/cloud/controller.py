"""The rollout controller: evaluates each active rollout's gates from the views and the
stored phase start times, and carries out verdicts as events.

It keeps no state of its own: everything it needs is in the log and the views, so a
cloud restart mid-rollout resumes exactly where it stopped, and deadlines run from stored
times, not from in-memory timers. Where several cloud processes share one PostgreSQL,
only the holder of an advisory lock acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Text, bindparam, cast, func, or_, select

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause
from muto.cloud.rollouts import decide
from muto.domain.model.rollout import ACTIVE_STATES, Rollout
from muto.domain.rollout_rules import (
    Member,
    MemberStatus,
    Verdict,
    evaluate_phase,
    watch_bake,
)
from muto.projections.locks import Lease, Lock

logger = logging.getLogger("muto.controller")
ACTIVE = tuple(str(state) for state in ACTIVE_STATES)


@dataclass(frozen=True)
class Standing:
    """What the gates need of a rollout, read off its aggregate without copying it."""

    state: str
    final: bool
    paused: bool
    converged_pct: float
    deadlines: dict[str, str | None]

    @classmethod
    def of(cls, rollout: Rollout) -> Standing:
        return cls(
            state=rollout.state,
            final=rollout.is_final,
            paused=rollout.paused,
            converged_pct=rollout.thresholds["convergedPct"],
            deadlines={p: rollout.deadline(p) for p in ("canary", "wave", "baking")},
        )


class RolloutController:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.lease = Lease(plane.views.store.engine, Lock.CONTROLLER)
        self.ticks = 0  # evaluations done as the leader (metric muto_rollout_controller_ticks)
        table = plane.views.rollouts.rollouts
        active = or_(*(table.c.state == state for state in ACTIVE))  # store.read: no IN
        self._active = select(table.c.rollout_id).where(active, table.c.paused.is_(False))
        # The rollout's members as the gates read them, counted by (phase, status,
        # reason codes) in SQL: this runs twice a second, and reading every member's
        # row (10,000 in a large wave) was a tenth of the cloud's time at 1,000. Every
        # phase is read: a tripwire counts from any member. (The codes are compared as
        # text: PostgreSQL's json type has no equality.)
        v = plane.views.rollouts.vehicles
        codes = cast(v.c.reason_codes, Text)
        self._members = (
            select(v.c.phase, v.c.status, codes, func.count())
            .where(v.c.rollout_id == bindparam("rollout"))
            .group_by(v.c.phase, v.c.status, codes)
        )

    def is_leader(self) -> bool:
        return self.lease.held()

    def active(self) -> list[str]:
        return [r[0] for r in self.plane.views.store.read(self._active)]

    def tick(self) -> int:
        """Evaluate every active rollout once; returns the number of decisions stored."""
        if not self.is_leader():
            return 0
        # The gates judge the views as of now; a step that finds nothing would still be
        # a write transaction (PostgreSQL), twice a second.
        projector = self.plane.projector
        if projector.behind():
            projector.catch_up()
        decided = sum(self.evaluate(rollout_id) for rollout_id in self.active())
        self.ticks += 1
        return decided

    def evaluate(self, rollout_id: str) -> bool:
        plane = self.plane
        standing = plane.log.writer_repository.peek(Rollout.create_id(rollout_id), Standing.of)
        if standing.final or standing.paused:
            return False
        state = standing.state
        gated = "wave" if state == "baking" else state  # a bake re-judges the wave
        found = plane.views.store.read(self._members, {"rollout": rollout_id})
        by_phase: dict[str, list[Member]] = {"canary": [], "wave": []}
        for phase, status, codes, count in found:
            # The gates judge members by status and codes alone, never by id.
            member = Member("", MemberStatus(status), tuple(msgspec.json.decode(codes or "[]")))
            by_phase[phase].extend([member] * count)
        now = plane.clock()

        def passed(phase: str) -> bool:
            deadline = standing.deadlines.get(phase)
            return deadline is not None and now >= datetime.fromisoformat(deadline)

        evaluation = evaluate_phase(
            by_phase[gated],
            standing.converged_pct,
            passed(gated),
            earlier=by_phase["canary"] if gated == "wave" else (),
            need_evidence=gated == "canary",
        )
        verdict = watch_bake(evaluation, passed(state)) if state == "baking" else evaluation.verdict
        if verdict is Verdict.WAIT:
            return False
        cause = Cause("controller", rollout_id)
        decided = plane.execute(
            decide(rollout_id, state, verdict, evaluation, cause, plane.sign, plane.clock)
        ).value
        if decided:
            share = evaluation.converged_pct
            logger.info(
                "rollout %s %s: %s (%s, codes %s)",
                rollout_id,
                state,
                verdict,
                "none counted" if share is None else f"{share}% converged",
                evaluation.reason_codes,
            )
        return decided

    def close(self) -> None:
        self.lease.release()


@asynccontextmanager
async def controller_factory(
    plane: ControlPlane, interval: float = 0.5
) -> AsyncIterator[dict[str, Any]]:
    """Runs the controller inside the API process (an app extension)."""
    controller = RolloutController(plane)
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(controller.tick)
            except Exception:  # logged; the next tick re-evaluates from stored facts
                logger.exception("rollout controller tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    task = asyncio.create_task(loop(), name="muto-rollout-controller")
    try:
        yield {"controller": controller, "leases": {"controller": controller.lease}}
    finally:
        stop.set()
        await task
        controller.close()
