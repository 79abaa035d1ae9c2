"""GET /rollouts/{id} is built from the rollouts view's row by one mapping
(queries.rollouts.rollout_view): what it answers for rows written long ago."""

from __future__ import annotations

import msgspec

from muto.cloud.queries import rollout_view

AT = "2026-01-01T00:00:00+00:00"
ROW = {
    "rollout_id": "ro-1",
    "state": "canary",
    "paused": False,
    "selector": "model=m3",
    "release_key": "core@1.0.0",
    "started_at": AT,
    "updated_at": AT,
    # Stored before bakes existed (no bakeSec) and before decisions carried a code.
    "thresholds": {"convergedPct": 90.0, "canaryDeadlineSec": 60.0, "waveDeadlineSec": 120.0},
    "decisions": [{"event": "CanaryGatePassed", "at": AT, "position": 7, "evaluation": {}}],
    "deadline_at": None,
}
MEMBERS = [
    {"vehicle_id": "v1", "phase": "canary", "revision": "r1", "status": "deferred",
     "reason_codes": ["DENY_MOVING"]},
    {"vehicle_id": "v2", "phase": "canary", "revision": None, "status": "left",
     "reason_codes": []},
]  # fmt: skip


def test_an_old_rollout_is_answered_as_it_ran() -> None:
    body = msgspec.json.decode(msgspec.json.encode(rollout_view(ROW, MEMBERS, [], 0)))
    assert body["thresholds"] == {**ROW["thresholds"], "bakeSec": 0.0}  # it did not bake
    assert body["decisions"] == [{**ROW["decisions"][0], "reasonCode": None}]
    assert body["phases"] == {
        "canary": {
            "targeted": 2, "pending": 0, "assigned": 0, "converged": 0, "deferred": 1,
            "failed": 0, "rolledBack": 0, "left": 1, "deferredBy": {"DENY_MOVING": 1},
            "superseded": 0, "notAssigned": 0, "failedBy": {}, "rolledBackBy": {},
            "rollingBack": 0, "rollingBackBy": {},
        }
    }  # fmt: skip
    assert [v["vehicleId"] for v in body["vehicles"]] == ["v1", "v2"]
