"""Rollout progress: the rollout's state, its current phase's deadline, and each
targeted vehicle's phase and status (pending, assigned, converged, deferred by gate,
failed by reason, rolling back, rolled back, left).

A member's outcome is its newest report on its revision by the agent's journal, placed
by the rule the inventory uses (muto/domain/report_order.py, `admit`), never the last
to arrive: an older report delivered late never hides a newer one (a crash loop behind
an earlier `converged`). A member given a rollback revision is `rolling_back` until its
newest report there says `converged`: only then is it `rolled_back` (with the codes it
had when it was given the rollback). Until then it may still run the rollout's release:
a report refusing or holding the rollback revision (rejected, blocked, failed...) says
why in its reason codes, and a newer one may take it back to `rolling_back`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    MetaData,
    String,
    Table,
    and_,
    func,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from muto.domain.events import StoredReconcile, plain
from muto.domain.model.rollout_states import ACTIVE_STATES, phase_limit
from muto.domain.reasons import ReasonCode
from muto.domain.report_order import ReportLedger, admit_stored
from muto.domain.reports import FAILED_THERE
from muto.domain.rollout_rules import (
    GIVEN_ROLLBACK,
    NOT_SUPERSEDED,
    MemberStatus,
    phase_deadline,
    supersedes,
)
from muto.projections.base import Projection, Update, event_type
from muto.projections.rows import Rows

# Reconcile status -> the vehicle's status within its rollout.
ROLLOUT_STATUS = {
    "converged": "converged",
    "blocked": "deferred",
    "rejected": "failed",
    "rolled_back": "failed",
    "failed": "failed",
}
DECISIONS = {
    "Rollout.CanaryGatePassed": "wave",
    "Rollout.CanaryGateFailed": "aborted",
    "Rollout.WaveGatePassed": "baking",
    "Rollout.WaveGateFailed": "rolled_back",
    "Rollout.BakeCompleted": "completed",
    "Rollout.BakeFailed": "rolled_back",
}
FINAL = ("completed", "aborted", "rolled_back")
ACTIVE = tuple(str(state) for state in ACTIVE_STATES)
# A member given a rollback revision: not confirmed yet, and confirmed (converged there).
ROLLING_BACK, ROLLED_BACK = str(MemberStatus.ROLLING_BACK), str(MemberStatus.ROLLED_BACK)
PAIRS_PER_LOAD = 250  # (vehicle, revision) pairs a SELECT asks for: within SQLite's limit
_decode_ledger = msgspec.json.Decoder(ReportLedger).decode


def _deadline(at: str, thresholds: Mapping[str, Any], phase: str) -> str:
    limit = phase_limit(thresholds, phase)
    return phase_deadline(datetime.fromisoformat(at), limit, 0.0).isoformat()


class RolloutProgress(Projection):
    name = "rollouts"
    # 2: a member given a rollback is `rolling_back` until it reports converged on it
    # (version 1 said `rolled_back` once the revision was issued; same columns).
    # 3: a rejection for STALE_REVISION is no verdict on the member (`_no_verdict`).
    version = 3

    def define(self, metadata: MetaData) -> list[Table]:
        self.rollouts = Table(
            "view_rollouts",
            metadata,
            Column("rollout_id", String(128), primary_key=True),
            Column("state", String(32), nullable=False),
            Column("paused", Boolean, nullable=False),
            Column("selector", String(1024), nullable=False),
            Column("release_key", String(300), nullable=False),
            Column("thresholds", JSON, nullable=False),
            Column("decisions", JSON, nullable=False),
            # When the current phase times out (the bake's end while baking); pushed out
            # by time spent paused; None once final.
            Column("deadline_at", String(40)),
            Column("paused_at", String(40)),
            Column("started_at", String(40), nullable=False),
            Column("updated_at", String(40), nullable=False),
        )
        self.vehicles = Table(
            "view_rollout_vehicles",
            metadata,
            Column("rollout_id", String(128), primary_key=True),
            Column("vehicle_id", String(128), primary_key=True, index=True),
            Column("phase", String(16), nullable=False),
            Column("revision", String(64)),
            Column("status", String(16), nullable=False),
            Column("reason_codes", JSON, nullable=False),
            Column("updated_at", String(40), nullable=False),
            # What places the next report on `revision` (report_order.py: the ledger).
            # Null until a report is shown; emptied when the member gets a revision.
            Column("report_ledger", JSON),
            # A member given a rollback: its reason codes then, shown once its rollback
            # took (`rolled_back`; while `rolling_back` it shows why it has not).
            Column("rollback_codes", JSON),
            # The revision the rollout gave the member (`revision` moves on to a
            # rollback's): a late report on it is still the member's (`_place_late`).
            Column("assigned_revision", String(64)),
            # A member given a newer desired state than the rollout's: that revision.
            Column("superseded_by", String(64)),
        )
        self.rollout_rows = Rows(self.rollouts, "rollout_id")
        # A batch's reports with an outcome, in log order, until written (`_write_reports`).
        self._reports: list[Any] = []
        self._outcomes = Rows(self.vehicles, "rollout_id", "vehicle_id")
        return [self.rollouts, self.vehicles]

    @property
    def updates(self) -> Mapping[str, Update]:
        table: dict[str, Update] = {
            "Rollout.Started": self._started,
            "Rollout.PhaseAssigned": self._assigned,
            "Rollout.Paused": self._paused,
            "Rollout.Resumed": self._paused,
            "Rollout.RolledBack": self._rolled_back,
            "Rollout.MembersLeft": self._left,
            "Rollout.MembersSuperseded": self._superseded,
            "DesiredState.Created": self._desired,
        }
        table.update(dict.fromkeys(DECISIONS, self._decided))
        return table

    # Reports are the most frequent event. Those with a revision and an outcome are kept
    # and placed together, before any other update of this view so that log order
    # holds: one SELECT of the members they name (by the vehicle's index, only the pairs
    # of the batch: a report no rollout assigned finds no row), the rule applied in
    # memory, one UPDATE of the rows changed. Asking first which revisions rollouts
    # assigned read every member of every rollout ever run, once per batch: a tenth of
    # the projector at 10,000 vehicles.

    @property
    def reads(self) -> frozenset[str]:
        return frozenset(self._routes) | {"Vehicle.ReconcileReported"}

    def apply(self, session: Session, event: object, position: int) -> None:
        if event_type(event) == "Vehicle.ReconcileReported":
            self._reported(session, event)
            return
        self._write_reports(session)
        super().apply(session, event, position)

    def flush(self, session: Session) -> None:
        self._write_reports(session)

    def discard(self) -> None:
        self._reports = []
        super().discard()

    def clear(self, session: Session) -> None:
        self._reports = []
        super().clear(session)

    def _write_reports(self, s: Session) -> None:
        """The kept reports applied to their members in log order, each row changed in
        memory and written once (rows.py: `write_changes`, one statement per set of
        columns changed)."""
        reports, self._reports = self._reports, []
        if not reports:
            return
        pairs = {(e.vehicle_id, e.report.desired_state_revision) for e in reports}
        # Failures may be late: on the revision a rollout gave a member it since rolled
        # back (the member's row has moved on to the rollback revision).
        late = {
            (e.vehicle_id, e.report.desired_state_revision)
            for e in reports
            if e.report.status in FAILED_THERE
        }
        loaded: dict[tuple[str, str], dict[str, Any]] = {}
        members = self._load(s, pairs, "revision", loaded)
        given = self._load(s, late, "assigned_revision", loaded) if late else {}
        if not members and not given:
            return
        placed: dict[tuple[str, str], dict[str, Any]] = {}
        for e in reports:
            pair = (e.vehicle_id, e.report.desired_state_revision)
            for row in members.get(pair, ()):
                if _place(row, e):
                    placed[row["rollout_id"], row["vehicle_id"]] = row
            for row in given.get(pair, ()):
                if row["revision"] != row["assigned_revision"] and _place_late(row, e):
                    placed[row["rollout_id"], row["vehicle_id"]] = row
        self._outcomes.write_changes(s, [(key, _settled(row)) for key, row in placed.items()])

    def _load(
        self,
        s: Session,
        pairs: set[tuple[str, str]],
        column: str,
        loaded: dict[tuple[str, str], dict[str, Any]],
    ) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """The members holding these (vehicle, `column`) pairs, by pair (a vehicle's
        revision is one rollout's, but nothing here relies on it). JSON columns come back
        as their text; `_place` decodes one when it needs it. A row already `loaded` (by
        its key) is that one: a member changed through two pairs is written once."""
        found: dict[tuple[str, str], list[dict[str, Any]]] = {}
        ordered = sorted(pairs)
        for start in range(0, len(ordered), PAIRS_PER_LOAD):
            chunk = ordered[start : start + PAIRS_PER_LOAD]
            wanted = {
                "vehicle_id": list({v for v, _ in chunk}),
                column: list({r for _, r in chunk}),
            }
            for row in self._outcomes.select_in(s, wanted):
                key = (row["vehicle_id"], row[column])
                if key in pairs:
                    row = loaded.setdefault((row["rollout_id"], row["vehicle_id"]), row)
                    found.setdefault(key, []).append(row)
        return found

    def _started(self, s: Session, e: Any, _: int) -> None:
        at = e.timestamp.isoformat()
        s.execute(
            self.rollouts.insert().values(
                rollout_id=e.rollout_id,
                state="canary",
                paused=False,
                selector=e.selector,
                release_key=e.release_key,
                thresholds=plain(e.thresholds),
                decisions=[],
                deadline_at=None,
                paused_at=None,
                started_at=at,
                updated_at=at,
            )
        )
        rows = [(v, "canary") for v in e.canaries] + [(v, "wave") for v in e.wave]
        if rows:
            s.execute(
                self.vehicles.insert(),
                [
                    {
                        "rollout_id": e.rollout_id,
                        "vehicle_id": v,
                        "phase": phase,
                        "status": "pending",
                        "reason_codes": [],
                        "updated_at": at,
                    }
                    for v, phase in rows
                ],
            )

    def _rollout(self, s: Session, e: Any, **values: Any) -> None:
        self.rollout_rows.update(
            s, {"rollout_id": e.rollout_id}, updated_at=e.timestamp.isoformat(), **values
        )

    def _set_vehicles(self, s: Session, e: Any, vehicle_ids: list[str], **values: Any) -> None:
        c = self.vehicles.c
        s.execute(
            update(self.vehicles)
            .where(and_(c.rollout_id == e.rollout_id, c.vehicle_id.in_(vehicle_ids)))
            .values(updated_at=e.timestamp.isoformat(), **values)
        )

    def _row(self, s: Session, e: Any) -> Any:
        return s.execute(
            self.rollouts.select().where(self.rollouts.c.rollout_id == e.rollout_id)
        ).one()

    def _assigned(self, s: Session, e: Any, _: int) -> None:
        self._set_vehicles(
            s, e, e.vehicle_ids, revision=e.revision, status="assigned", reason_codes=[],
            rollback_codes=null(), assigned_revision=e.revision, **NO_REPORT,
        )  # fmt: skip
        row = self._row(s, e)
        if row.state == e.phase and row.deadline_at is None:  # the phase starts
            self._rollout(s, e, deadline_at=_deadline(e.at, row.thresholds, e.phase))

    def _left(self, s: Session, e: Any, _: int) -> None:
        self._set_vehicles(s, e, e.vehicle_ids, status="left", reason_codes=[])

    def _superseded(self, s: Session, e: Any, _: int) -> None:
        by_revision: dict[str | None, list[str]] = {}
        for vehicle_id, revision in e.superseded_by.items():
            by_revision.setdefault(revision, []).append(vehicle_id)
        for revision, vehicle_ids in by_revision.items():
            self._set_vehicles(
                s, e, vehicle_ids, status="superseded", superseded_by=revision, reason_codes=[]
            )

    def _desired(self, s: Session, e: Any, _: int) -> None:
        """A newer intent than their rollout's own supersedes members of an active
        rollout at once, by the rule the controller applies (`rollout_rules.supersedes`):
        a revision issued by anyone but their rollout — a direct assignment (the API
        refuses it; one that raced the refusal is shown for what it is) or another
        rollout's, its rollback included (but for one back to their rollout's release,
        which restores its intent). In log order, any revision seen here was issued
        after the rollout started. They are neither judged nor outstanding; the
        controller records it in the rollout's own events when it next acts on them.

        A member still `rolling_back` (its rollout final) given any other revision will
        never report on its rollback revision: it is superseded too, not outstanding."""
        if not e.vehicle_ids:
            return
        c, r = self.vehicles.c, self.rollouts.c
        judged = and_(c.status.not_in(sorted(NOT_SUPERSEDED)), r.state.in_(ACTIVE))
        reachable = [or_(judged, c.status == ROLLING_BACK)]
        if e.rollout_id is not None:  # its own rollout's revisions never supersede
            reachable.append(c.rollout_id != e.rollout_id)
        superseded: dict[str, list[str]] = {}
        for start in range(0, len(e.vehicle_ids), 500):
            found = s.execute(
                select(c.rollout_id, c.vehicle_id, c.assigned_revision, r.release_key, c.status)
                .join(self.rollouts, r.rollout_id == c.rollout_id)
                .where(c.vehicle_id.in_(e.vehicle_ids[start : start + 500]), *reachable)
            )
            for rollout_id, vehicle_id, given, release_key, status in found:
                ours = (rollout_id, release_key, given)
                if status == ROLLING_BACK or supersedes(
                    *ours, e.revision, e.rollout_id, e.release_key, True
                ):
                    superseded.setdefault(rollout_id, []).append(vehicle_id)
        at = e.timestamp.isoformat()
        for rollout_id, vehicle_ids in superseded.items():
            for start in range(0, len(vehicle_ids), 500):
                s.execute(
                    update(self.vehicles)
                    .where(
                        c.rollout_id == rollout_id,
                        c.vehicle_id.in_(vehicle_ids[start : start + 500]),
                    )
                    .values(
                        status="superseded",
                        superseded_by=e.revision,
                        reason_codes=[],
                        updated_at=at,
                    )
                )

    def _decided(self, s: Session, e: Any, position: int) -> None:
        row = self._row(s, e)
        decision = {
            "event": event_type(e).split(".", 1)[1],
            "at": e.timestamp.isoformat(),
            "position": position,
            "reasonCode": e.reason_code,
            "evaluation": plain(e.evaluation),
        }
        state = DECISIONS[event_type(e)]
        # The next phase's clock starts with its assignment (the wave) or now (a bake).
        at = getattr(e, "at", "") or e.timestamp.isoformat()
        deadline = _deadline(at, row.thresholds, "baking") if state == "baking" else None
        final = {"paused": False, "paused_at": None} if state in FINAL else {}
        self._rollout(
            s,
            e,
            state=state,
            decisions=[*row.decisions, decision],
            deadline_at=deadline,
            **final,
        )

    def _paused(self, s: Session, e: Any, _: int) -> None:
        at = getattr(e, "at", "") or e.timestamp.isoformat()
        if event_type(e) == "Rollout.Paused":
            self._rollout(s, e, paused=True, paused_at=at)
            return
        row = self._row(s, e)
        deadline = row.deadline_at
        if deadline is not None and row.paused_at is not None:  # the clock stood still
            held = datetime.fromisoformat(at) - datetime.fromisoformat(row.paused_at)
            deadline = (datetime.fromisoformat(deadline) + max(held, timedelta())).isoformat()
        self._rollout(s, e, paused=False, paused_at=None, deadline_at=deadline)

    def _rolled_back(self, s: Session, e: Any, _: int) -> None:
        """The rollback revision issued: its members are `rolling_back`, with no codes
        (nothing is heard on it yet), until they report on it (`_place`)."""
        if e.revision:  # no revision: nothing was issued, so nothing counts as rolled back
            c = self.vehicles.c
            # A member rolled back again keeps the codes of its first rollback.
            first = func.coalesce(c.rollback_codes, c.reason_codes)
            self._set_vehicles(
                s, e, e.vehicle_ids, revision=e.revision, status=ROLLING_BACK,
                rollback_codes=first, reason_codes=[], **NO_REPORT,
            )  # fmt: skip
        row = self._row(s, e)
        if row.state in (*ACTIVE, "completed"):
            self._rollout(s, e, state="rolled_back", paused=False, paused_at=None, deadline_at=None)

    def _reported(self, s: Session, e: Any) -> None:
        report: StoredReconcile = e.report
        if (
            report.desired_state_revision is not None
            and report.status in ROLLOUT_STATUS
            and not _no_verdict(report)
        ):
            self._reports.append(e)


def _no_verdict(report: StoredReconcile) -> bool:
    """A rejection for STALE_REVISION: the vehicle took a later document than the one it
    refused (a cloud restored from a backup, which then re-issues the revision above it;
    or an old document replayed), which says nothing of the revision's release. Counted
    `failed`, a canary gate judged before the re-issue arrived would abort the rollout."""
    return report.status == "rejected" and ReasonCode.STALE_REVISION in report.reason_codes


# A member given a new revision has no report on it yet (SQL NULL: a JSON column's None
# would be stored as JSON null).
NO_REPORT: dict[str, Any] = {"report_ledger": null()}


def _place(row: dict[str, Any], e: Any) -> bool:
    """Place report event `e` on its member (a `_load`ed row); False when it is not the
    newest there. The row's columns are built once per batch (`_settled`): a vehicle
    sends several reports a batch during catch-up. A member given a rollback revision
    (`rollback_codes` kept) is `rolled_back` once its newest report there is
    `converged`, showing the codes it had when given it; any other report (failed,
    rejected, blocked...) keeps or makes it `rolling_back`, showing why."""
    report: StoredReconcile = e.report
    ledger = row.get(_LEDGER)
    if ledger is None:
        text = row["report_ledger"]
        ledger = ReportLedger() if text is None else _decode_ledger(text)
    shown = admit_stored(ledger, report.journal, report.sequence, report.observed_at)
    if shown is None:
        row[_LEDGER] = ledger
        return False
    row[_LEDGER] = shown
    if row["status"] == "superseded":  # its intent is another's: its reports are not ours
        return True
    if row["status"] not in GIVEN_ROLLBACK:  # no report changes that within a batch
        row[_SHOWN] = e
        return True
    codes = Rows.parsed(row, "reason_codes")
    if report.status != "converged":
        status, shows = ROLLING_BACK, report.reason_codes
    else:
        kept = Rows.parsed(row, "rollback_codes")
        status, shows = ROLLED_BACK, codes if kept is None else kept
    if shows != codes or status != row["status"]:
        row["status"], row["reason_codes"] = status, shows
        row[_RECODED] = e.timestamp.isoformat()
    return True


def _place_late(row: dict[str, Any], e: Any) -> bool:
    """A failure reported on the revision the rollout gave a member it has since rolled
    back (the report arrived, or was made, after the rollback revision was issued): the
    member's row records it all the same. Its codes join the codes the member was
    rolled back with (shown, and counted in `rolledBackBy`, whenever those are), and
    no decision changes. False when they are already there."""
    codes = Rows.parsed(row, "reason_codes")
    kept = Rows.parsed(row, "rollback_codes")
    before = codes if kept is None else kept
    merged = [*before, *(c for c in e.report.reason_codes if c not in before)]
    if merged == before:
        return False
    row["rollback_codes"], row[_LATE] = merged, e.timestamp.isoformat()
    if row["status"] == ROLLED_BACK:  # showing the codes it was rolled back with
        row["reason_codes"], row[_RECODED] = merged, e.timestamp.isoformat()
    return True


def _settled(row: dict[str, Any]) -> dict[str, Any]:
    """A placed member's changed columns."""
    values: dict[str, Any] = {}
    if _LEDGER in row:
        values["report_ledger"] = row[_LEDGER]
    if _LATE in row:
        values.update(rollback_codes=row["rollback_codes"], updated_at=row[_LATE])
    e = row.get(_SHOWN)
    if e is not None:
        report: StoredReconcile = e.report
        values.update(
            status=ROLLOUT_STATUS[report.status],
            reason_codes=report.reason_codes,
            updated_at=e.timestamp.isoformat(),
        )
    elif _RECODED in row:
        values.update(
            status=row["status"], reason_codes=row["reason_codes"], updated_at=row[_RECODED]
        )
    return values


# While a batch holds a `_load`ed member: its report ledger, decoded; the last report
# shown (a member not given a rollback); when its status or codes last changed (one
# given a rollback).
_LEDGER, _SHOWN, _RECODED = "__ledger", "__shown", "__recoded"
_LATE = "__late"  # when a late failure on the rollout's revision was last recorded
