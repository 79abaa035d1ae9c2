"""Safety gate inputs: where the agent learns the vehicle's state (local authority)."""

from muto.agent.safety.provider import (
    FileStateProvider,
    SimulatedStateProvider,
    VehicleStateProvider,
    with_free_disk,
)

__all__ = ["FileStateProvider", "SimulatedStateProvider", "VehicleStateProvider", "with_free_disk"]
