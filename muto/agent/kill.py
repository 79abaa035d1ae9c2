"""Fault injection: make the agent SIGKILL itself at a named point.

`MUTO_AGENT_KILL_AT=<point>`; points are the reconcile steps (`fetch`, `verify`, `gates`,
`cache`, `apply`, `readiness`, `rollback`, `report`, `deliver`). `<step>` fires right
after the step's start is journaled (or, for steps that journal nothing at their start,
as they begin); `<step>:done` right after its outcome is journaled. The CLI reads the
variable; in-process agents (the simulator) get it only if they pass it explicitly.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping

ENV = "MUTO_AGENT_KILL_AT"
POINTS = frozenset(
    {"fetch", "verify", "gates", "cache", "apply", "readiness", "rollback", "report", "deliver"}
)


class KillSwitch:
    def __init__(self, at: str | None = None) -> None:
        if at is not None and at.removesuffix(":done") not in POINTS:
            raise ValueError(f"{ENV}={at!r}: not one of {sorted(POINTS)} (optionally ':done')")
        self.at = at

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KillSwitch:
        return cls((env if env is not None else os.environ).get(ENV) or None)

    def __call__(self, point: str) -> None:
        if point == self.at:
            os.kill(os.getpid(), signal.SIGKILL)
