"""A presence time must carry its offset: without one it cannot be compared with the
cloud's clock to judge staleness, and reading such a vehicle was a TypeError (500).
Refused at decoding now; one stored before is read as UTC."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import record_presence
from muto.domain.messages import Presence
from muto.domain.wire import WireError, decode
from tests.support.spine import memory_settings, register_fleet, registration


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
