"""Scenario 9: the disk fills up, on the vehicle and under the cloud's data dir. A real
size-limited file system (a tmpfs the test mounts; see tests/faults/disk.py) holds the
agent's data dir (SQLite journal, trust store, artifact cache) or the cloud's (SQLite
events and views), and a filler file takes its free space.

Vehicle: nearly full, a release too big for what is left is `blocked` with
INSUFFICIENT_DISK (reported); completely full, the pass fails without writing anything
(the journal refuses the write whole; the running release stays); space back, it
converges. The journal verifies throughout; the trust store file stays intact.
Cloud: full, every write is a 503 `unavailable` (nothing stored, never a 500); space
back, writes succeed; the SQLite files pass integrity_check, the views equal a rebuild,
every acknowledged write is there.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from muto.agent.agent import Agent
from muto.agent.artifacts import CachedArtifacts
from muto.agent.journal.integrity import verify
from muto.sim.services import CloudProcess, prepare_cloud
from muto.trust import TrustStore
from tests.conftest import Mosquitto
from tests.faults.cloud import views_equal_a_rebuild
from tests.faults.disk import fill, make_room, small_fs
from tests.faults.rig import real_parts_agent
from tests.faults.runs import runs
from tests.support.api_server import ApiServer, reconcile_body, unique, vehicle_body
from tests.support.artifact_server import ArtifactServer
from tests.support.operator import Operator
from tests.support.releases import blob_release
from tests.support.waits import until

pytestmark = pytest.mark.mqtt


async def delivered(agent: Agent) -> None:
    """The outbox delivered. Ten rounds in a few seconds can take the vehicle past its
    rate limit: the courier then waits out the cloud's Retry-After, as it must."""
    await until(agent.courier.drain, "the reports delivered", in_thread=False)


@pytest.mark.parametrize("count", runs(1, 10))
def test_the_vehicle_disk_fills_up(count: int, tmp_path: Path, mosquitto: Mosquitto) -> None:
    operator_token, trust, signer, release_pub = prepare_cloud(tmp_path)
    cloud = CloudProcess(tmp_path / "cloud", mosquitto.url, release_pub)
    refused = 0

    async def scenario(fs: Path) -> None:
        nonlocal refused
        await cloud.start()
        op = Operator(cloud.url, operator_token)
        token = await op.vehicle("car-df")

        async def disk_full_shown() -> bool:
            seen = await op.call("GET", "/vehicles/car-df")
            return (seen["health"], seen["healthReasonCodes"]) == (
                "degraded", ["INSUFFICIENT_DISK"])  # fmt: skip

        agent, http = real_parts_agent(fs / "agent", "car-df", cloud.url, token, trust)
        await agent.start(loop=False)
        journal, trust_file = agent.journal, fs / "agent" / "trust.json"
        artifacts = agent.parts.artifacts
        assert isinstance(artifacts, CachedArtifacts)
        cache = artifacts.cache
        with ArtifactServer() as server:
            first = blob_release(server, tmp_path, 0)
            await op.publish(first, signer)
            await op.desire("car-df", first)
            assert (await agent.reconcile()).kind == "converged"
            for n in range(1, count + 1):
                running = agent.journal.state.running_key
                release = blob_release(server, tmp_path, n)  # 300 kB
                await op.publish(release, signer)
                for entry in cache.entries():  # nothing left to evict: the pins fill it
                    if not entry.pinned:
                        cache.evict(entry.digest)
                fill(fs, leave=200_000)
                revision = await op.desire("car-df", release)
                verdict = await agent.reconcile()
                assert (verdict.kind, [str(c) for c in verdict.codes]) == (
                    "blocked", ["INSUFFICIENT_DISK"])  # fmt: skip
                await delivered(agent)
                assert await op.reported("car-df", revision) == [("blocked", ["INSUFFICIENT_DISK"])]
                fill(fs)
                await op.desire("car-df", release)  # a newer revision: something to write
                with pytest.raises(Exception, match=r"full|space"):
                    await agent.reconcile()
                refused += 1
                assert verify(journal).ok and journal.state.running_key == running
                agent.report_health(periodic=True)  # a health tick: refused, sent without it
                await asyncio.gather(*agent.flares)
                await until(disk_full_shown, "the fleet view to say the disk is full",
                            in_thread=False)  # fmt: skip
                TrustStore(trust_file)  # opens: intact
                make_room(fs)
                assert (await agent.reconcile()).kind == "converged"
                await delivered(agent)
                assert verify(journal).ok and journal.state.running_key == release.key
        await agent.stop()
        await http.aclose()
        await op.http.aclose()

    try:
        with small_fs(tmp_path / "fs", 8) as fs:
            asyncio.run(scenario(fs))
    finally:
        asyncio.run(cloud.stop())
    print(f"\nscenario 9 vehicle: {count} times blocked INSUFFICIENT_DISK nearly full, "
          f"{refused} passes refused whole when full, converged when space returned")  # fmt: skip


@pytest.mark.parametrize("count", runs(1, 10))
def test_the_cloud_disk_fills_up(count: int, tmp_path: Path) -> None:
    with small_fs(tmp_path / "fs", 16) as fs:
        server = ApiServer(fs / "data")
        secret = server.issue("operator")["operator"][0]
        server.start()
        acknowledged: list[str] = []
        refused = 0
        try:
            with server.client(secret) as http:
                for n in range(count):
                    fill(fs)
                    for _ in range(5):
                        vehicle_id = unique(f"full-{n}")
                        answer = http.post("/vehicles", json=vehicle_body(vehicle_id))
                        assert answer.status_code == 503, answer.text
                        assert answer.json()["error"]["code"] == "unavailable"
                        refused += 1
                    make_room(fs)
                    for _ in range(5):
                        vehicle_id = unique(f"room-{n}")
                        assert (
                            http.post("/vehicles", json=vehicle_body(vehicle_id)).status_code == 201
                        )
                        report = reconcile_body(vehicle_id, unique("rep"))
                        assert http.post("/reports/reconcile", json=report).status_code == 200
                        acknowledged.append(vehicle_id)
                for vehicle_id in acknowledged:
                    assert http.get(f"/vehicles/{vehicle_id}").status_code == 200
        finally:
            assert server.stop() == 0, server.tail()
        assert server.tracebacks() == []
        for db in ("events.db", "views.db"):
            with sqlite3.connect(fs / "data" / db) as connection:
                assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        views_equal_a_rebuild(server.settings)
    print(f"\nscenario 9 cloud: {refused} writes refused with 503 on a full disk over {count} "
          f"fillings; {len(acknowledged)} after, all stored; integrity ok")  # fmt: skip
