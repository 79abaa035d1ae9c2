"""One vehicle with the agent's real parts (the process runtime and its child processes,
the artifact cache over a local HTTP server, an SQLite journal, the agent's own loop) on a
fake cloud, for integration tests of the agent's late failures and pre-emptions."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from muto.agent.agent import Agent
from muto.agent.artifacts import CachedArtifacts
from muto.agent.cache import ArtifactCache
from muto.agent.journal import Journal
from muto.agent.journal import events as ev
from muto.agent.parts import AgentParts, AgentSettings
from muto.agent.runtime.process import ProcessRuntime
from muto.agent.safety import SimulatedStateProvider
from muto.agent.trust import MemoryTrust
from muto.domain.release import HealthModel, Launch, StackRelease
from muto.domain.vehicle_state import VehicleState
from tests.support.agent_rig import VEHICLE, FakeCloud, Signers
from tests.support.artifact_server import ArtifactServer, Faults
from tests.support.releases import archive, stack_release
from tests.support.runtime_kit import LIVE_READY, PYTHON
from tests.support.waits import until

# serve: up for good; late: ready, then exits after 1.5 s, every run (a late crash loop).
APP = """
import os, sys, time
open("pid", "w").write(str(os.getpid()))
open("ready", "w").close()
time.sleep(1.5 if sys.argv[1] == "late" else 300)
sys.exit(1)
"""
HEALTH = HealthModel(readiness_probe=LIVE_READY, readiness_timeout_sec=30, crash_loop_window_sec=30)
TOKEN = "vehicle-token"
NOW = datetime.now(UTC) - timedelta(minutes=1)  # documents are judged on the real clock here


def release(
    tmp: Path, server: ArtifactServer, version: str, mode: str = "serve", padding: int = 0
) -> StackRelease:
    # Random padding: an archive big enough for a download to stall part-way.
    files = {"app.py": APP, "padding": os.urandom(padding).hex()}
    served, _ = archive(tmp, "nav", version, files, server=server)
    return stack_release(
        "nav", version, [served], launch=Launch(command=[PYTHON, "app.py", mode]), health=HEALTH
    )


class Vehicle:
    """One agent on a data dir under `tmp`; `restart` builds the next one on the same dir."""

    def __init__(self, tmp: Path, server: ArtifactServer, **settings: Any) -> None:
        self.tmp, self.server, self.settings = tmp, server, settings
        self.signers = Signers()
        self.cloud = FakeCloud()
        self.agent = self._agent()

    def _agent(self) -> Agent:
        data = self.tmp / "data"
        self.runtime = ProcessRuntime(
            self.tmp / "runtime", poll_sec=0.05, grace_sec=2, backoff_sec=0.05
        )
        self.cache = ArtifactCache(data / "cache", 50 * 1024 * 1024, read_timeout_s=60)
        parts = AgentParts(
            journal=Journal.open(data),
            trust=MemoryTrust(self.signers.trust),
            runtime=self.runtime,
            vehicle=SimulatedStateProvider(VehicleState()),
            artifacts=CachedArtifacts(self.cache, token=TOKEN, token_origin=self.server.base_url),
            cloud=self.cloud,
            data_dir=data,
        )
        settings = {"poll_s": 3600, "drift_check_s": 0.2, "health_every_s": 3600}
        return Agent(AgentSettings(vehicle_id=VEHICLE, **{**settings, **self.settings}), parts)

    async def restart(self, **settings: Any) -> None:
        await self.agent.stop()
        self.settings = {**self.settings, **settings}
        self.agent = self._agent()

    def desire(self, target: StackRelease, sequence: int) -> None:
        self.cloud.serve(self.signers.bundle(target, sequence, issued=NOW))
        self.agent.trigger("test")

    async def running(self, target: StackRelease, what: str, timeout: float = 30) -> None:
        def done() -> bool:
            state, status = self.agent.journal.state, self.runtime.status()
            return state.running_key == status.release == target.key and status.alive

        await until(done, what, timeout, in_thread=False, interval=0.05)

    def events(self, kind: type[ev.Event], after: int = 0) -> list[Any]:
        return [r.event for r in self.agent.journal.records(after) if isinstance(r.event, kind)]

    def healths(self, after: int = 0) -> list[tuple[str, list[str]]]:
        queued = self.events(ev.ReportQueued, after)
        return [(e.status, [*e.codes]) for e in queued if e.kind == "health"]


def run(
    tmp: Path, scenario: Callable[[Vehicle, ArtifactServer], Awaitable[None]], **settings: Any
) -> None:
    async def main() -> None:
        with ArtifactServer(faults=Faults(bearer_token=TOKEN)) as server:
            vehicle = Vehicle(tmp, server, **settings)
            try:
                await scenario(vehicle, server)
            finally:
                await vehicle.agent.stop()

    asyncio.run(main())
