"""Desired state: what the cloud asks a set of vehicles to run, under which policy."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

import msgspec

from muto.domain.presence import MAX_HEARTBEAT_S
from muto.domain.selectors import MAX_CHARS as MAX_SELECTOR_CHARS
from muto.domain.wire import Digest, Identifier, Reference, Wire

SelectorText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SELECTOR_CHARS)]

HHMM_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]\Z"
HHMM = msgspec.Meta(pattern=HHMM_PATTERN, description="HH:MM, 24 h")


class ApplyWindow(Wire, frozen=True, kw_only=True):
    """Local-time window in which apply may start; may cross midnight (22:00-04:00).
    Equal start and end means all day."""

    start_local: Annotated[str, HHMM]
    end_local: Annotated[str, HHMM]


class Policy(Wire, frozen=True, kw_only=True):
    """When a vehicle may apply. Each vehicle also holds its own safety floor (its
    provisioning): it judges the stricter of the two, so a policy may tighten a gate but
    never loosen one (`requireVehicleStationary: false` lets a moving vehicle apply only
    where the vehicle itself allows it)."""

    apply_window: ApplyWindow | None = None
    require_vehicle_stationary: bool = True
    deny_if_autonomous_mode: bool = True
    require_battery_pct_min: Annotated[float, msgspec.Meta(ge=0, le=100)] = 0


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class AgentConfig(Wire, frozen=True, kw_only=True):
    """Agent settings: delivered only inside desired state (never as a command)."""

    heartbeat_s: Annotated[int, msgspec.Meta(ge=1, le=MAX_HEARTBEAT_S)] = 30
    telemetry_enabled: bool = True
    log_level: LogLevel = LogLevel.INFO


class StackRef(Wire, frozen=True, kw_only=True):
    name: Annotated[str, Identifier]
    version: Annotated[str, Identifier]
    manifest_digest: Annotated[str, Digest] | None = None


class Target(Wire, frozen=True, kw_only=True):
    """Which vehicles: those a label selector matches (`{"selector": "model=m3"}`), or
    one vehicle (`{"type": "vehicle", "vehicleId": "veh-1"}`). The older spelling of
    one vehicle, its id in `selector`, is still accepted."""

    type: Literal["fleetSelector", "vehicle"] = "fleetSelector"
    selector: SelectorText | None = None
    vehicle_id: Annotated[str, Identifier] | None = None

    def __post_init__(self) -> None:
        if self.type == "fleetSelector":
            if self.selector is None or self.vehicle_id is not None:
                raise ValueError("a fleetSelector target needs `selector` (and no `vehicleId`)")
        elif (self.selector is None) == (self.vehicle_id is None):
            raise ValueError("a vehicle target needs `vehicleId` (or, formerly, `selector`)")

    @property
    def vehicle(self) -> str | None:
        """The one vehicle targeted, or None for a selector."""
        if self.type != "vehicle":
            return None
        return self.vehicle_id or self.selector


class RolloutRef(Wire, frozen=True, kw_only=True):
    strategy: Literal["canary", "direct"] = "direct"
    wave_id: str | None = None
    rollout_id: str | None = None


class DesiredStateRequest(Wire, frozen=True, kw_only=True):
    """Body of POST /desired-states."""

    target: Target
    stack: StackRef
    policy: Policy = Policy()
    rollout: RolloutRef | None = None
    agent_config: AgentConfig = AgentConfig()
    correlation_id: Annotated[str, Reference] | None = None
    ttl_sec: Annotated[int, msgspec.Meta(ge=60, le=90 * 86400)] = 30 * 86400


class RunNothing(Wire, frozen=True, kw_only=True):
    """What asks vehicles to run nothing (a rollout's rollback of vehicles that had no
    release before it): a desired-state request without a stack."""

    target: Target
    policy: Policy = Policy()
    rollout: RolloutRef | None = None
    agent_config: AgentConfig = AgentConfig()
    ttl_sec: Annotated[int, msgspec.Meta(ge=60, le=90 * 86400)] = 30 * 86400


class DesiredStateDocument(Wire, frozen=True, kw_only=True):
    """The per-vehicle document the control plane signs and the vehicle verifies.

    `sequence` is strictly increasing per vehicle: the agent rejects anything lower,
    or equal with different content. A rollback is a new, higher sequence that points
    to an older release.

    `stack` null says "run nothing": the vehicle stops whatever runs and reports
    converged. A rollout's rollback issues it to a vehicle that had no release before
    the rollout (docs/rollouts.md); it carries no release, so its bundle has none."""

    schema: Literal["muto.desired-state.v1"] = "muto.desired-state.v1"
    vehicle_id: Annotated[str, Identifier]
    revision: str
    sequence: Annotated[int, msgspec.Meta(ge=1)]
    stack: StackRef | None
    policy: Policy
    agent_config: AgentConfig
    rollout_id: str | None = None
    correlation_id: str
    issued_at: datetime
    expires_at: datetime


class Signature(Wire, frozen=True, kw_only=True):
    keyid: str
    sig: str  # base64


class Envelope(Wire, frozen=True, kw_only=True):
    """A DSSE envelope: the signed bytes travel as they were signed (base64), so a
    verifier never depends on re-encoding a document identically."""

    payload_type: str
    payload: str  # base64 of the exact signed bytes
    signatures: list[Signature]


class DesiredStateBundle(Wire, frozen=True, kw_only=True):
    """Response of GET /desired-states/latest: the signed document and the signed
    release it points to, so the vehicle can verify both offline. `release` is null
    exactly when the document says "run nothing" (its `stack` is null).

    `key_rotations`: every signed KeyRotation the fleet's operators published, oldest
    first, so that a vehicle any number of rotations behind walks the chain to the
    release keys in force before it verifies the release (as a TUF root chain). Left out
    while there is none: agents from before rotations were delivered refuse unknown
    fields, and they keep working until the first rotation (which they could not follow)."""

    schema: Literal["muto.desired-state-bundle.v1"] = "muto.desired-state-bundle.v1"
    desired_state: Envelope
    release: Envelope | None
    key_rotations: list[Envelope] | msgspec.UnsetType = msgspec.UNSET  # UNSET: left out
