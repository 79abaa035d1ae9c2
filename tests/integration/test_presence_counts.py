"""The fleet's counts by presence (the dashboard's and `muto_vehicles_by_presence`) and the
fleet page's presence filter judge staleness as each vehicle's `presence` does: online, but
silent for three heartbeats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from muto.cloud.commands import record_presence
from muto.cloud.dashboard.reads import PRESENCES, counts, fleet
from muto.cloud.rollouts import start_rollout
from muto.domain.requests import RolloutRequest
from tests.support.mqtt_watch import open_fleet
from tests.support.spine import cause, sqlite_settings


def test_a_silent_online_vehicle_is_counted_stale_not_online(tmp_path: Path) -> None:
    cp = open_fleet(sqlite_settings(tmp_path), "v1", "v2", "v3")
    try:
        now = datetime.now(UTC)
        for vehicle_id in ("v1", "v2"):
            cp.execute(record_presence(vehicle_id, "online", now.isoformat(), "test"))
        cp.ingest.heartbeat("v1", 1.0)  # heard just now
        cp.ingest.flush()
        with cp.views.store.engine.begin() as connection:  # v2 last heard a minute ago
            connection.execute(
                cp.ingest.heartbeat_table.insert().values(
                    vehicle_id="v2",
                    heard_at=(now - timedelta(minutes=1)).isoformat(),
                    heartbeat_s=1.0,
                )
            )
        cp.projector.catch_up()
        found = counts(cp.queries).by_presence
        assert found == {"online": 1, "stale": 1, "unknown": 1}
        assert cp.queries.vehicle("v2").presence == "stale"  # the same rule
        listed = {  # the fleet page's presence filter: the same rule again
            presence: [v.vehicle_id for v in fleet(cp.queries, None, None, None, presence).vehicles]
            for presence in PRESENCES
        }
        assert listed == {"online": ["v1"], "stale": ["v2"], "offline": [], "unknown": ["v3"]}
        assert fleet(cp.queries, None, None, None, "stale").matching == 1
        # A rollout's outstanding members: the same rule (the review saw `online` there
        # beside `stale` in the fleet's list).
        request = RolloutRequest(selector="model=m3", stack="core", version="1.0.0", rollout_id="r")
        cp.execute(start_rollout(request, ["v1", "v2"], [], cause(), cp.sign, cp.clock))
        cp.projector.catch_up()
        waiting = cp.queries.rollout("r").outstanding
        assert {m.vehicle_id: m.presence for m in waiting} == {"v1": "online", "v2": "stale"}
    finally:
        cp.close()
