"""The agent with its real parts: the artifact cache over a local HTTP server, an SQLite
journal, and the process and python_wheel runtimes with real child processes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from muto.agent.agent import Agent
from muto.agent.artifacts import CachedArtifacts
from muto.agent.cache import ArtifactCache
from muto.agent.journal import Journal
from muto.agent.parts import AgentParts, AgentSettings
from muto.agent.runtime.process import ProcessRuntime
from muto.agent.runtime.python_wheel import PythonWheelRuntime
from muto.agent.safety import SimulatedStateProvider
from muto.agent.trust import MemoryTrust
from muto.domain.release import ArtifactType, HealthModel, Launch, StackRelease
from muto.domain.vehicle_state import VehicleState
from tests.support.agent_rig import VEHICLE, FakeCloud, Signers
from tests.support.artifact_server import ArtifactServer, Faults
from tests.support.releases import archive, stack_release
from tests.support.runtime_kit import (
    LIVE_READY,
    PYTHON,
    artifact_for,
    make_wheel,
    pid_alive,
)

APP = """
import os, sys, time
if sys.argv[1] == "crash":
    sys.exit(1)
open("pid", "w").write(str(os.getpid()))
open("ready", "w").close()
time.sleep(300)
"""
NOW = datetime.now(UTC) - timedelta(minutes=1)  # documents are judged on the real clock here
HEALTH = HealthModel(readiness_probe=LIVE_READY, readiness_timeout_sec=30, crash_loop_window_sec=30)


def archive_release(
    tmp: Path, server: ArtifactServer, version: str, mode: str = "serve"
) -> StackRelease:
    served, _ = archive(tmp, "nav", version, {"app.py": APP, "VERSION": version}, server=server)
    return stack_release(
        "nav", version, [served], launch=Launch(command=[PYTHON, "app.py", mode]), health=HEALTH
    )


def agent_on(tmp: Path, server: ArtifactServer, runtime: Any, cloud: FakeCloud) -> Agent:
    signers = Signers()
    cloud.signers = signers  # type: ignore[attr-defined]
    parts = AgentParts(
        journal=Journal.open(tmp / "data"),
        trust=MemoryTrust(signers.trust),
        runtime=runtime,
        vehicle=SimulatedStateProvider(VehicleState()),
        artifacts=CachedArtifacts(
            ArtifactCache(tmp / "data" / "cache", 50 * 1024 * 1024),
            token="vehicle-token",
            token_origin=server.base_url,
        ),
        cloud=cloud,
        data_dir=tmp / "data",
    )
    return Agent(AgentSettings(vehicle_id=VEHICLE), parts)


def run(tmp: Path, runtime: Any, scenario: Callable[..., Awaitable[None]]) -> None:
    async def main() -> None:
        with ArtifactServer(faults=Faults(bearer_token="vehicle-token")) as server:
            cloud = FakeCloud()
            agent = agent_on(tmp, server, runtime, cloud)
            await agent.start(loop=False)
            try:
                await scenario(agent, cloud, server)
            finally:
                await agent.stop()

    asyncio.run(main())


def test_process_runtime_converges_then_rolls_back_a_crashing_release(tmp_path: Path) -> None:
    runtime = ProcessRuntime(tmp_path / "runtime", poll_sec=0.05, grace_sec=2, backoff_sec=0.05)
    pids: list[int] = []

    async def scenario(agent: Agent, cloud: FakeCloud, server: ArtifactServer) -> None:
        signers: Signers = cloud.signers  # type: ignore[attr-defined]
        good = archive_release(tmp_path, server, "1.0.0")
        bad = archive_release(tmp_path, server, "2.0.0", mode="crash")
        cloud.serve(signers.bundle(good, 1, issued=NOW))
        assert (await agent.reconcile()).kind == "converged"
        directory = runtime.running_directory()
        assert directory is not None
        pids.append(int((directory / "pid").read_text()))
        assert server.requests_for("/nav-1.0.0.tar.gz")[0].authorization == "Bearer vehicle-token"
        cloud.serve(signers.bundle(bad, 2, issued=NOW))
        await agent.reconcile()
        await agent.courier.drain()
        assert cloud.reconcile_reports()[-1] == (
            "dsr_2",
            "rolled_back",
            ["CRASH_LOOP_DETECTED", "ROLLBACK_APPLIED"],
        )
        assert runtime.status().release == good.key
        restored = runtime.running_directory()
        assert restored is not None
        pids.append(int((restored / "pid").read_text()))
        assert pid_alive(pids[-1])
        pinned = agent.parts.artifacts.cache.pinned()  # type: ignore[attr-defined]
        assert good.artifacts[0].digest in pinned

    run(tmp_path, runtime, scenario)
    assert pids and not any(pid_alive(p) for p in pids)  # stop() stopped the stack


def test_a_download_that_fails_is_reported_and_retried_on_the_next_pass(tmp_path: Path) -> None:
    runtime = ProcessRuntime(tmp_path / "runtime", poll_sec=0.05, grace_sec=2)

    async def scenario(agent: Agent, cloud: FakeCloud, server: ArtifactServer) -> None:
        signers: Signers = cloud.signers  # type: ignore[attr-defined]
        target = archive_release(tmp_path, server, "1.0.0")
        cloud.serve(signers.bundle(target, 1, issued=NOW))
        server.faults = Faults(bearer_token="vehicle-token", wrong_bytes=True)
        verdict = await agent.reconcile()
        assert (verdict.kind, list(verdict.codes)) == ("failed", ["ARTIFACT_DOWNLOAD_FAILED"])
        server.faults = Faults(bearer_token="vehicle-token")
        assert (await agent.reconcile()).kind == "converged"
        await agent.courier.drain()
        assert [s for _, s, _ in cloud.reconcile_reports()] == ["failed", "converged"]

    run(tmp_path, runtime, scenario)


COMPONENT = """
import os, time
def main():
    open("component.json", "w").write('{"pid": %d}' % os.getpid())
    time.sleep(300)
"""
COMPONENT_READY = [
    PYTHON,
    "-c",
    "import os, sys; sys.exit(0 if os.path.exists('component.json') else 1)",
]


def test_python_wheel_runtime_converges_with_a_real_venv(tmp_path: Path) -> None:
    runtime = PythonWheelRuntime(tmp_path / "runtime", poll_sec=0.05, grace_sec=2)
    pids: list[int] = []

    async def scenario(agent: Agent, cloud: FakeCloud, server: ArtifactServer) -> None:
        signers: Signers = cloud.signers  # type: ignore[attr-defined]
        wheels = tmp_path / "wheels"
        wheels.mkdir()
        wheel = make_wheel(wheels, module_body=COMPONENT)
        url = server.put(f"/{wheel.name}", wheel.read_bytes())
        artifact = artifact_for(
            wheel, ArtifactType.PYTHON_WHEEL, ref=url, dist_name="lucid-agent-cpu"
        )
        target = stack_release(
            "lucid",
            "1.0.0",
            [artifact],
            launch=Launch(entry_points=["lucid-agent-cpu"]),
            health=HealthModel(readiness_probe=COMPONENT_READY, readiness_timeout_sec=60),
        )
        cloud.serve(signers.bundle(target, 1, issued=NOW))
        assert (await agent.reconcile()).kind == "converged"
        directory = runtime.running_directory()
        assert directory is not None
        pids.append(json.loads((directory / "component.json").read_text())["pid"])
        assert list(runtime.components()) == ["lucid-agent-cpu"]

    run(tmp_path, runtime, scenario)
    assert pids and not pid_alive(pids[0])
