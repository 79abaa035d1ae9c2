"""Gathering a release's artifacts before a step uses them: verified paths, or a
journaled reason why one is unavailable (remembered for the rest of the pass). The
artifacts a runtime fetches itself (podman's images: runtime/base.py, SelfFetcher) are
downloads like the cache's: fetched here, journaled the same, with no path."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from muto.agent.artifacts import ArtifactSource
from muto.agent.cache import cache_of
from muto.agent.clock import Clock
from muto.agent.journal import Journal
from muto.agent.journal.events import ArtifactCached, ArtifactEvicted, ArtifactFailed
from muto.agent.kill import KillSwitch
from muto.agent.runtime.base import SelfFetcher
from muto.agent.signals import Signals
from muto.domain.errors import ReasonError
from muto.domain.messages import AgentPhase
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact, StackRelease


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
    # The release the runtime could not put in place for want of disk with nothing left
    # in the cache to free (Executor._apply): the reconciler does not try it again until
    # there is more room (Reconciler.no_room).
    no_room: str | None = None


@dataclass
class Gatherer:
    journal: Journal
    artifacts: ArtifactSource
    clock: Clock
    kill: KillSwitch
    fetcher: SelfFetcher | None
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
            gone: tuple[str, ...] = ()
            try:
                if (fetcher := self._fetcher_of(artifact)) is not None:
                    downloaded = await fetcher.fetch(artifact)
                else:
                    fetched = await self.artifacts.ensure(artifact)
                    paths[artifact.digest] = fetched.path
                    downloaded, gone = fetched.downloaded, fetched.evicted
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
            if downloaded:
                now = self.clock.now()
                cached = ArtifactCached(
                    at=now, digest=artifact.digest, size=artifact.size, release_key=release.key
                )
                self.journal.append(*[ArtifactEvicted(at=now, digest=d) for d in gone], cached)
        self.kill("cache:done")
        return paths

    def free_room(self) -> int:
        """The runtime found the disk full putting a release in place: evict what the
        cache keeps only in case (neither pinned nor being fetched), journaled as the
        cache's own evictions are. How many artifacts went."""
        cache = cache_of(self.artifacts)
        gone = cache.evict_unpinned() if cache is not None else []
        if gone:
            now = self.clock.now()
            self.journal.append(*[ArtifactEvicted(at=now, digest=d) for d in gone])
        return len(gone)

    def _fetcher_of(self, artifact: Artifact) -> SelfFetcher | None:
        """The runtime's own fetcher, for an artifact the runtime fetches itself."""
        fetcher = self.fetcher
        return fetcher if fetcher is not None and artifact.type in fetcher.types else None

    async def present(
        self, digests: Collection[str], releases: Iterable[StackRelease]
    ) -> frozenset[str]:
        """Which of `digests` (artifacts of `releases`) are at hand: in the cache, or held
        by the runtime that fetches them itself."""
        own = {a.digest: a for r in releases for a in r.artifacts if self._fetcher_of(a)}
        held: frozenset[str] = frozenset()
        if self.fetcher is not None and own:
            held = await self.fetcher.present([a for d, a in own.items() if d in digests])
        return self.artifacts.present(d for d in digests if d not in own) | held
