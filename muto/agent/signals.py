"""Signals: the one narrow interface between an agent and the parts it builds.

A part says what happened here, and the part that acts on it waits on the flag: nothing
a part holds calls back into the Agent. Each flag has one reader:

    phase      the reconcile pass's parts write it   the MQTT link's snapshots read it
    shown      a phase change, a report queued       the MQTT link publishes what differs
    report     a report queued                       the courier delivers it
    retimed    the agentConfig in force changed      the MQTT link's heartbeat re-times
    triggers   a notify, a timer, a caller           the agent's loop runs a pass
    notified   a notify                              the agent's loop, after a pass
    hinted     a notify, a poll during a download    the agent's watcher, during a pass
"""

from __future__ import annotations

import asyncio

from muto.domain.messages import AgentPhase


class Signals:
    def __init__(self) -> None:
        self.phase = AgentPhase.IDLE
        self.triggers: list[str] = []  # reasons waiting for the next pass (coalesced)
        self.notified = 0  # the highest sequence a notify announced (a hint, unverified)
        # The sequence the latest hint announced (a notify, or a poll that saw a newer
        # document during a download): the latest, not the highest, so that a forged huge
        # one cannot hide a genuine one that comes after it. Unverified: it only makes the
        # pass fetch again (Reconciler.preempt_for_newer), it never moves anything itself.
        self.hinted = 0
        self.hint_arrived = asyncio.Event()
        self.triggered = asyncio.Event()
        self.shown = asyncio.Event()
        self.report = asyncio.Event()
        self.retimed = asyncio.Event()

    def set_phase(self, phase: AgentPhase) -> None:
        if phase != self.phase:
            self.phase = phase
            self.shown.set()

    def report_queued(self) -> None:
        self.report.set()
        self.shown.set()

    def config_changed(self) -> None:
        self.retimed.set()
        self.shown.set()

    def notify(self, sequence: int) -> None:
        self.notified = max(self.notified, sequence)
        self.hint(sequence, f"notify:{sequence}")

    def hint(self, sequence: int, reason: str) -> None:
        """A newer desired state may be there (unverified): a pass is wanted, and one in
        progress may be stopped to take it first."""
        self.hinted = sequence
        self.hint_arrived.set()
        self.trigger(reason)

    def trigger(self, reason: str) -> None:
        self.triggers.append(reason)
        self.triggered.set()

    def take_triggers(self) -> list[str]:
        """The reasons for the pass about to run; later ones trigger the next."""
        self.triggered.clear()
        reasons, self.triggers = self.triggers, []
        return reasons
