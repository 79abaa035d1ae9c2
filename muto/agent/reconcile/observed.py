"""Observed: everything the planner may look at, gathered before it decides."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from muto.agent.journal.state import JournalState
from muto.agent.runtime.base import RuntimeStatus
from muto.domain.gates import SafetyFloor
from muto.domain.reasons import ReasonCode
from muto.domain.vehicle_state import VehicleState


@dataclass(frozen=True)
class Observed:
    journal: JournalState  # read only
    runtime: RuntimeStatus
    vehicle: VehicleState  # free disk filled in
    # Digests at hand: in the artifact cache, or held by the runtime that fetches them
    # itself (podman's images: runtime/base.py, SelfFetcher).
    cached: frozenset[str]
    # Downloads that failed during this pass (digest -> code); the next pass retries.
    download_failures: Mapping[str, ReasonCode] = field(default_factory=dict)
    # The runtime reports the journal's running release down for good: not alive, not
    # restarting under its own supervision, no restart counted for a while (liveness.py).
    stack_down: bool = False
    # How long (seconds, monotonic) the running release's ROS graph has been degraded
    # without a break (`runtime.degraded` set at every look since: liveness.Degradation);
    # None while it is whole, or when the runtime runs another release.
    degraded_s: float | None = None
    # The vehicle's own safety floor (its provisioning): the gates judge the stricter of
    # it and the desired state's policy.
    floor: SafetyFloor = field(default_factory=SafetyFloor)
