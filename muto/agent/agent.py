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
from typing import TYPE_CHECKING, Any

from muto.agent.config_file import store_config
from muto.agent.figures import AgentFigures, journal_bytes
from muto.agent.journal import Journal
from muto.agent.journal.events import AgentStarted, PassCompleted
from muto.agent.parts import AgentParts, AgentSettings, Wiring
from muto.agent.reconcile.recovery import interrupted, restart_loop
from muto.agent.reconcile.steps import PassVerdict
from muto.agent.reports import health_event, new_incarnation
from muto.agent.runtime.base import RuntimeStatus
from muto.agent.schedule import Schedule
from muto.agent.transport.courier import Courier
from muto.domain.desired import AgentConfig
from muto.domain.messages import AgentPhase

if TYPE_CHECKING:
    from muto.agent.transport.mqtt import MqttLink

logger = logging.getLogger("muto.agent")
NOTIFY_RECHECK_S = 1.0  # after a pass that could not reach a notified sequence


class Agent:
    def __init__(self, settings: AgentSettings, parts: AgentParts) -> None:
        self.settings = settings
        self.parts = parts
        self.failure: BaseException | None = None  # the last pass's unexpected error
        self._wired = Wiring.build(settings, parts)
        self.signals = self._wired.signals
        self._config: AgentConfig | None = None  # the one this process has applied
        # The tasks start() runs, held by what they are (stop() ends them in an order).
        self._passes: asyncio.Task[None] | None = None
        self._delivery: asyncio.Task[None] | None = None
        self._session: asyncio.Task[None] | None = None
        self._stopped = False
        self._finished_a_pass = False  # this run's; journaled once (restart-loop guard)
        self._rechecked = 0  # the highest notified sequence already fetched once more
        self.passes = 0  # passes the loop has finished (tests wait on them, not on time)
        self._passing = False
        self.figures = AgentFigures()

    # -- what callers see ------------------------------------------------------------
    @property
    def phase(self) -> AgentPhase:
        return self.signals.phase

    @property
    def triggers(self) -> list[str]:
        """Reasons waiting for the next pass (coalesced into one)."""
        return self.signals.triggers

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return [t for t in (self._passes, self._delivery, self._session) if t is not None]

    @property
    def journal(self) -> Journal:
        return self.parts.journal

    @property
    def verdict(self) -> PassVerdict | None:
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
        return not self._passing and not self.signals.triggered.is_set()

    def drifted(self) -> bool:
        return self._wired.reconciler.drifted()

    def trigger(self, reason: str) -> None:
        self.signals.trigger(reason)

    async def reconcile(self, fetch: bool = True) -> PassVerdict:
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
        self._apply_config(self.parts.journal.state.config)
        self.signals.shown.set()
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
        self._apply_config(journal.state.config)
        self.signals.shown.set()
        if loop:
            self.trigger("startup")
            self._passes = self._spawn(self._loop(), "reconcile")
            self._delivery = self._spawn(self._wired.courier.run(), "courier")
            if self._wired.mqtt is not None:
                self._session = self._spawn(self._wired.mqtt.run(), "mqtt")

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        flush = self.settings.flush_s
        stopping = [t for t in (self._passes, self._delivery) if t is not None]
        session, self._passes, self._delivery, self._session = self._session, None, None, None
        for task in stopping:
            task.cancel()  # a step in progress finishes its atomic part first
        await asyncio.gather(*stopping, return_exceptions=True)
        with contextlib.suppress(TimeoutError):  # while MQTT is still up: it may carry them
            await asyncio.wait_for(self._wired.courier.drain(), flush)
        link = self._wired.mqtt
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

    def _apply_config(self, config: AgentConfig) -> None:
        """Put the journal's agentConfig in force in this process, once per change (the
        intake journals it and signals the MQTT link itself)."""
        if config == self._config:
            return
        self._config = config
        if self.parts.config_file is not None:
            store_config(self.parts.config_file, config)
        if self.settings.owns_logging:  # one agent per process: its level is the process's
            logging.getLogger("muto").setLevel(str(config.log_level).upper())

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
            if self.signals.triggered.is_set():
                reasons = self.signals.take_triggers()
                logger.debug("reconcile: %s", ", ".join(reasons))
                await self._pass()
                schedule.polled()
                schedule.poll_by(self._wired.reconciler.intake.not_before)
                self._recheck_notified(schedule)
                continue
            with contextlib.suppress(TimeoutError):  # not wait_for: see Courier.run
                async with asyncio.timeout(schedule.wait_s()):
                    await self.signals.triggered.wait()

    def _recheck_notified(self, schedule: Schedule) -> None:
        """A notified sequence still above the accepted one after the pass: the fetch
        met an API process that had not heard of the change yet (its memory hears it a
        moment after the commit), a refusal, or a network blip. Ask once more a little
        later, once per sequence: a forged notify costs one more conditional fetch."""
        wanted = self.signals.notified
        if wanted > self._rechecked and wanted > self.parts.journal.state.accepted_sequence:
            self._rechecked = wanted
            schedule.poll_by(self.parts.clock.monotonic() + NOTIFY_RECHECK_S)

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
            self.signals.report_queued()

    def _spawn(self, coro: Coroutine[Any, Any, None], role: str) -> asyncio.Task[None]:
        return asyncio.create_task(coro, name=f"{self.settings.vehicle_id}:{role}")
