"""Rollback: restore the previous known good release, or stop when there is none.

Invariants: the start is journaled before the runtime is touched; a target that cannot
be restored (not cached, apply fails, not ready) leaves the runtime stopped, never half
switched; a shutdown during the readiness wait is journaled as abandoned and the
journal still owes the rollback, so the next start does it again. A target refused for
want of disk (INSUFFICIENT_DISK: its download or its apply) did not fail: the rollback
failed `blocked`, the target stays known good and the rollback due, and the rest of the
pass sees the target as a download that found the disk full (executor._blocked does the
same for an apply), so that it is tried again at the next pass, not in this one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from muto.agent.clock import Clock
from muto.agent.journal import Journal
from muto.agent.journal.events import (
    Event,
    RollbackApplied,
    RollbackFailed,
    RollbackStarted,
    RuntimeStopped,
    StepAbandoned,
)
from muto.agent.kill import KillSwitch
from muto.agent.reconcile.gather import Gatherer, PassMemory
from muto.agent.reconcile.settle import as_reason, failure_of, settle
from muto.agent.reconcile.steps import Rollback
from muto.agent.runtime.base import RuntimeAdapter
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import StackRelease

DISK = ReasonCode.INSUFFICIENT_DISK


@dataclass
class Restorer:
    journal: Journal
    runtime: RuntimeAdapter
    gatherer: Gatherer
    clock: Clock
    kill: KillSwitch

    def _note(self, *events: Event) -> None:
        self.journal.append(*events)

    async def run(self, step: Rollback, memory: PassMemory) -> None:
        self._note(
            RollbackStarted(
                at=self.clock.now(),
                failed_key=step.failed_key,
                target_key=step.target_key,
                causes=step.causes,
            )
        )
        self.kill("rollback")
        if step.target_key is None:
            await self.runtime.stop()
            codes = [*step.causes, ReasonCode.NO_PREVIOUS_KNOWN_GOOD]
            self._rollback_failed(step, codes, "no previous known good release")
            return
        release = self.journal.state.releases[step.target_key]
        began = self.clock.monotonic()
        try:
            await self._restore(release, memory)
        except asyncio.CancelledError:
            self._note(StepAbandoned(at=self.clock.now(), step="rollback"))
            raise
        except Exception as exc:
            reason = as_reason(exc, ReasonCode.APPLY_FAILED)
            await self.runtime.stop()  # never leave a half-restored stack running
            # The failure answered, that its rollback failed, and why (when not the same).
            named = [*step.causes, ReasonCode.ROLLBACK_FAILED, reason.code]
            blocked = reason.code == DISK
            if blocked:
                for artifact in release.artifacts:
                    memory.download_failures[artifact.digest] = DISK
            self._rollback_failed(step, list(dict.fromkeys(named)), reason.detail, blocked)
            if blocked:  # room for the next try: what the cache keeps only in case
                self.gatherer.free_room()
        else:
            self._note(
                RollbackApplied(
                    at=self.clock.now(),
                    failed_key=step.failed_key,
                    target_key=release.key,
                    causes=step.causes,
                    readiness_sec=self.clock.monotonic() - began,
                )
            )
        self.kill("rollback:done")

    async def _restore(self, release: StackRelease, memory: PassMemory) -> None:
        paths = await self.gatherer.gather(release, memory, release.artifacts)
        if paths is None:  # journaled (ArtifactFailed), with its code in `memory`
            failures = {memory.download_failures.get(a.digest) for a in release.artifacts}
            code = DISK if DISK in failures else ReasonCode.ARTIFACT_DOWNLOAD_FAILED
            raise ReasonError(code, f"{release.key}: not cached")
        task = asyncio.ensure_future(self.runtime.apply(release, paths))
        cancelled = await settle(task)
        failure = failure_of(task, ReasonCode.APPLY_FAILED)
        if failure is not None:
            raise failure
        if cancelled:
            raise asyncio.CancelledError
        await self.runtime.wait_ready(release.health_model)

    def _rollback_failed(
        self, step: Rollback, codes: list[ReasonCode], detail: str, blocked: bool = False
    ) -> None:
        self._note(
            RollbackFailed(
                at=self.clock.now(),
                failed_key=step.failed_key,
                target_key=step.target_key,
                codes=codes,
                detail=detail,
                blocked=blocked,
            ),
            RuntimeStopped(at=self.clock.now(), reason="rollback failed"),
        )
