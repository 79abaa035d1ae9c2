"""A presence time must carry its offset: without one it cannot be compared with the
cloud's clock to judge staleness, and reading such a vehicle was a TypeError (500).
Refused at decoding now; one stored before is read as UTC. Likewise a heartbeat interval
out of range (tests/unit/test_presence.py): one stored before the bound breaks no read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from muto.cloud.api.app import create_app
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause, record_presence
from muto.cloud.tokens import Role, issue_token
from muto.domain.messages import Presence
from muto.domain.wire import WireError, decode
from tests.support.spine import memory_settings, register_fleet, registration, sqlite_settings


def test_a_presence_time_without_an_offset_is_refused() -> None:
    body = b'{"schema":"muto.presence.v1","vehicleId":"v1","state":"online","at":"%s"}'
    with pytest.raises(WireError) as refused:
        decode(body % b"2026-12-05T16:00:00", Presence)
    assert "$.at" in str(refused.value)
    assert decode(body % b"2026-12-05T16:00:00+01:00", Presence).at is not None


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    cp = ControlPlane.open(memory_settings(tmp_path))
    register_fleet(cp, [registration("v1")])
    yield cp
    cp.close()


def test_a_vehicle_whose_stored_presence_time_has_no_offset_is_read(plane: ControlPlane) -> None:
    plane.execute(record_presence("v1", "online", "2026-12-05T16:00:00", "vehicle:v1"))
    seen = plane.queries.vehicle("v1")
    assert seen.presence in ("online", "stale")
    assert seen.presence_at == "2026-12-05T16:00:00"


@pytest.mark.parametrize("heartbeat_s", [1e14, float("inf"), -5.0])
def test_a_stored_heartbeat_interval_out_of_range_breaks_no_read(
    tmp_path: Path, heartbeat_s: float
) -> None:
    """Before presence was bounded, one vehicle's `heartbeatS: 1e14` was kept in the
    heartbeat table and every read that judged staleness overflowed (500 for the whole
    fleet, across restarts). Such a row is read as no interval announced."""
    cp = ControlPlane.open(sqlite_settings(tmp_path))
    register_fleet(cp, [registration("v1"), registration("v2")])
    for vehicle_id in ("v1", "v2"):
        cp.execute(record_presence(vehicle_id, "online", "2026-12-05T16:00:00Z", "vehicle:x"))
    cp.ingest.heartbeat("v1", heartbeat_s)  # as the listener stored it before the bound
    cp.ingest.flush()
    cp.close()
    plane = ControlPlane.open(sqlite_settings(tmp_path))  # a restart keeps the row
    secret, command = issue_token(Role.OPERATOR, None, Cause.of("test"))
    plane.execute(command)
    auth = {"Authorization": f"Bearer {secret}"}
    try:
        with TestClient(create_app(plane.settings, plane=plane)) as client:
            listed = client.get("/vehicles", headers=auth)
            assert listed.status_code == 200, listed.text
            assert [v["presence"] for v in listed.json()["data"]] == ["online", "stale"]
            one = client.get("/vehicles/v1", headers=auth)
            assert one.status_code == 200, one.text
            assert one.json()["data"]["presence"] == "online"  # heard just now
            scraped = client.get("/metrics", headers=auth)
            assert scraped.status_code == 200, scraped.text
            assert 'muto_vehicles_by_presence{presence="stale"} 1.0' in scraped.text
    finally:
        plane.close()
