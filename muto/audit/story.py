"""`explain`: the story of one vehicle or one rollout, picked out of the log's entries.

Pure functions over entries in log order (functional core); `wanted_for_*` tell the
reader which stored records are worth decoding at all.

A vehicle's story: its own events (registration, desired-state assignments, reconcile
and health transitions with reason codes, presence), the events of every rollout that
targeted it (start, gates with their counts and thresholds, its phase's assignment,
pauses, rollbacks that included it) and the tokens issued for it.
A rollout's story: its events, the desired-state revisions it created, and the
reconcile reports on those revisions (what the gates counted); and where it stands
(`standing`): its state, its current phase's deadline and the members that phase still
waits for, with their presence and last report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.persistence import Notification

from muto.audit.source import Entry, qualname
from muto.domain.model.rollout import Rollout
from muto.domain.model.rollout_states import WAITS_FOR, phase_limit
from muto.domain.model.vehicle import Vehicle
from muto.domain.rollout_rules import left_when_paused, phase_deadline
from muto.projections.rollouts import ROLLOUT_STATUS

MEMBERSHIP = ("Rollout.PhaseAssigned", "Rollout.RolledBack")  # name the vehicles they touch
# Rollout events that decided what happens next; the assignment that follows is theirs.
DECISIONS = (
    "Rollout.Started",
    "Rollout.CanaryGatePassed",
    "Rollout.CanaryGateFailed",
    "Rollout.WaveGatePassed",
    "Rollout.WaveGateFailed",
    "Rollout.BakeCompleted",
    "Rollout.BakeFailed",
)
ENDS = {  # decision -> the state it leads to
    "Rollout.CanaryGatePassed": "wave",
    "Rollout.CanaryGateFailed": "aborted",
    "Rollout.WaveGatePassed": "baking",
    "Rollout.WaveGateFailed": "rolled_back",
    "Rollout.BakeCompleted": "completed",
    "Rollout.BakeFailed": "rolled_back",
}
OPERATOR_ROLLBACK = "OPERATOR_ROLLBACK"
# Aggregates whose events may concern any vehicle: a vehicle's story reads all of them.
SHARED = ("Rollout", "DesiredState", "AccessToken")


def _kind(record: Notification) -> str:
    return qualname(record).partition(".")[0]


def wanted_for_vehicle(vehicle_id: str) -> Callable[[Notification], bool]:
    stream = Vehicle.create_id(vehicle_id)
    return lambda r: r.originator_id == stream or _kind(r) in SHARED


def wanted_for_rollout(rollout_id: str) -> Callable[[Notification], bool]:
    stream = Rollout.create_id(rollout_id)
    return lambda r: (
        r.originator_id == stream
        or _kind(r) == "DesiredState"
        or qualname(r) in ("Vehicle.ReconcileReported", "Vehicle.PresenceChanged")
    )


def vehicle_story(entries: Iterable[Entry], vehicle_id: str) -> list[Entry]:
    rollouts: set[str] = set()  # rollouts that targeted the vehicle
    tokens: set[str] = set()  # tokens issued for it
    story = []
    for e in entries:
        d, kind = e.data, e.type.partition(".")[0]
        if kind == "Vehicle":
            keep = d.get("vehicle_id") == vehicle_id
        elif e.type == "Rollout.Started":
            keep = vehicle_id in d["canaries"] or vehicle_id in d["wave"]
            if keep:
                rollouts.add(d["rollout_id"])
        elif kind == "Rollout":
            keep = d.get("rollout_id") in rollouts and (
                e.type not in MEMBERSHIP or vehicle_id in d["vehicle_ids"]
            )
        elif e.type == "AccessToken.Issued":
            keep = d.get("vehicle_id") == vehicle_id
            if keep:
                tokens.add(d["token_id"])
        else:
            keep = e.type == "AccessToken.Revoked" and d.get("token_id") in tokens
        if keep:
            story.append(e)
    return story


def rollout_story(entries: Iterable[Entry], rollout_id: str) -> list[Entry]:
    """The rollout's records, its revisions, and the reports on those revisions by the
    vehicles given them (another vehicle's report naming one is not the rollout's)."""
    given: dict[str, set[str]] = {}  # revision -> the vehicles it was issued to
    story = []
    for e in entries:
        d = e.data
        if e.type.startswith("Rollout.") or e.type == "DesiredState.Created":
            keep = d.get("rollout_id") == rollout_id
            if keep and e.type == "DesiredState.Created":
                given[d["revision"]] = set(d["vehicle_ids"])
        else:
            keep = e.type == "Vehicle.ReconcileReported" and d.get("vehicle_id") in given.get(
                d["report"].get("desiredStateRevision"), ()
            )
        if keep:
            story.append(e)
    return story


@dataclass(frozen=True)
class Told:
    """What a vehicle was told to run at an instant, why, and what it said back."""

    vehicle_id: str
    at: datetime
    assignment: Entry | None  # the last desired state assigned at or before `at`
    because: list[Entry]  # the decision and the rollout record behind it
    expired: bool  # the document's expiresAt had passed by `at`
    reported: Entry | None  # the last reconcile report at or before `at`
    health: Entry | None  # the last health transition at or before `at`

    def to_json(self) -> dict[str, Any]:
        def one(entry: Entry | None) -> dict[str, Any] | None:
            return None if entry is None else entry.to_json()

        return {
            "vehicleId": self.vehicle_id,
            "at": self.at.isoformat(),
            "assignment": one(self.assignment),
            "because": [e.to_json() for e in self.because],
            "expired": self.expired,
            "reported": one(self.reported),
            "health": one(self.health),
        }


def _last(entries: Sequence[Entry], event: str) -> Entry | None:
    return next((e for e in reversed(entries) if e.type == event), None)


def because(entries: Sequence[Entry], assignment: Entry) -> list[Entry]:
    """Why an assignment was made. Without a rollout: the desired-state revision (the
    operator's request and target). With one: the rollout event that recorded the
    assignment (phase assigned, or rolled back), preceded by the decision that led to it
    (rollout start, or a gate verdict) unless an operator ordered the rollback."""
    a = assignment.data["assignment"]
    revision, rollout_id = a["revision"], a.get("rolloutId")
    if rollout_id is None:
        return [
            e
            for e in entries
            if e.type == "DesiredState.Created" and e.data["revision"] == revision
        ]
    rollout = [
        e
        for e in entries
        if e.type.startswith("Rollout.") and e.data.get("rollout_id") == rollout_id
    ]
    record = next(
        (e for e in rollout if e.type in MEMBERSHIP and e.data["revision"] == revision), None
    )
    if record is None:
        return []
    if record.type == "Rollout.RolledBack" and record.data["cause"] == OPERATOR_ROLLBACK:
        return [record]
    decisions = [e for e in rollout if e.position < record.position and e.type in DECISIONS]
    decision = decisions[-1] if decisions else None
    return [record] if decision is None else [decision, record]


def told_at(entries: Sequence[Entry], vehicle_id: str, at: datetime) -> Told:
    """`entries`: the log (or the part `wanted_for_vehicle` keeps), in order."""
    before = [e for e in vehicle_story(entries, vehicle_id) if e.at <= at]
    assignment = _last(before, "Vehicle.DesiredStateAssigned")
    expired = False
    if assignment is not None:
        expired = datetime.fromisoformat(assignment.data["assignment"]["expiresAt"]) <= at
    return Told(
        vehicle_id=vehicle_id,
        at=at,
        assignment=assignment,
        because=[] if assignment is None else because(entries, assignment),
        expired=expired,
        reported=_last(before, "Vehicle.ReconcileReported"),
        health=_last(before, "Vehicle.HealthChanged"),
    )


@dataclass(frozen=True)
class Waiting:
    """A member its phase still waits for, and what the log last heard from it."""

    vehicle_id: str
    status: str  # pending, assigned or deferred; rolling_back (its rollback not confirmed)
    presence: Entry | None
    reported: Entry | None


@dataclass(frozen=True)
class Standing:
    state: str
    paused: bool
    deadline: datetime | None  # the current phase's (the bake's end while baking)
    outstanding: list[Waiting]
    left_s: float | None = None  # paused: what the phase has left (it has no deadline)


def _at(entry: Entry) -> datetime:
    stored = entry.data.get("at")
    return datetime.fromisoformat(stored) if stored else entry.at


def standing(entries: Iterable[Entry], rollout_id: str) -> Standing | None:
    """Where the rollout stands at the end of `entries` (the log, or the part
    `wanted_for_rollout` keeps): the same facts GET /rollouts/{id} shows, from the log."""
    state, paused, paused_at = "", False, None
    thresholds: dict[str, Any] = {}
    phase_of: dict[str, str] = {}
    revision_of: dict[str, str] = {}
    started: dict[str, datetime] = {}
    held: dict[str, float] = {}
    done: set[str] = set()  # left, or rolled back
    outcome: dict[str, str] = {}  # vehicle -> its status for the revision it was assigned
    # Members given a rollback revision, until they report converged on it (or are given
    # another revision: they never will): whatever the state, the rollout waits for them.
    rolling: set[str] = set()
    presence: dict[str, Entry] = {}
    reported: dict[str, Entry] = {}
    for e in entries:
        d = e.data
        if e.type.startswith("Rollout.") and d.get("rollout_id") != rollout_id:
            continue
        if e.type == "Rollout.Started":
            state, thresholds = "canary", d["thresholds"]
            phase_of = {v: "canary" for v in d["canaries"]} | {v: "wave" for v in d["wave"]}
        elif e.type == "Rollout.PhaseAssigned":
            started.setdefault(d["phase"], _at(e))
            revision_of.update(dict.fromkeys(d["vehicle_ids"], d["revision"]))
        elif e.type in ENDS:
            state = ENDS[e.type]
            if state == "baking":
                started["baking"] = _at(e)
        elif e.type == "Rollout.Paused":
            paused, paused_at = True, _at(e)
        elif e.type == "Rollout.Resumed" and paused_at is not None:
            paused = False
            held[state] = held.get(state, 0.0) + (_at(e) - paused_at).total_seconds()
        elif e.type in ("Rollout.MembersLeft", "Rollout.RolledBack"):
            done.update(d["vehicle_ids"])
            if e.type == "Rollout.RolledBack" and d.get("revision"):
                revision_of.update(dict.fromkeys(d["vehicle_ids"], d["revision"]))
                rolling.update(d["vehicle_ids"])
                for vehicle in d["vehicle_ids"]:
                    outcome.pop(vehicle, None)
            if e.type == "Rollout.RolledBack" and state in (
                "canary",
                "wave",
                "baking",
                "completed",
            ):
                state = "rolled_back"
        elif e.type == "DesiredState.Created" and d.get("rollout_id") != rollout_id:
            rolling.difference_update(d["vehicle_ids"])  # a newer intent: superseded
        elif e.type == "Vehicle.PresenceChanged":
            presence[d["vehicle_id"]] = e
        elif e.type == "Vehicle.ReconcileReported":
            vehicle = d["vehicle_id"]
            reported[vehicle] = e
            status = ROLLOUT_STATUS.get(d["report"]["status"])
            if status and d["report"].get("desiredStateRevision") == revision_of.get(vehicle):
                outcome[vehicle] = status
        if state in ("completed", "aborted", "rolled_back"):
            paused = False
    if not state:
        return None
    phase = WAITS_FOR.get(state)
    deadline: datetime | None = None
    if phase is not None and state in started:
        deadline = phase_deadline(
            started[state], phase_limit(thresholds, state), held.get(state, 0.0)
        )
    left = None
    if paused and deadline is not None and paused_at is not None:
        left = left_when_paused(deadline, paused_at)
        deadline = None
    outstanding = [
        Waiting(
            vehicle_id=v,
            status=outcome.get(v, "assigned" if v in revision_of else "pending"),
            presence=presence.get(v),
            reported=reported.get(v),
        )
        for v in sorted(phase_of)
        if phase_of[v] == phase and v not in done and outcome.get(v) not in ("converged", "failed")
    ]
    outstanding += [
        Waiting(v, "rolling_back", presence.get(v), reported.get(v))
        for v in sorted(rolling)
        if outcome.get(v) != "converged"
    ]
    return Standing(state, paused, deadline, outstanding, left)
