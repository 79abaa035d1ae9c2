"""MQTT payloads and the topic tree (spec/mqtt-topics.md is the contract)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, get_args

import msgspec

from muto.domain.desired import AgentConfig, StackRef
from muto.domain.gates import SafetyFloor
from muto.domain.presence import MAX_HEARTBEAT_S
from muto.domain.reasons import ReasonCode
from muto.domain.reports import HealthReport, ReconcileReport, ReconcileStatus
from muto.domain.wire import Identifier, Reference, Wire, decode

TOPIC_ROOT = "muto"


def vehicle_topic(tenant: str, vehicle_id: str, leaf: str) -> str:
    """`muto/<tenant>/vehicles/<vehicleId>/<leaf>`."""
    return f"{TOPIC_ROOT}/{tenant}/vehicles/{vehicle_id}/{leaf}"


class Leaf(StrEnum):
    PRESENCE = "presence"
    DESIRED_NOTIFY = "desired/notify"
    REPORTS_RECONCILE = "reports/reconcile"
    REPORTS_HEALTH = "reports/health"
    AGENT_METADATA = "agent/metadata"
    AGENT_STATE = "agent/state"
    AGENT_COMPONENTS = "agent/components"
    AGENT_CFG_STATE = "agent/cfg/state"
    CMD_REFRESH = "cmd/refresh"
    EVT_REFRESH_RESULT = "evt/refresh_result"


class DesiredNotify(Wire, frozen=True, kw_only=True):
    schema: Literal["muto.desired-notify.v1"]  # required: refused (ignored) without it
    vehicle_id: Annotated[str, Identifier]
    revision: Annotated[str, Reference]
    sequence: int
    # Information only: the agent fetches from its configured cloud, never from here (a
    # forged notify cannot point it elsewhere). Bounded as an artifact's ref.
    url: Annotated[str, msgspec.Meta(max_length=2048)]


class PresenceState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class Presence(Wire, frozen=True, kw_only=True):
    schema: Literal["muto.presence.v1"]  # required: refused (ignored) without it
    vehicle_id: str
    state: PresenceState
    # None in the Last Will (the broker sends it later). With its offset: a time
    # without one could not be compared with the cloud's to judge staleness.
    at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    # Seconds until the next heartbeat (online only): the cloud shows the vehicle stale
    # after three such intervals of silence (muto/domain/presence.py). Bounded as
    # AgentConfig's: a huge one overflowed that judgement for the whole fleet.
    heartbeat_s: Annotated[float, msgspec.Meta(gt=0, le=MAX_HEARTBEAT_S)] | None = None


class AgentMetadataV1(Wire, frozen=True, kw_only=True):
    """What agents before v2 publish: v2 without the safety floor."""

    schema: Literal["muto.agent-metadata.v1"]  # required: refused (ignored) without it
    vehicle_id: str
    agent_version: str
    model: str | None = None
    os: str | None = None
    ros_distro: str | None = None
    runtime: str


class AgentMetadata(AgentMetadataV1, frozen=True, kw_only=True):
    schema: Literal["muto.agent-metadata.v2"]  # type: ignore[assignment]
    # v2: the vehicle's own safety floor, so that an operator sees a loosened vehicle.
    safety_floor: SafetyFloor


class _Schema(msgspec.Struct):
    schema: object = None


def decode_metadata(payload: bytes) -> AgentMetadata | AgentMetadataV1:
    """An `agent/metadata` payload of a version the cloud knows (rule 5 of
    spec/mqtt-topics.md): v2, or v1 from an agent not yet upgraded. WireError otherwise,
    naming what was wrong as for v2."""
    try:
        said = msgspec.json.decode(payload, type=_Schema).schema
    except (msgspec.DecodeError, UnicodeDecodeError):
        said = None  # the v2 decode below says what is wrong with it
    if said == "muto.agent-metadata.v1":
        return decode(payload, AgentMetadataV1)
    return decode(payload, AgentMetadata)


class AgentPhase(StrEnum):
    IDLE = "idle"
    FETCHING = "fetching"
    VERIFYING = "verifying"
    GATING = "gating"
    CACHING = "caching"
    APPLYING = "applying"
    CHECKING_READINESS = "checking_readiness"
    ROLLING_BACK = "rolling_back"


class HeldDesired(Wire, frozen=True, kw_only=True):
    """A newer desired state held back, not accepted (its expiry cannot be judged)."""

    revision: str
    sequence: int
    # What it was reported `blocked` with (UNTRUSTED_CLOCK); the revision and sequence in
    # force stay those of the accepted document.
    reason_codes: Annotated[list[ReasonCode], msgspec.Meta(min_length=1)]


class AgentState(Wire, frozen=True, kw_only=True):
    schema: Literal["muto.agent-state.v2"]  # required: refused (ignored) without it
    vehicle_id: str
    running: StackRef | None = None
    revision: str | None = None
    sequence: int | None = None
    phase: AgentPhase = AgentPhase.IDLE
    last_status: ReconcileStatus | None = None
    reason_codes: list[ReasonCode] = []
    held: HeldDesired | None = None  # v2: a newer document held back, if any


class Component(Wire, frozen=True, kw_only=True):
    digest: str
    type: str
    ref: str
    dist_name: str | None = None
    role: Literal["active", "previous_known_good", "cached"]


class AgentComponents(Wire, frozen=True, kw_only=True):
    schema: Literal["muto.agent-components.v1"]  # required: refused (ignored) without it
    vehicle_id: str
    components: list[Component] = []


class AgentCfgState(Wire, frozen=True, kw_only=True):
    schema: Literal["muto.agent-cfg-state.v1"]  # required: refused (ignored) without it
    vehicle_id: str
    config: AgentConfig


class RefreshRequest(Wire, frozen=True, kw_only=True):
    schema: Literal["muto.refresh-request.v1"]  # required: refused (ignored) without it
    request_id: Annotated[str, Reference]  # echoed in the result: bounded


class RefreshResult(Wire, frozen=True, kw_only=True):
    schema: Literal["muto.refresh-result.v1"]  # required: refused (ignored) without it
    request_id: Annotated[str, Reference]
    ok: bool
    snapshots_updated: list[str] = []


# -- The topic table (spec/mqtt-topics.md; a unit test keeps the two equal) ---------------


class Direction(StrEnum):
    VEHICLE_TO_CLOUD = "vehicle->cloud"
    CLOUD_TO_VEHICLE = "cloud->vehicle"


@dataclass(frozen=True)
class TopicSpec:
    """How one leaf under `muto/<tenant>/vehicles/<vehicleId>/` is published."""

    direction: Direction
    qos: Literal[0, 1]
    retained: bool
    payload: type[Wire]

    @property
    def schema(self) -> str:
        """The payload's `schema` literal, e.g. "muto.presence.v1"."""
        for field in msgspec.structs.fields(self.payload):
            if field.name == "schema":
                (literal,) = get_args(field.type)
                return str(literal)
        raise TypeError(f"{self.payload.__name__} has no schema literal")


_UP, _DOWN = Direction.VEHICLE_TO_CLOUD, Direction.CLOUD_TO_VEHICLE

TOPICS: dict[Leaf, TopicSpec] = {
    Leaf.PRESENCE: TopicSpec(_UP, 1, retained=True, payload=Presence),
    Leaf.DESIRED_NOTIFY: TopicSpec(_DOWN, 1, retained=True, payload=DesiredNotify),
    Leaf.REPORTS_RECONCILE: TopicSpec(_UP, 1, retained=False, payload=ReconcileReport),
    # QoS 1, not 0: a lost health transition would leave the cloud's read model wrong
    # until the next report; duplicates are harmless (the cloud de-duplicates by reportId).
    Leaf.REPORTS_HEALTH: TopicSpec(_UP, 1, retained=False, payload=HealthReport),
    Leaf.AGENT_METADATA: TopicSpec(_UP, 1, retained=True, payload=AgentMetadata),
    Leaf.AGENT_STATE: TopicSpec(_UP, 1, retained=True, payload=AgentState),
    Leaf.AGENT_COMPONENTS: TopicSpec(_UP, 1, retained=True, payload=AgentComponents),
    Leaf.AGENT_CFG_STATE: TopicSpec(_UP, 1, retained=True, payload=AgentCfgState),
    # The only cloud->vehicle request: read-only, it re-publishes the snapshots above.
    Leaf.CMD_REFRESH: TopicSpec(_DOWN, 1, retained=False, payload=RefreshRequest),
    Leaf.EVT_REFRESH_RESULT: TopicSpec(_UP, 1, retained=False, payload=RefreshResult),
}
