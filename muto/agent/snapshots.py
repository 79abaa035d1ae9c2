"""The retained MQTT snapshots (agent/metadata, state, components, cfg/state), built from
the journal's state with no I/O: the same inputs always give the same payloads, so the
MQTT link can publish only what changed."""

from __future__ import annotations

from collections.abc import Callable

from muto.agent.journal.state import JournalState
from muto.agent.reconcile.planner import last_outcome
from muto.agent.reports import running_ref
from muto.domain.gates import SafetyFloor
from muto.domain.messages import (
    AgentCfgState,
    AgentComponents,
    AgentMetadata,
    AgentPhase,
    AgentState,
    Component,
    HeldDesired,
    Leaf,
)
from muto.domain.reasons import ReasonCode
from muto.domain.reports import ReconcileStatus
from muto.domain.vehicle_state import VehicleState
from muto.domain.wire import Wire

CLOCK = ReasonCode.UNTRUSTED_CLOCK
SNAPSHOT_LEAVES = (
    Leaf.AGENT_METADATA,
    Leaf.AGENT_STATE,
    Leaf.AGENT_COMPONENTS,
    Leaf.AGENT_CFG_STATE,
)


def metadata(
    vehicle_id: str, agent_version: str, runtime: str, vehicle: VehicleState, floor: SafetyFloor
) -> AgentMetadata:
    return AgentMetadata(
        schema="muto.agent-metadata.v2",
        vehicle_id=vehicle_id,
        agent_version=agent_version,
        model=vehicle.model,
        os=vehicle.os,
        ros_distro=vehicle.ros_distro,
        runtime=runtime,
        safety_floor=floor,
    )


def agent_state(vehicle_id: str, state: JournalState, phase: AgentPhase) -> AgentState:
    desired = state.desired
    last = last_outcome(state, desired.revision if desired else None)
    return AgentState(
        schema="muto.agent-state.v2",
        vehicle_id=vehicle_id,
        running=running_ref(state),
        revision=desired.revision if desired else None,
        sequence=desired.sequence if desired else None,
        phase=phase,
        last_status=last.status if last else None,
        reason_codes=list(last.codes) if last else [],
        held=held_desired(state),
    )


def held_desired(state: JournalState) -> HeldDesired | None:
    """The document held for want of trusted time (DesiredHeld), with the codes it was
    reported `blocked` with."""
    held = state.held
    if held is None:
        return None
    reported = last_outcome(state, held.revision)
    blocked = reported is not None and reported.status == ReconcileStatus.BLOCKED
    codes = list(reported.codes) if blocked and reported and reported.codes else [CLOCK]
    return HeldDesired(revision=held.revision, sequence=held.sequence, reason_codes=codes)


def components(
    vehicle_id: str, state: JournalState, cached: Callable[[str], bool]
) -> AgentComponents:
    """Artifacts by role: the running release's are active, the previous known good's are
    kept for rollback, any other release's that are in the cache are cached."""
    roles = {state.running_key: "active", state.previous_known_good(): "previous_known_good"}
    found: dict[str, Component] = {}
    for key, release in state.releases.items():
        role = roles.get(key, "cached")
        for a in release.artifacts:
            if a.digest in found or (role == "cached" and not cached(a.digest)):
                continue
            found[a.digest] = Component(
                digest=a.digest,
                type=str(a.type),
                ref=a.ref,
                dist_name=a.dist_name,
                role=role,  # type: ignore[arg-type]
            )
    order = {"active": 0, "previous_known_good": 1, "cached": 2}
    ordered = sorted(found.values(), key=lambda c: (order[c.role], c.digest))
    return AgentComponents(
        schema="muto.agent-components.v1", vehicle_id=vehicle_id, components=ordered
    )


def cfg_state(vehicle_id: str, state: JournalState) -> AgentCfgState:
    return AgentCfgState(
        schema="muto.agent-cfg-state.v1", vehicle_id=vehicle_id, config=state.config
    )


def snapshots(
    vehicle_id: str,
    agent_version: str,
    runtime: str,
    vehicle: VehicleState,
    state: JournalState,
    phase: AgentPhase,
    cached: Callable[[str], bool],
    floor: SafetyFloor,
) -> dict[Leaf, Wire]:
    return {
        Leaf.AGENT_METADATA: metadata(vehicle_id, agent_version, runtime, vehicle, floor),
        Leaf.AGENT_STATE: agent_state(vehicle_id, state, phase),
        Leaf.AGENT_COMPONENTS: components(vehicle_id, state, cached),
        Leaf.AGENT_CFG_STATE: cfg_state(vehicle_id, state),
    }
