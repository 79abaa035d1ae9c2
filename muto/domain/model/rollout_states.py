"""A rollout's states, which are active or final, what a rollback ends, what limits
each timed phase and whose outcomes it waits for; and the refusal of a command the
current state does not allow.

The lifecycle itself (which decision moves which state) is the Rollout aggregate's
(rollout.py): its decision events name the state each ends in."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class RolloutState(StrEnum):
    CANARY = "canary"
    WAVE = "wave"
    BAKING = "baking"  # the wave passed its gate; still watched for tripwires
    COMPLETED = "completed"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled_back"


FINAL_STATES = frozenset({RolloutState.COMPLETED, RolloutState.ABORTED, RolloutState.ROLLED_BACK})
ACTIVE_STATES = (RolloutState.CANARY, RolloutState.WAVE, RolloutState.BAKING)


# A rollback ends these states; an aborted rollout stays aborted (its story is the canary).
ROLLBACK_ENDS = frozenset(
    {RolloutState.CANARY, RolloutState.WAVE, RolloutState.BAKING, RolloutState.COMPLETED}
)


# The threshold that limits each timed phase.
LIMITS = {"canary": "canaryDeadlineSec", "wave": "waveDeadlineSec", "baking": "bakeSec"}
DEFAULT_BAKE_SEC = 0.0  # rollouts started before bakes existed did not bake
# The members whose outcomes an active state waits for (a bake watches the wave's).
WAITS_FOR = {"canary": "canary", "wave": "wave", "baking": "wave"}


def phase_limit(thresholds: Mapping[str, Any], state: str) -> float:
    """How long a timed state (canary, wave, baking) may last, in seconds, read from a
    rollout's thresholds as stored (wire names)."""
    return float(thresholds.get(LIMITS[state], DEFAULT_BAKE_SEC))


class RolloutStateError(ValueError):
    """A command that the rollout's current state does not allow (HTTP 409)."""

    code = "conflict"


class RolloutFinal(RolloutStateError):
    """Pause or resume of a rollout that is final (HTTP 409 `rollout_final`)."""

    code = "rollout_final"
