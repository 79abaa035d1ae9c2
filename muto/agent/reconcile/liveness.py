"""Liveness: when a release the runtime still names has stopped for good, and how long
its ROS graph has been degraded.

A runtime reports `alive` False for a moment in many ordinary cases: a supervised
process between a crash and its restart (it says `restarting`), a podman container
that podman is restarting (its restart count moves), a poll that caught it mid-start.
Restoring the release then would fight the runtime's own supervision and reset what
the crash-loop rule counts. Down means: not alive, not restarting, and no restart
counted, for `after_s` in a row. Plain data in, a verdict out; the reconciler feeds it
every status it reads (each round, each drift check).
"""

from __future__ import annotations

from dataclasses import dataclass

from muto.agent.runtime.base import RuntimeStatus

DOWN_AFTER_S = 5.0  # one drift check: podman restarts a container well within it


@dataclass
class Liveness:
    after_s: float = DOWN_AFTER_S
    since: float | None = None  # monotonic: first seen not alive with this mark
    mark: tuple[str, int] | None = None  # (release, restart count) when first seen

    def down(self, status: RuntimeStatus, now: float) -> bool:
        if status.release is None or status.alive or status.restarting:
            self.since = self.mark = None
            return False
        mark = (status.release, status.restart_count)
        if self.since is None or mark != self.mark:
            self.since, self.mark = now, mark  # a restart was counted: someone restarts it
        return now - self.since >= self.after_s


@dataclass
class Degradation:
    """How long the running release's ROS graph has been degraded without a break: from
    the first status that named a degradation (`RuntimeStatus.degraded`) of this release,
    as long as every status read since (each round, each drift check) still names one. A
    whole graph, another release or nothing running starts it over. Plain data in, a
    duration out; the planner judges it against the release's grace."""

    since: float | None = None  # monotonic: first seen degraded
    release: str | None = None

    def degraded_for(self, status: RuntimeStatus, now: float) -> float | None:
        if status.release is None or status.degraded is None:
            self.since = self.release = None
            return None
        if self.since is None or status.release != self.release:
            self.since, self.release = now, status.release
        return now - self.since
