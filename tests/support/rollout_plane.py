"""A control plane with one rollout started and its canary assigned, whose canary's
reports are written without waiting for the views: the rig of the rollouts view's
report-order tests and of the direct-assignment tests."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import assign_desired_state, record_reconcile
from muto.cloud.settings import Settings
from muto.cloud.writer import UnitOfWork
from muto.domain.events import RolloutPolicy
from muto.domain.model.rollout import Rollout
from muto.domain.reasons import ReasonCode
from muto.domain.report_order import ReportPlace
from muto.domain.reports import ReconcileStatus
from muto.domain.requests import RolloutThresholds
from tests.support.releases import signed_release
from tests.support.spine import (
    cause,
    desired_request,
    reconcile_report,
    register_fleet,
    registration,
    view_rows,
)

AT = "2026-01-01T00:00:00+00:00"
OLD, NEW = signed_release("core", "1.0.0"), signed_release("core", "2.0.0")
CANARY, WAVE = "v0", ["v1", "v2"]
ROLLOUT = "ro-1"
CRASH_LOOP = [ReasonCode.CRASH_LOOP_DETECTED, ReasonCode.ROLLBACK_APPLIED]
EXPIRED = [ReasonCode.DESIRED_STATE_EXPIRED]
# A failure's codes by status (every failure says why); converged says nothing.
REPORT_IDS = itertools.count(1)
CODES = {
    ReconcileStatus.CONVERGED: [],
    ReconcileStatus.BLOCKED: [ReasonCode.DENY_MOVING],
    ReconcileStatus.REJECTED: EXPIRED,
    ReconcileStatus.ROLLED_BACK: CRASH_LOOP,
    ReconcileStatus.FAILED: [ReasonCode.APPLY_FAILED],
}


class Plane:
    """A control plane with rollout ro-1 started (canary v0, wave v1 v2) and its canary
    assigned; writes are stored without waiting for the views (`catch_up` moves them)."""

    def __init__(self, settings: Settings, at_start: dict[str, str | None] | None = None) -> None:
        self.at_start = dict.fromkeys([CANARY, *WAVE]) if at_start is None else at_start
        self.cp = cp = ControlPlane.open(settings)
        register_fleet(cp, [registration(v) for v in [CANARY, *WAVE]])
        cp.execute(OLD.register())
        cp.execute(NEW.register())
        cp.execute(self._start)
        self.canary = self.assign([CANARY], NEW, "canary")
        self.rollbacks: list[str] = []
        cp.projector.catch_up()

    def _start(self, uow: UnitOfWork) -> None:
        uow.add(
            Rollout(
                rollout_id=ROLLOUT,
                selector="model=m3",
                release_key=NEW.key,
                manifest_digest=NEW.digest,
                policy=RolloutPolicy(),
                thresholds=RolloutThresholds(converged_pct=95.0),
                canaries=[CANARY],
                wave=WAVE,
                previous_releases=dict.fromkeys([CANARY, *WAVE], OLD.key),
                # None of them had a desired state (a test may start one without this:
                # a rollout started before it was kept).
                desired_at_start=self.at_start,
                started_at=AT,
                actor="controller",
                correlation_id=ROLLOUT,
            )
        )

    def assign(self, vehicle_ids: list[str], release: Any, phase: str | None = None) -> str:
        """A revision of `release` for `vehicle_ids`: the rollout's `phase`, or (None) a
        rollback of the rollout."""

        def command(uow: UnitOfWork) -> str:
            assigned = assign_desired_state(
                desired_request("model=m3", release), vehicle_ids, cause(ROLLOUT),
                self.cp.sign, rollout_id=ROLLOUT, phase=phase,
            )(uow)  # fmt: skip
            rollout = uow.find(Rollout, Rollout.create_id(ROLLOUT))
            assert rollout is not None
            if phase is None:
                rollout.record_rolled_back(
                    assigned.revision, vehicle_ids, "operator", "operator", ROLLOUT
                )
            else:
                rollout.record_assigned(
                    phase, assigned.revision, vehicle_ids, AT, "controller", ROLLOUT
                )
            return assigned.revision

        revision: str = self.cp.writer.execute(command).value
        return revision

    def roll_back(self) -> str:
        self.rollbacks.append(self.assign([CANARY], OLD))
        return self.rollbacks[-1]

    def report(
        self,
        revision: str,
        number: int | None,
        status: ReconcileStatus,
        codes: Sequence[ReasonCode] | None = None,
        minute: int = 0,
    ) -> None:
        """The canary's report #`number` of its journal (None: an agent without one),
        each with its own report id: the writer drops a re-delivery it remembers, the
        view must place what reaches it."""
        body = reconcile_report(
            CANARY,
            f"report-{next(REPORT_IDS)}",
            status,
            revision=revision,
            reason_codes=CODES[status] if codes is None else codes,
            minute=minute,
            sequence=1,
            journal=None if number is None else ReportPlace(incarnation="j", number=number),
        )
        self.cp.writer.execute(record_reconcile(body, f"vehicle:{CANARY}"))

    def member(self) -> tuple[str, list[str]]:
        self.cp.projector.catch_up()
        (found,) = [m for m in self.cp.queries.rollout(ROLLOUT).vehicles if m.vehicle_id == CANARY]
        return str(found.status), [str(c) for c in found.reason_codes]

    def assert_rebuild_equal(self) -> None:
        self.cp.projector.catch_up()
        incremental = view_rows(self.cp.views)
        self.cp.projector.rebuild("rollouts")
        assert view_rows(self.cp.views) == incremental, "rebuilding the rollouts view changed it"
