"""Operator request bodies of the HTTP API (responses reuse the domain's wire types)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec

from muto.domain.desired import AgentConfig, Policy
from muto.domain.rollout_rules import MAX_PHASE_SEC
from muto.domain.selectors import MAX_CHARS as MAX_SELECTOR_CHARS
from muto.domain.wire import (
    LABEL_KEY_PATTERN,
    LABEL_VALUE_PATTERN,
    FieldError,
    Identifier,
    Reference,
    Wire,
)

LabelKey = Annotated[str, msgspec.Meta(pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, msgspec.Meta(pattern=LABEL_VALUE_PATTERN)]


class VehicleRegistration(Wire, frozen=True, kw_only=True):
    """POST /vehicles. Labels select vehicles (model, region, ring); attributes describe
    the platform (os, rosDistro)."""

    vehicle_id: Annotated[str, Identifier]
    labels: dict[LabelKey, LabelValue] = {}
    attributes: dict[LabelKey, Annotated[str, msgspec.Meta(max_length=256)]] = {}


class VehiclePatch(Wire, frozen=True, kw_only=True):
    """PATCH /vehicles/{id}: merge; a null value removes the key."""

    labels: dict[LabelKey, LabelValue | None] = {}
    attributes: dict[LabelKey, Annotated[str, msgspec.Meta(max_length=256)] | None] = {}


# Deadlines and the bake are at most MAX_PHASE_SEC (ten years): a deadline must be a date.
class RolloutThresholds(Wire, frozen=True, kw_only=True):
    converged_pct: Annotated[float, msgspec.Meta(ge=0, le=100)] = 95.0
    canary_deadline_sec: Annotated[float, msgspec.Meta(gt=0, le=MAX_PHASE_SEC)] = 3600.0
    wave_deadline_sec: Annotated[float, msgspec.Meta(gt=0, le=MAX_PHASE_SEC)] = 6 * 3600.0
    # How long a wave that passed its gate stays watched for tripwires before the
    # rollout is final (docs/rollouts.md).
    bake_sec: Annotated[float, msgspec.Meta(ge=0, le=MAX_PHASE_SEC)] = 600.0


class RolloutRequest(Wire, frozen=True, kw_only=True):
    """POST /rollouts."""

    selector: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SELECTOR_CHARS)]
    stack: Annotated[str, Identifier]
    version: Annotated[str, Identifier]
    policy: Policy = Policy()
    agent_config: AgentConfig = AgentConfig()
    thresholds: RolloutThresholds = RolloutThresholds()
    rollout_id: Annotated[str, Identifier] | None = None
    correlation_id: Annotated[str, Reference] | None = None


class TokenRequest(Wire, frozen=True, kw_only=True):
    """POST /tokens: provision a bearer token (operator, or bound to one vehicle)."""

    role: Literal["operator", "vehicle"]
    vehicle_id: Annotated[str, Identifier] | None = None

    schema_rules: ClassVar[dict[str, Any]] = {
        "if": {"properties": {"role": {"const": "vehicle"}}, "required": ["role"]},
        "then": {"required": ["vehicleId"], "properties": {"vehicleId": {"type": "string"}}},
        "else": {"properties": {"vehicleId": {"type": "null"}}},
    }

    def __post_init__(self) -> None:
        if (self.role == "vehicle") != (self.vehicle_id is not None):
            raise FieldError(
                "vehicleId is required for a vehicle token, and only for one", "$.vehicleId"
            )
