"""One line per event, in the fleet's words: what an auditor reads in the table.

A routing table from event type to a function of the event's data; an event type with
no line yet is shown by its field names, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from muto.audit.source import Entry
from muto.domain.rollout_rules import stored_share

Describe = Callable[[dict[str, Any]], str]
SHOWN = 4  # vehicle ids listed before "+N more"


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:SHOWN])
    return shown + (f" +{len(ids) - SHOWN} more" if len(ids) > SHOWN else "")


def _codes(codes: Sequence[str] | None) -> str:
    return f" [{', '.join(codes)}]" if codes else ""


def _pairs(mapping: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(mapping.items()))


def _changed(kind: str, changes: dict[str, str | None]) -> list[str]:
    """A vehicle PATCH's changes to its labels or attributes: a value sets the key, None
    removes it (events.merge_labels), never the string "None"."""
    kept = {k: v for k, v in changes.items() if v is not None}
    gone = sorted(k for k, v in changes.items() if v is None)
    said = [f"set {kind}s {_pairs(kept)}"] if kept else []
    if gone:
        said.append(f"removed {kind}{'s' if len(gone) > 1 else ''} {','.join(gone)}")
    return said


def _updated(d: dict[str, Any]) -> str:
    said = _changed("label", d["labels"]) + _changed("attribute", d["attributes"])
    return "updated: " + ("; ".join(said) or "nothing changed")


def _assigned(d: dict[str, Any]) -> str:
    a = d["assignment"]
    why = ""
    if a.get("rolloutId"):
        why = f", rollout {a['rolloutId']} {a.get('phase') or ''}".rstrip()
    revision = f"revision {a['revision']}, sequence {d['sequence']}"
    return f"told to run {a['releaseKey'] or 'nothing'} ({revision}{why})"


def _reported(d: dict[str, Any]) -> str:
    r = d["report"]
    running = r.get("running")
    runs = f", running {running['name']}@{running['version']}" if running else ""
    revision = r.get("desiredStateRevision") or "no revision"
    return f"reported {r['status']} for {revision}{runs}{_codes(r.get('reasonCodes'))}"


def _health(d: dict[str, Any]) -> str:
    codes = _codes(d.get("report", {}).get("reasonCodes"))
    return f"health {d.get('previous') or 'unknown'} -> {d['status']}{codes}"


def _started(d: dict[str, Any]) -> str:
    t = d["thresholds"]
    return (
        f"rollout {d['rollout_id']} started: {d['release_key']} on '{d['selector']}', "
        f"canaries {_ids(d['canaries'])}, wave of {len(d['wave'])}; gate {t['convergedPct']}% "
        f"converged, deadlines canary {t['canaryDeadlineSec']}s wave {t['waveDeadlineSec']}s"
    )


def _gate(phase: str, outcome: str) -> Describe:
    def describe(d: dict[str, Any]) -> str:
        e = d["evaluation"]
        code = f" {d['reason_code']}" if d.get("reason_code") else ""
        share = stored_share(e)
        counted = f" of {e['counted']} counted" if e.get("counted") else ""
        of = "none counted" if share is None else f"{share}%{counted}"
        return (
            f"{phase} {outcome}{code}: {e['converged']}/{e['targeted']} converged "
            f"({of} vs {e['thresholdPct']}%), {e['deferred']} deferred, "
            f"{e['failed']} failed{_codes(e.get('reasonCodes'))}"
        )

    return describe


def _superseded_by(vehicle_id: str, revision: str | None) -> str:
    """A member superseded, and by which revision (None: it has no desired state now)."""
    if revision is None:
        return f"{vehicle_id} (it has no desired state now)"
    return f"{vehicle_id} by {revision}"


def _rolled_back(d: dict[str, Any]) -> str:
    to = f"revision {d['revision']}" if d["revision"] else "no new revision"
    # The decision and the revision issued, not the outcome: each vehicle is rolled
    # back once it reports converged on that revision (its reports say when).
    return f"rollback issued to {_ids(d['vehicle_ids'])} ({to}): {d['cause']}"


def _desired(d: dict[str, Any]) -> str:
    via = f" for rollout {d['rollout_id']}" if d.get("rollout_id") else ""
    return (
        f"revision {d['revision']}: {d['release_key'] or 'run nothing'} "
        f"to {_ids(d['vehicle_ids'])}{via}, {_target(d['request']['target'])}"
    )


def _target(t: dict[str, Any]) -> str:
    """A selector, or one vehicle (its id in `vehicleId`, or formerly in `selector`)."""
    if t.get("type") == "vehicle":
        return f"target vehicle {t.get('vehicleId') or t.get('selector')}"
    return f"target '{t.get('selector')}'"


def _rotated(d: dict[str, Any]) -> str:
    keys = ", ".join(k[:16] for k in d["key_ids"])
    return (
        f"release keys rotated to version {d['version']}: {d['threshold']} of "
        f"{len(d['key_ids'])} key(s) {keys}"
    )


LINES: dict[str, Describe] = {
    "Vehicle.Registered": lambda d: f"registered, labels {_pairs(d['labels'])}",
    "Vehicle.Updated": _updated,
    "Vehicle.DesiredStateAssigned": _assigned,
    "Vehicle.ReconcileReported": _reported,
    "Vehicle.HealthChanged": _health,
    "Vehicle.PresenceChanged": lambda d: f"presence {d['state']}",
    "Release.Registered": lambda d: f"release {d['key']} registered ({d['manifest_digest']})",
    "Release.Signed": lambda d: (
        f"release {d['key']} signed by {len(d['signatures'])} more key(s): "
        f"{', '.join(s['keyid'][:16] for s in d['signatures'])} ({d['manifest_digest']})"
    ),
    "ReleaseKeys.Rotated": _rotated,
    "ReleaseKeys.RotatedAgain": _rotated,
    "DesiredState.Created": _desired,
    "Rollout.Started": _started,
    "Rollout.PhaseAssigned": lambda d: (
        f"{d['phase']} assigned: revision {d['revision']} to {_ids(d['vehicle_ids'])}"
    ),
    "Rollout.CanaryGatePassed": _gate("canary gate", "passed"),
    "Rollout.CanaryGateFailed": _gate("canary gate", "failed"),
    "Rollout.WaveGatePassed": _gate("wave gate", "passed"),
    "Rollout.WaveGateFailed": _gate("wave gate", "failed"),
    "Rollout.BakeCompleted": _gate("bake", "completed"),
    "Rollout.BakeFailed": _gate("bake", "failed"),
    "Rollout.MembersLeft": lambda d: (
        f"{_ids(d['vehicle_ids'])} left: no longer match '{d['selector']}'"
    ),
    "Rollout.MembersSuperseded": lambda d: (
        "superseded (a newer desired state): "
        + _ids([_superseded_by(v, r) for v, r in sorted(d["superseded_by"].items())])
    ),
    "Rollout.Paused": lambda d: f"rollout {d['rollout_id']} paused",
    "Rollout.Resumed": lambda d: f"rollout {d['rollout_id']} resumed",
    "Rollout.RolledBack": _rolled_back,
    "AccessToken.Issued": lambda d: (
        f"{d['role']} token {d['token_id']} issued"
        + (f" for {d['vehicle_id']}" if d.get("vehicle_id") else "")
    ),
    "AccessToken.Revoked": lambda d: f"token {d['token_id']} revoked",
    "IdempotencyKey.Used": lambda d: f"idempotency key {d['key']} keyed a write",
    "IdempotencyKey.Reused": lambda d: (
        f"idempotency key {d['key']} keyed a write again (its earlier use had expired)"
    ),
}


def describe(entry: Entry) -> str:
    line = LINES.get(entry.type)
    return line(entry.data) if line else ", ".join(sorted(entry.data))
