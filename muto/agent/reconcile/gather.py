"""Gathering a release's artifacts before a step uses them: verified paths, or a
journaled reason why one is unavailable (remembered for the rest of the pass)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from muto.agent.artifacts import ArtifactSource
from muto.agent.clock import Clock
from muto.agent.journal import Journal
from muto.agent.journal.events import ArtifactCached, ArtifactEvicted, ArtifactFailed
from muto.agent.kill import KillSwitch
from muto.agent.signals import Signals
from muto.domain.errors import ReasonError
from muto.domain.messages import AgentPhase
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact, ArtifactType, StackRelease


@dataclass
class PassMemory:
    """What one reconcile pass learned that the journal does not carry forward."""

    download_failures: dict[str, ReasonCode] = field(default_factory=dict)
    # Stopping for a newer desired state (Reconciler.preempt_for_newer, the hold before
    # an apply): what this pass stopped that found nothing newer ("fetch" once it was cut
    # at all), and so stops no more in it; and the stop whose fetch is still to come:
    # what was stopped, the sequence accepted then and the one hinted.
    spent: set[str] = field(default_factory=set)
    stopped: tuple[str, int, int] | None = None


@dataclass
class Gatherer:
    journal: Journal
    artifacts: ArtifactSource
    clock: Clock
    kill: KillSwitch
    self_fetched: frozenset[ArtifactType]
    signals: Signals

    async def gather(
        self, release: StackRelease, memory: PassMemory, wanted: Iterable[Artifact]
    ) -> dict[str, Path] | None:
        """Verified paths of `wanted` (downloading what is missing), or None after
        journaling why one is unavailable."""
        self.signals.set_phase(AgentPhase.CACHING)
        self.kill("cache")
        paths: dict[str, Path] = {}
        for artifact in wanted:
            if artifact.type in self.self_fetched:
                continue
            try:
                fetched = await self.artifacts.ensure(artifact)
            except ReasonError as exc:
                memory.download_failures[artifact.digest] = exc.code
                self.journal.append(
                    ArtifactFailed(
                        at=self.clock.now(),
                        digest=artifact.digest,
                        release_key=release.key,
                        code=exc.code,
                        detail=exc.detail,
                    )
                )
                return None
            paths[artifact.digest] = fetched.path
            now = self.clock.now()
            gone = [ArtifactEvicted(at=now, digest=d) for d in fetched.evicted]
            if fetched.downloaded:
                cached = ArtifactCached(
                    at=now, digest=artifact.digest, size=artifact.size, release_key=release.key
                )
                self.journal.append(*gone, cached)
        self.kill("cache:done")
        return paths
