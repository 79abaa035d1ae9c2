"""Scenario 8: slow and endless downloads, end to end: the real cloud assigns release
after release; an agent with the real artifact cache (budget 1.3 MB; timeouts shortened:
no bytes for 0.5 s, or not complete within 2 s, 0.3 s for the slow one) downloads each
from a real artifact server that misbehaves in turn: endless bytes, a stall, slowness.

Each download is aborted (at the declared size, or at a timeout) with
ARTIFACT_DOWNLOAD_FAILED; once the server behaves, the next pass converges. Throughout:
the cache stays within its budget (partials included), and every complete blob in it
has exactly the bytes its name says (nothing polluted).
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from muto.agent.artifacts import CachedArtifacts
from muto.agent.cache.download import Timeouts
from muto.agent.journal.events import ArtifactFailed
from muto.sim.services import CloudProcess, prepare_cloud
from tests.conftest import Mosquitto
from tests.faults.rig import real_parts_agent
from tests.faults.runs import runs
from tests.support.artifact_server import ArtifactServer, Faults
from tests.support.operator import Operator
from tests.support.releases import blob_release

pytestmark = pytest.mark.mqtt
BUDGET = 1_300_000  # the pinned ones (3 known good, the desired one) and no more
SIZE = 300_000
FAULTS = {
    "endless": Faults(endless=True),
    "stalled": Faults(stall_after=100_000, stall_s=30),
    "slow": Faults(stall_after=100_000, stall_s=0.4),  # each read in time, the whole late
}
STRICT = Timeouts(read_s=0.5, total_s=2.0)
SLOW_WHOLE = Timeouts(read_s=0.5, total_s=0.3)


def unpolluted(artifacts: CachedArtifacts) -> int:
    """Bytes in the cache, after checking the budget and every complete blob's bytes."""
    cache = artifacts.cache
    assert cache.usage() <= BUDGET
    for entry in cache.entries():
        path = cache.path_for(entry.digest)
        if path is not None:
            assert "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() == entry.digest
    return cache.usage()


@pytest.mark.parametrize("count", runs(3, 60))
def test_slow_and_endless_downloads(count: int, tmp_path: Path, mosquitto: Mosquitto) -> None:
    operator_token, trust, signer, release_pub = prepare_cloud(tmp_path)
    cloud = CloudProcess(tmp_path / "cloud", mosquitto.url, release_pub)
    failures: dict[str, int] = dict.fromkeys(FAULTS, 0)

    async def scenario() -> int:
        await cloud.start()
        op = Operator(cloud.url, operator_token)
        token = await op.vehicle("car-dl")
        agent, http = real_parts_agent(tmp_path / "car-dl", "car-dl", cloud.url, token, trust,
                                       cache_budget=BUDGET)  # fmt: skip
        artifacts = agent.parts.artifacts
        assert isinstance(artifacts, CachedArtifacts)
        await agent.start(loop=False)
        with ArtifactServer() as server:
            for n in range(count):
                name = list(FAULTS)[n % len(FAULTS)]
                release = blob_release(server, tmp_path, n, SIZE)
                await op.publish(release, signer)
                await op.desire("car-dl", release)
                server.faults = FAULTS[name]
                # (the cache takes its timeouts once; a slow whole needs the shorter total)
                artifacts.cache._timeouts = SLOW_WHOLE if name == "slow" else STRICT
                verdict = await agent.reconcile()
                failed = [r.event for r in agent.journal.records()
                          if isinstance(r.event, ArtifactFailed)][-1:]  # fmt: skip
                assert (verdict.kind, [str(e.code) for e in failed]) == (
                    "failed", ["ARTIFACT_DOWNLOAD_FAILED"]), name  # fmt: skip
                assert failed[0].release_key == release.key
                failures[name] += 1
                unpolluted(artifacts)
                server.faults = Faults()
                assert (await agent.reconcile()).kind == "converged", name
                used = unpolluted(artifacts)
        await agent.courier.drain()
        await agent.stop()
        await http.aclose()
        await op.http.aclose()
        return used

    try:
        used = asyncio.run(scenario())
    finally:
        asyncio.run(cloud.stop())
    print(f"\nscenario 8: {count} aborted downloads {failures}, each retried to convergence; "
          f"cache {used} bytes of a {BUDGET} budget, every blob verified")  # fmt: skip
