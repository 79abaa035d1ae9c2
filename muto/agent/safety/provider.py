"""VehicleStateProvider: the vehicle's state as the safety gates see it.

Fail closed: a state file that is missing, unreadable, or silent on speed, autonomous
mode or battery reads as a moving vehicle in autonomous mode with an empty battery, so
every gate that the policy enables blocks; the log names the file and the field.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgspec

from muto.domain.vehicle_state import MOVING_THRESHOLD_MPS, StateFile, VehicleState
from muto.domain.wire import WireError, decode

MIB = 1024 * 1024
logger = logging.getLogger("muto.agent.safety")

# What an unknown vehicle looks like to the gates: nothing may be applied.
UNKNOWN = VehicleState(speed_mps=MOVING_THRESHOLD_MPS + 1, autonomous_mode=True, battery_pct=0)


class VehicleStateProvider(Protocol):
    def read(self) -> VehicleState:
        """The vehicle's state now; never blocks, never raises."""
        ...


class FileStateProvider:
    """A JSON file (camelCase `VehicleState`) that other on-board processes replace
    atomically. Re-read only when its mtime or size changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._state = UNKNOWN
        self.error: str | None = "not read yet"
        self._told: str | None = None  # the error last logged: each is said once

    def read(self) -> VehicleState:
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            self._seen, self._state = None, UNKNOWN
            self._fails(f"{self.path}: {exc.strerror}")
            return self._state
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            self._seen = seen
            try:
                self._state = decode(self.path.read_bytes(), StateFile)
            except (OSError, WireError) as exc:
                self._state = UNKNOWN
                self._fails(f"{self.path}: {exc}")
            else:
                self._fine()
        return self._state

    def _fails(self, error: str) -> None:
        """The gates block on UNKNOWN with motion and battery codes; the log says why."""
        self.error = error
        if error != self._told:
            self._told = error
            logger.warning(
                "vehicle state unreadable (%s): the safety gates read it as a moving vehicle "
                "in autonomous mode with an empty battery until it is fixed",
                error,
            )

    def _fine(self) -> None:
        if self._told is not None:
            logger.info("vehicle state %s readable again", self.path)
        self.error = self._told = None


@dataclass
class SimulatedStateProvider:
    """For tests and the fleet simulator: the state is whatever was last set."""

    state: VehicleState = field(default_factory=VehicleState)

    def read(self) -> VehicleState:
        return self.state

    def set(self, **changes: Any) -> None:
        self.state = msgspec.structs.replace(self.state, **changes)


def with_free_disk(state: VehicleState, data_dir: Path | None) -> VehicleState:
    """Fill in free disk from the data dir's file system when the state does not say."""
    if state.free_disk_mb is not None or data_dir is None:
        return state
    try:
        free = shutil.disk_usage(data_dir).free / MIB
    except OSError:
        free = 0.0  # cannot measure: fail closed
    return msgspec.structs.replace(state, free_disk_mb=free)
