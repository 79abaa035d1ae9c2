"""The artifact cache on a vehicle whose disk or budget is full, under a whole agent: a
real ArtifactCache over a local HTTP server, the simulated runtime (whose installs find
the disk full when a test says so), a hand-driven clock.

The cache pins what a rollback needs (the running release, its rollback target) and the
release wanted, not every known good: a budget of three releases takes a fourth. An
install refused for want of disk frees the cache's unpinned artifacts and the next pass
applies; refused again with nothing left to free, it is not tried again (nor journaled)
until there is more room or another revision (docs/agent.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TypeVar

from muto.agent.agent import Agent
from muto.agent.artifacts import CachedArtifacts
from muto.agent.cache import ArtifactCache
from muto.agent.journal import Journal
from muto.agent.journal import events as ev
from muto.agent.parts import AgentParts, AgentSettings
from muto.agent.runtime.simulated import SimulatedRuntime
from muto.agent.safety import SimulatedStateProvider
from muto.agent.trust import MemoryTrust
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import StackRelease
from muto.domain.vehicle_state import VehicleState
from tests.support.agent_rig import VEHICLE, FakeCloud, ManualClock, Signers
from tests.support.artifact_server import ArtifactServer
from tests.support.releases import blob_release

DISK = ReasonCode.INSUFFICIENT_DISK
SIZE = 300_000  # each release's one artifact
E = TypeVar("E", bound=ev.Event)


class Vehicle:
    """One agent with a real cache of `budget` bytes; its installs find the disk full
    while `full(release)` says so."""

    def __init__(self, tmp: Path, server: ArtifactServer, budget: int) -> None:
        self.tmp, self.server = tmp, server
        self.signers, self.cloud, self.clock = Signers(), FakeCloud(), ManualClock()
        self.cache = ArtifactCache(tmp / "cache", budget)
        self.runtime = SimulatedRuntime(clock=self.clock.monotonic, time_scale=1e-6)
        self.vehicle = SimulatedStateProvider(VehicleState(free_disk_mb=500))
        self.full: Callable[[StackRelease], bool] = lambda _: False
        self.installs: list[str] = []
        install = self.runtime.apply

        async def apply(release: StackRelease, artifacts: Mapping[str, Path]) -> None:
            self.installs.append(release.key)
            if self.full(release):
                raise ReasonError(DISK, "pip install: [Errno 28] No space left on device")
            await install(release, artifacts)

        self.runtime.apply = apply  # type: ignore[method-assign]
        parts = AgentParts(
            journal=Journal.memory(),
            trust=MemoryTrust(self.signers.trust),
            runtime=self.runtime,
            vehicle=self.vehicle,
            artifacts=CachedArtifacts(self.cache),
            cloud=self.cloud,
            clock=self.clock,
        )
        self.agent = Agent(AgentSettings(vehicle_id=VEHICLE), parts)
        self.journal = parts.journal

    def release(self, n: int) -> StackRelease:
        return blob_release(self.server, self.tmp, n, SIZE)

    async def desire(self, target: StackRelease, sequence: int) -> tuple[str, tuple[str, ...]]:
        self.cloud.serve(self.signers.bundle(target, sequence))
        verdict = await self.agent.reconcile()
        return verdict.kind, tuple(str(c) for c in verdict.codes)

    def events(self, kind: type[E], after: int = 0) -> list[E]:
        return [r.event for r in self.journal.records(after) if isinstance(r.event, kind)]

    def cached(self) -> set[str]:
        return {e.digest for e in self.cache.entries()}


def digest(release: StackRelease) -> str:
    return release.artifacts[0].digest


def run(tmp: Path, budget: int, scenario: Callable[[Vehicle], Awaitable[None]]) -> None:
    async def main() -> None:
        with ArtifactServer() as server:
            vehicle = Vehicle(tmp, server, budget)
            await vehicle.agent.start(loop=False)
            try:
                await scenario(vehicle)
            finally:
                await vehicle.agent.stop()

    asyncio.run(main())


def test_a_budget_of_three_releases_takes_a_fourth(tmp_path: Path) -> None:
    """1, 2, 3 ran in turn (all three known good); 4 does not fit beside them. The oldest
    known good (1) makes way, never the running release (3) nor its rollback target (2)."""

    async def scenario(car: Vehicle) -> None:
        r1, r2, r3, r4 = (car.release(n) for n in (1, 2, 3, 4))
        for n, target in enumerate((r1, r2, r3), start=1):
            assert await car.desire(target, n) == ("converged", ())
        assert car.journal.state.known_good == [r1.key, r2.key, r3.key]
        assert car.cache.pinned() == {digest(r2), digest(r3)}
        before = car.journal.state.position
        assert await car.desire(r4, 4) == ("converged", ())
        evicted = [e.digest for e in car.events(ev.ArtifactEvicted, before)]
        assert evicted == [digest(r1)]
        assert car.cached() == {digest(r2), digest(r3), digest(r4)}
        assert car.cache.pinned() == {digest(r3), digest(r4)}

    run(tmp_path, 3 * SIZE + SIZE // 2, scenario)


def test_an_install_refused_for_want_of_disk_frees_unpinned_artifacts_and_the_next_pass_applies(
    tmp_path: Path,
) -> None:
    """The reviewer's case: 2 did not fit (blocked), the operator moved on to 3 (runs);
    2's artifact, pinned no more, is what keeps 4 from fitting. 4's refused install evicts
    it (journaled), and the next pass applies 4."""

    async def scenario(car: Vehicle) -> None:
        r1, r2, r3, r4 = (car.release(n) for n in (1, 2, 3, 4))
        assert await car.desire(r1, 1) == ("converged", ())
        # 2 is too big; 4 fits only without 2's artifact (3 is small: it fits either way).
        car.full = lambda release: (
            release.key == r2.key or (release.key == r4.key and digest(r2) in car.cached())
        )
        assert await car.desire(r2, 2) == ("blocked", ("INSUFFICIENT_DISK",))
        assert await car.desire(r3, 3) == ("converged", ())
        assert digest(r2) in car.cached() and digest(r2) not in car.cache.pinned()
        before = car.journal.state.position
        assert await car.desire(r4, 4) == ("blocked", ("INSUFFICIENT_DISK",))
        refused = car.events(ev.ApplyFailed, before)
        assert [(e.release_key, e.code, e.blocked) for e in refused] == [(r4.key, DISK, True)]
        evicted = [e.digest for e in car.events(ev.ArtifactEvicted, before)]
        assert evicted == [digest(r2)] and digest(r2) not in car.cached()
        assert r4.key not in car.journal.state.failed
        assert (await car.agent.reconcile()).kind == "converged"  # the next poll
        assert car.runtime.status().release == r4.key

    run(tmp_path, 50 * SIZE, scenario)


def test_a_pass_refused_again_with_nothing_to_free_journals_nothing_new(tmp_path: Path) -> None:
    """2 never fits and the cache holds nothing it may evict: the refusal is journaled and
    reported once; the next polls neither install nor journal anything until the disk has
    more room (then 2 is tried, and runs), another revision asks or an hour has passed."""

    async def scenario(car: Vehicle) -> None:
        r1, r2 = car.release(1), car.release(2)
        assert await car.desire(r1, 1) == ("converged", ())
        room = False
        car.full = lambda release: release.key == r2.key and not room
        assert await car.desire(r2, 2) == ("blocked", ("INSUFFICIENT_DISK",))
        assert len(car.events(ev.ApplyFailed)) == 1 and not car.events(ev.ArtifactEvicted)
        installs, position = len(car.installs), car.journal.state.position
        for _ in range(3):  # polls: nothing changed
            car.clock.advance(30)
            verdict = await car.agent.reconcile()
            assert (verdict.kind, verdict.codes) == ("blocked", (DISK,))
        assert (len(car.installs), car.journal.state.position) == (installs, position)
        assert await car.desire(r2, 3) == ("blocked", ("INSUFFICIENT_DISK",))  # a new revision
        assert len(car.installs) == installs + 1 and len(car.events(ev.ApplyFailed)) == 2
        await car.agent.reconcile()
        assert len(car.installs) == installs + 1  # refused again, quietly
        car.clock.advance(3600)  # an hour on: tried again all the same (another partition?)
        await car.agent.reconcile()
        assert len(car.installs) == installs + 2 and len(car.events(ev.ApplyFailed)) == 3
        room = True  # the operator cleans up: 50 MB more free
        car.vehicle.set(free_disk_mb=550)
        assert (await car.agent.reconcile()).kind == "converged"
        assert car.runtime.status().release == r2.key

    run(tmp_path, 50 * SIZE, scenario)
