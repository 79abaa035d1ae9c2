"""`python -m tests.faults.projection_killer DATA_DIR [DATABASE_URL] VEHICLE_ID`: open the
control plane, register a vehicle, and SIGKILL this process inside the projector's
transaction, after the views were updated and before the commit (when it moves the
projections' position). The event is stored; its view rows must not be, half or whole.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause, register_vehicle
from muto.cloud.settings import Settings
from muto.domain.requests import VehicleRegistration
from muto.projections.store import ViewStore


def die_before_commit(*_: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(data_dir: str, database_url: str, vehicle_id: str) -> None:
    settings = Settings(data_dir=Path(data_dir), database_url=database_url or None, mqtt_url=None)
    plane = ControlPlane.open(settings)
    ViewStore.advance = die_before_commit  # type: ignore[method-assign]
    registration = VehicleRegistration(vehicle_id=vehicle_id, labels={"model": "m3"})
    plane.execute(register_vehicle(registration, Cause.of("fault")))
    raise SystemExit("the projector committed: the kill did not fire")


if __name__ == "__main__":
    main(*sys.argv[1:4])
