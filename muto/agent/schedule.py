"""When the agent's loop next has something to do: a poll (jittered, so a fleet does not
poll in step), a drift check (which also looks for health changes), a periodic health
report. One timer per agent, not one task per timer."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from muto.agent.clock import Clock
from muto.agent.parts import AgentSettings


@dataclass
class Schedule:
    settings: AgentSettings
    clock: Clock
    rng: random.Random
    next_poll: float = field(init=False)
    next_drift: float = field(init=False)
    next_health: float = field(init=False)

    def __post_init__(self) -> None:
        now = self.clock.monotonic()
        self.polled()
        # A random first phase: agents started together (a simulator, a depot after a
        # power cut) must not check drift and report health in lockstep forever after.
        self.next_drift = now + self.settings.drift_check_s * self.rng.uniform(0.5, 1.5)
        self.next_health = now + self.settings.health_every_s * self.rng.uniform(0.5, 1.0)

    def polled(self) -> None:
        """A pass just ran (for whatever reason): the next poll is a full interval away."""
        s = self.settings
        jitter = self.rng.uniform(1 - s.poll_jitter, 1 + s.poll_jitter)
        self.next_poll = self.clock.monotonic() + s.poll_s * jitter

    def poll_by(self, at: float) -> None:
        """Poll no later than `at` (monotonic), if that is in the future: when the cloud
        said when to ask again (Retry-After), the vehicle asks then, not a whole poll
        interval later (a notify it could not act on would otherwise wait that long)."""
        if at > self.clock.monotonic():
            self.next_poll = min(self.next_poll, at)

    def due(self) -> set[str]:
        """What is due now ("poll", "drift", "health"); drift and health are re-armed."""
        now, found = self.clock.monotonic(), set()
        if now >= self.next_poll:
            found.add("poll")
        if now >= self.next_drift:
            found.add("drift")
            self.next_drift = now + self.settings.drift_check_s
        if now >= self.next_health:
            found.add("health")
            self.next_health = now + self.settings.health_every_s
        return found

    def wait_s(self, poll: bool = True) -> float:
        """Until the next thing due; `poll` False while a pass runs (it re-arms the poll)."""
        soonest = min(self.next_poll if poll else math.inf, self.next_drift, self.next_health)
        return max(soonest - self.clock.monotonic(), 0.0)
