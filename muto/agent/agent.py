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
from muto.agent.journal.events import AgentStarted, AgentStopped, PassCompleted
from muto.agent.parts import AgentParts, AgentSettings, Wiring
from muto.agent.reconcile.recovery import interrupted, restart_loop
from muto.agent.reconcile.settle import settle
from muto.agent.reconcile.steps import PassVerdict
from muto.agent.reports import health_event, health_report, new_incarnation, pass_failure
from muto.agent.runtime.base import RuntimeStatus
from muto.agent.schedule import Schedule
from muto.agent.transport.courier import Courier
from muto.domain.desired import AgentConfig
from muto.domain.messages import AgentPhase
from muto.domain.reasons import ReasonCode
from muto.domain.wire import encode

if TYPE_CHECKING:
    from muto.agent.transport.mqtt import MqttLink

logger = logging.getLogger("muto.agent")
NOTIFY_RECHECK_S = 1.0  # after a pass that could not reach a notified sequence


class Agent:
    def __init__(self, settings: AgentSettings, parts: AgentParts) -> None:
        self.settings = settings
        self.parts = parts
        self.failure: BaseException | None = None  # the last pass's unexpected error
        self.health_failing: str | None = None  # the kind of the last health report's
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
        self._probe: asyncio.Task[None] | None = None  # a poll made during a download
        self.figures = AgentFigures()
        # Health reports sent without the journal, in flight (the journal refused them).
        self.flares: set[asyncio.Task[Any]] = set()

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
        stopping += self.flares
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
        try:  # a planned end, not a death: the restart-loop guard must not count it
            self.parts.journal.append(AgentStopped(at=self.parts.clock.now()))
        except Exception:  # then the next start counts this run as one that died
            logger.exception("could not journal the stop")
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
        """Runs one pass at a time as its own task and keeps watching while it runs: a
        pass that waits on a slow download (or downloads while the gates block) holds up
        neither the drift and crash-loop check nor the health reports."""
        schedule = Schedule(self.settings, self.parts.clock, self.parts.rng)
        # Offline first: restore what the journal says runs (or finish the rollback it
        # owes) before waiting on the network; the startup trigger fetches right after.
        current: asyncio.Task[None] | None = self._spawn(self._pass(fetch=False), "pass")
        hint: asyncio.Task[Any] | None = None  # wakes the watcher when a hint arrives
        health_owed = False  # a periodic health report held back by a step in flight
        try:
            while True:
                if current is not None and current.done():
                    current = None
                    if hint is not None:  # only a pass is stopped by one
                        hint.cancel()
                        hint = None
                    schedule.polled()
                    schedule.poll_by(self._wired.reconciler.intake.not_before)
                    self._recheck_notified(schedule)
                health_owed = self._watch(schedule, current is not None, health_owed)
                if current is None and self.signals.triggered.is_set():
                    current = self._spawn(self._triggered_pass(), "pass")
                    schedule.polled()  # it fetches: a poll during its download is due later
                    continue
                if current is not None:  # woken by its end, a hint or the next check due
                    if hint is None or hint.done():
                        hint = asyncio.ensure_future(self.signals.hint_arrived.wait())
                    downloading = self._wired.reconciler.downloading
                    await asyncio.wait(
                        {current, hint},
                        timeout=schedule.wait_s(poll=downloading),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    continue
                with contextlib.suppress(TimeoutError):  # not wait_for: see Courier.run
                    async with asyncio.timeout(schedule.wait_s()):
                        await self.signals.triggered.wait()
        finally:
            for task in (hint, self._probe):
                if task is not None:
                    task.cancel()
                    await settle(task)
            if current is not None:
                current.cancel()  # a step in progress finishes its atomic part first
                await settle(current)

    async def _triggered_pass(self) -> None:
        # Taken as the task starts: the triggers and the reconciler's lock change hands
        # with no yield between (tests wait on `triggers`, then on the lock).
        reasons = self.signals.take_triggers()
        logger.debug("reconcile: %s", ", ".join(reasons))
        await self._pass()

    def _watch(self, schedule: Schedule, passing: bool, health_owed: bool) -> bool:
        """What is due besides a pass, during one too; returns whether a periodic health
        report is still owed. Drift (the running release crash-looping, not running, or
        down) triggers a pass, and pre-empts one that only waits on the network so that
        it acts now: only the pass acts on the runtime, so one actor applies at a time.
        So does a newer desired state announced during a pass (a notify, or the poll this
        makes during a download): the pass fetches it before going on toward the older."""
        due = schedule.due()
        reconciler = self._wired.reconciler
        if "poll" in due and not passing:  # during a pass: re-armed when it ends
            self.trigger("poll")
        if "drift" in due and reconciler.drifted():
            self.trigger("drift")
            reconciler.preempt()
        if passing:
            self.signals.hint_arrived.clear()
            if "poll" in due and reconciler.downloading:
                schedule.polled()
                self._poll_during_download()
            reconciler.preempt_for_newer()
        health_owed = health_owed or "health" in due
        if ("drift" in due or health_owed) and self.parts.journal.state.in_flight is None:
            # Not while an apply, a readiness wait or a rollback is in flight: the runtime
            # is in motion then and would read as down. The report waits for the step.
            self.report_health(periodic=health_owed)
            health_owed = False
        return health_owed

    def _recheck_notified(self, schedule: Schedule) -> None:
        """A notified sequence still above the accepted one after the pass: the fetch
        met an API process that had not heard of the change yet (its memory hears it a
        moment after the commit), a refusal, or a network blip. Ask once more a little
        later, once per sequence: a forged notify costs one more conditional fetch."""
        wanted = self.signals.notified
        if wanted > self._rechecked and wanted > self.parts.journal.state.accepted_sequence:
            self._rechecked = wanted
            schedule.poll_by(self.parts.clock.monotonic() + NOTIFY_RECHECK_S)

    def _poll_during_download(self) -> None:
        """A long download must not blind a vehicle without MQTT: at the poll interval it
        asks the cloud whether a newer desired state is there (the accepted document's
        ETag: a 304, cheap, when nothing changed), and a newer one is a hint like a
        notify's, which the pass then fetches and verifies itself."""
        if self._probe is None or self._probe.done():
            self._probe = self._spawn(self._probe_latest(), "poll")

    async def _probe_latest(self) -> None:
        if not self.parts.vehicle.read().clock_trusted:
            return  # nothing can be accepted now: a newer document would only be held
        sequence = await self._wired.reconciler.intake.offered()
        if sequence is not None and sequence > self.parts.journal.state.accepted_sequence:
            self.signals.hint(sequence, f"seen:{sequence}")  # a claim: the pass verifies

    async def _pass(self, fetch: bool = True) -> None:
        self._passing = True
        failing = self.parts.journal.state.pass_failed is not None
        try:
            await self.reconcile(fetch)
            self._passed(failing)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug, a data dir that takes no writes: retry next poll
            self._failed(exc)
        finally:
            self._passing = False
            self.passes += 1

    def _failed(self, exc: Exception) -> None:
        """Say it once per distinct failure: a log line with the traceback, a PassFailed
        in the journal and a health report with its code, so the cloud sees a vehicle
        that cannot act instead of a stale "healthy". A journal that cannot take the
        event either refuses it whole and is left as it was."""
        failed = pass_failure(exc, self.parts.clock.now())
        previous = self.failure
        self.failure = exc
        new = previous is None or pass_failure(previous, failed.at).error != failed.error
        if new:
            code = failed.code
            logger.error("reconcile pass failed (%s), retried at the next poll", code, exc_info=exc)
        else:
            logger.debug("reconcile pass failed again: %s", failed.detail)
        known = self.parts.journal.state.pass_failed
        if known is not None and (known.code, known.error) == (failed.code, failed.error):
            return
        try:
            self.parts.journal.append(failed)
        except Exception as again:
            if new:
                logger.error("could not journal the failure either: %s", again)
                self._flare(failed.code)  # the cloud hears it all the same
            return
        self.report_health()

    def _passed(self, failing: bool) -> None:
        """A pass completed: a failure journaled before (this run's or the last's) is
        over; PassCompleted says so (the run's first pass has already) and health drops
        its code at once."""
        if self.failure is not None:
            logger.info("reconcile passes complete again")
            self.failure = None
        if self.parts.journal.state.pass_failed is not None:
            verdict = self.verdict.kind if self.verdict is not None else "settled"
            self.parts.journal.append(PassCompleted(at=self.parts.clock.now(), verdict=verdict))
        if failing:
            self.report_health()

    def report_health(self, periodic: bool = False) -> None:
        """Queue a health report: periodic ones always, otherwise only on a change."""
        try:
            self._report_health(periodic)
        except Exception as exc:  # health must never stop the loop
            # Once per distinct failure, as a pass's: a full disk failed every 5 s, each
            # time with its traceback, into logs on that same disk.
            failed = pass_failure(exc, self.parts.clock.now())
            if failed.error != self.health_failing:
                logger.exception("health report failed (%s)", failed.error)
            else:
                logger.debug("health report failed again: %s", exc)
            self.health_failing = failed.error
            self._flare(failed.code)
        else:
            if self.health_failing is not None:
                logger.info("health reports are queued again")
            self.health_failing = None

    def _flare(self, code: ReasonCode) -> None:
        """The journal refused a health report: send one without it, with the refusal's
        code (INSUFFICIENT_DISK on a full disk), so that the fleet view says why this
        vehicle is stuck rather than its last word before the disk filled."""
        if not self.parts.journal.state.config.telemetry_enabled:
            return
        try:
            runtime = self.parts.runtime.status()
            now = self.parts.clock.now()
            report = health_report(
                self.settings.vehicle_id,
                self.parts.journal.state,
                runtime,
                now,
                self.figures_now(runtime),
                failing=code,
            )
            sent = self._wired.courier.flare("health", encode(report))
            task = asyncio.create_task(sent, name=f"{self.settings.vehicle_id}:flare")
        except Exception:  # never more trouble than the failure it reports
            logger.debug("an unjournaled health report could not be made", exc_info=True)
            return
        self.flares.add(task)
        task.add_done_callback(self.flares.discard)

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
