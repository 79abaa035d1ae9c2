"""Agent: one vehicle's reconcile loop, outbox courier and MQTT link, on asyncio only.

Invariants: one reconcile pass at a time, triggers (startup, poll with jitter, notify,
drift) coalesce into at most one more; MQTT and HTTP trouble never stop reconciling;
`stop()` finishes or safely abandons the current step, flushes the outbox and the MQTT
session (bounded by `flush_s`), then stops the runtime (it cannot adopt a running
stack across agent restarts; the journal's running release is restored on start).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from muto.agent.config_file import store_config
from muto.agent.figures import AgentFigures, journal_bytes
from muto.agent.journal import Journal
from muto.agent.journal.events import AgentStarted, PassCompleted
from muto.agent.parts import AgentParts, AgentSettings, Wiring
from muto.agent.reconcile.recovery import interrupted, restart_loop
from muto.agent.reconcile.steps import Verdict
from muto.agent.reports import health_event, new_incarnation
from muto.agent.runtime.base import RuntimeStatus
from muto.agent.schedule import Schedule
from muto.agent.transport.courier import Courier
from muto.agent.transport.mqtt import MqttLink
from muto.domain.desired import AgentConfig
from muto.domain.messages import AgentPhase, DesiredNotify

logger = logging.getLogger("muto.agent")


class Agent:
    def __init__(self, settings: AgentSettings, parts: AgentParts) -> None:
        self.settings = settings
        self.parts = parts
        self.phase = AgentPhase.IDLE
        self.failure: BaseException | None = None  # the last pass's unexpected error
        self.triggers: list[str] = []  # reasons waiting for the next pass (coalesced)
        self._wired = Wiring.build(self, settings, parts)
        self._triggered = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self._finished_a_pass = False  # this run's; journaled once (restart-loop guard)
        self.passes = 0  # passes the loop has finished (tests wait on them, not on time)
        self._passing = False
        self.figures = AgentFigures()

    # -- what callers see ------------------------------------------------------------
    @property
    def journal(self) -> Journal:
        return self.parts.journal

    @property
    def verdict(self) -> Verdict | None:
        return self._wired.reconciler.verdict

    @property
    def courier(self) -> Courier:
        return self._wired.courier

    @property
    def mqtt(self) -> MqttLink | None:
        return self._wired.mqtt

    @property
    def idle(self) -> bool:
        """No pass running and no trigger waiting: nothing happens until the next one."""
        return not self._passing and not self._triggered.is_set()

    def drifted(self) -> bool:
        return self._wired.reconciler.drifted()

    def trigger(self, reason: str) -> None:
        self.triggers.append(reason)
        self._triggered.set()

    async def reconcile(self, fetch: bool = True) -> Verdict:
        """One pass now (tests and tools; the loop calls the same)."""
        before = self._wired.reconciler.verdict
        verdict = await self._wired.reconciler.run_pass(fetch)
        if not self._finished_a_pass:
            self._finished_a_pass = True
            completed = PassCompleted(at=self.parts.clock.now(), verdict=verdict.kind)
            self.parts.journal.append(completed)
        if verdict != before:
            if verdict.kind == "blocked":
                self.figures.blocked(verdict.codes)
            codes = ",".join(verdict.codes)
            logger.info("%s: %s %s", self.settings.vehicle_id, verdict.kind, codes)
        if self._wired.reconciler.reached_cloud and self.parts.journal.state.outbox:
            self._wired.courier.wake()  # the cloud answers again: no need to sit out a backoff
        self._seen_sequence()
        self._changed()
        return verdict

    def figures_now(self, runtime: RuntimeStatus | None = None) -> dict[str, float]:
        """What the health report and the local /metrics port show."""
        return self.figures.report(
            self.parts.journal.state,
            runtime or self.parts.runtime.status(),
            journal_bytes(self.parts.data_dir),
        )

    # -- lifecycle --------------------------------------------------------------------
    async def start(self, loop: bool = True) -> None:
        """Recover from an interrupted run, then start the tasks (`loop=False`: only
        recovery, for tests that drive passes themselves)."""
        journal, clock, limit = self.parts.journal, self.parts.clock, self.settings.retry_limit
        recovered = interrupted(journal.state, clock.now(), limit)
        looping = None if recovered else restart_loop(journal.state, clock.now(), limit)
        started = AgentStarted(
            at=clock.now(),
            agent_version=self.settings.agent_version,
            runtime=self.parts.runtime.name,
            incarnation=(
                new_incarnation()
                if self.settings.new_incarnation or journal.state.incarnation is None
                else journal.state.incarnation
            ),
        )
        journal.append(started, *[e for e in (recovered, looping) if e is not None])
        if recovered is not None:
            logger.warning("resuming after an interrupted %s (%d)", recovered.step, recovered.count)
        if looping is not None:
            logger.error(
                "%d runs in a row died before finishing a pass: giving up %s (%s)",
                looping.runs,
                looping.revision,
                looping.release_key,
            )
        self.on_config(journal.state.config)
        self._seen_sequence()
        if loop:
            self.trigger("startup")
            self._spawn(self._loop(), "reconcile")
            self._spawn(self._wired.courier.run(), "courier")
            if self._wired.mqtt is not None:
                self._spawn(self._wired.mqtt.run(), "mqtt")

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        flush = self.settings.flush_s
        tasks = {t.get_name().rsplit(":", 1)[-1]: t for t in self._tasks}
        self._tasks = []
        stopping = [t for name, t in tasks.items() if name in ("reconcile", "courier")]
        for task in stopping:
            task.cancel()  # a step in progress finishes its atomic part first
        await asyncio.gather(*stopping, return_exceptions=True)
        with contextlib.suppress(TimeoutError):  # while MQTT is still up: it may carry them
            await asyncio.wait_for(self._wired.courier.drain(), flush)
        link, session = self._wired.mqtt, tasks.get("mqtt")
        if link is not None and session is not None:
            await link.stop()  # publishes offline presence, then disconnects
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(session), flush)
            session.cancel()
            await asyncio.gather(session, return_exceptions=True)
        if self.settings.stop_runtime_on_exit:
            await self.parts.runtime.stop()
        await self.parts.close()

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # -- callbacks from the parts -----------------------------------------------------
    def on_phase(self, phase: AgentPhase) -> None:
        if phase != self.phase:
            self.phase = phase
            self._changed()

    def on_config(self, config: AgentConfig) -> None:
        if self.parts.config_file is not None:
            store_config(self.parts.config_file, config)
        if self.settings.owns_logging:  # one agent per process: its level is the process's
            logging.getLogger("muto").setLevel(str(config.log_level).upper())
        if self._wired.mqtt is not None:
            self._wired.mqtt.heartbeat_changed()
        self._changed()

    def on_notify(self, notify: DesiredNotify) -> None:
        self.trigger(f"notify:{notify.sequence}")

    def on_report(self) -> None:
        self._wired.courier.wake()
        self._changed()

    # -- the loop ---------------------------------------------------------------------
    async def _loop(self) -> None:
        schedule = Schedule(self.settings, self.parts.clock, self.parts.rng)
        # Offline first: restore what the journal says runs (or finish the rollback it
        # owes) before waiting on the network; the startup trigger fetches right after.
        await self._pass(fetch=False)
        while True:
            due = schedule.due()
            if "poll" in due:
                self.trigger("poll")
            if "drift" in due:
                if self._wired.reconciler.drifted():
                    self.trigger("drift")
                self.report_health(periodic=False)
            if "health" in due:
                self.report_health(periodic=True)
            if self._triggered.is_set():
                self._triggered.clear()
                reasons, self.triggers = self.triggers, []
                logger.debug("reconcile: %s", ", ".join(reasons))
                await self._pass()
                schedule.polled()
                continue
            with contextlib.suppress(TimeoutError):  # not wait_for: see Courier.run
                async with asyncio.timeout(schedule.wait_s()):
                    await self._triggered.wait()

    async def _pass(self, fetch: bool = True) -> None:
        self._passing = True
        try:
            await self.reconcile(fetch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a journal that cannot write: retry next poll
            self.failure = exc
            logger.exception("reconcile pass failed")
        finally:
            self._passing = False
            self.passes += 1

    def report_health(self, periodic: bool = False) -> None:
        """Queue a health report: periodic ones always, otherwise only on a change."""
        try:
            self._report_health(periodic)
        except Exception:  # health must never stop the loop
            logger.exception("health report failed")

    def _report_health(self, periodic: bool) -> None:
        state = self.parts.journal.state
        if not state.config.telemetry_enabled:
            return
        runtime = self.parts.runtime.status()
        event = health_event(
            self.settings.vehicle_id,
            state,
            runtime,
            self.parts.clock.now(),
            self.figures_now(runtime),
        )
        if periodic or state.last_health != [event.status, *event.codes]:
            self.parts.journal.append(event)
            self.on_report()

    def _seen_sequence(self) -> None:
        """A notify at or below the accepted sequence is old news."""
        desired, link = self.parts.journal.state.desired, self._wired.mqtt
        if link is not None and desired is not None:
            link.accepted_sequence = max(link.accepted_sequence, desired.sequence)

    def _changed(self) -> None:
        if self._wired.mqtt is not None:
            self._wired.mqtt.changed()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=f"{self.settings.vehicle_id}:{name}")
        self._tasks.append(task)
