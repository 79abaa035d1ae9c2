"""MQTT payloads and the topic tree (spec/mqtt-topics.md is the contract)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from muto.domain.desired import AgentConfig, StackRef
from muto.domain.reasons import ReasonCode
from muto.domain.reports import ReconcileStatus
from muto.domain.wire import Wire

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


class DesiredNotify(Wire, kw_only=True):
    schema: Literal["muto.desired-notify.v1"] = "muto.desired-notify.v1"
    vehicle_id: str
    revision: str
    sequence: int
    url: str


class PresenceState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class Presence(Wire, kw_only=True):
    schema: Literal["muto.presence.v1"] = "muto.presence.v1"
    vehicle_id: str
    state: PresenceState
    at: datetime | None = None  # None in the Last Will (the broker sends it later)


class AgentMetadata(Wire, kw_only=True):
    schema: Literal["muto.agent-metadata.v1"] = "muto.agent-metadata.v1"
    vehicle_id: str
    agent_version: str
    model: str | None = None
    os: str | None = None
    ros_distro: str | None = None
    runtime: str


class AgentPhase(StrEnum):
    IDLE = "idle"
    FETCHING = "fetching"
    VERIFYING = "verifying"
    GATING = "gating"
    CACHING = "caching"
    APPLYING = "applying"
    CHECKING_READINESS = "checking_readiness"
    ROLLING_BACK = "rolling_back"


class AgentState(Wire, kw_only=True):
    schema: Literal["muto.agent-state.v1"] = "muto.agent-state.v1"
    vehicle_id: str
    running: StackRef | None = None
    revision: str | None = None
    sequence: int | None = None
    phase: AgentPhase = AgentPhase.IDLE
    last_status: ReconcileStatus | None = None
    reason_codes: list[ReasonCode] = []


class Component(Wire, kw_only=True):
    digest: str
    type: str
    ref: str
    dist_name: str | None = None
    role: Literal["active", "previous_known_good", "cached"]


class AgentComponents(Wire, kw_only=True):
    schema: Literal["muto.agent-components.v1"] = "muto.agent-components.v1"
    vehicle_id: str
    components: list[Component] = []


class AgentCfgState(Wire, kw_only=True):
    schema: Literal["muto.agent-cfg-state.v1"] = "muto.agent-cfg-state.v1"
    vehicle_id: str
    config: AgentConfig


class RefreshRequest(Wire, kw_only=True):
    schema: Literal["muto.refresh-request.v1"] = "muto.refresh-request.v1"
    request_id: str


class RefreshResult(Wire, kw_only=True):
    schema: Literal["muto.refresh-result.v1"] = "muto.refresh-result.v1"
    request_id: str
    ok: bool
    snapshots_updated: list[str] = []
