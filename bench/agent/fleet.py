"""The fleet simulator's cost per simulated agent (a child process: `python -m bench.agent
fleet N`, its baseline `python -m bench.agent timers N`)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.agent.common import FLEET, FLEET_WINDOW_S, PYTHON, TIMER_WINDOW_S
from bench.agent.procfs import status_kb
from muto.agent.compose import simulated_agent
from muto.domain.desired import (
    AgentConfig,
    DesiredStateBundle,
    DesiredStateDocument,
    Policy,
    StackRef,
)
from muto.domain.release import (
    Artifact,
    ArtifactType,
    StackRelease,
)
from muto.domain.vehicle_state import VehicleState
from muto.domain.wire import encode
from muto.trust import (
    FleetKeys,
    Signer,
    manifest_digest,
    sign_desired_state,
    sign_release,
)


class FleetCloud:
    """The cloud's two vehicle endpoints, in process: each vehicle's own signed bundle
    (304 on its current ETag), and an acknowledgement for every report."""

    def __init__(self, count: int) -> None:
        keys = FleetKeys.generate()
        self.trust = keys.config
        self.release = StackRelease(
            stack_name="nav",
            version="1.0.0",
            artifacts=[
                Artifact(
                    type=ArtifactType.FILE,
                    ref="nav-1.0.0.bin",
                    digest="sha256:" + "4" * 64,
                    size=1 << 20,
                )
            ],
        )
        envelope = sign_release(self.release, keys.release_keys)
        self.bodies = {
            vehicle_id: self.body(vehicle_id, envelope, keys.control)
            for vehicle_id in (f"sim-{i:05d}" for i in range(count))
        }
        self.polls = 0

    def body(self, vehicle_id: str, release: Any, signer: Signer) -> tuple[str, bytes]:
        now = datetime.now(UTC)
        document = DesiredStateDocument(
            vehicle_id=vehicle_id,
            revision="dsr_00000000000000000001",
            sequence=1,
            stack=StackRef(
                name="nav", version="1.0.0", manifest_digest=manifest_digest(self.release)
            ),
            policy=Policy(),
            agent_config=AgentConfig(),
            correlation_id="bench",
            issued_at=now,
            expires_at=now + timedelta(days=30),
        )
        bundle = DesiredStateBundle(
            desired_state=sign_desired_state(document, signer), release=release
        )
        meta = b'"metadata":{"revision":"dsr_00000000000000000001","sequence":1}'
        return f'"{vehicle_id}-1"', b'{"data":' + encode(bundle) + b"," + meta + b"}"

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.method != "GET":
            return httpx.Response(202, json={"data": {}})
        self.polls += 1
        etag, body = self.bodies[request.url.params["vehicleId"]]
        if request.headers.get("if-none-match") == etag:
            return httpx.Response(304, headers={"ETag": etag})
        return httpx.Response(200, content=body, headers={"ETag": etag})


async def loop_lag(stop: asyncio.Event, lags: list[float], every: float = 0.05) -> None:
    """How late the event loop wakes a sleeper (seconds past `every`)."""
    while not stop.is_set():
        began = time.monotonic()
        await asyncio.sleep(every)
        lags.append(time.monotonic() - began - every)


def run_queue_ns() -> int:
    """Nanoseconds this process's threads have waited on a run queue (for a CPU)."""
    tasks = Path("/proc/self/task").iterdir()
    return sum(int((task / "schedstat").read_text().split()[1]) for task in tasks)


async def steady(window_s: float) -> dict[str, float]:
    """CPU share of one core this process used over `window_s`, the share of the window
    it waited for a CPU (other processes had it), and the event-loop lag."""
    stop, lags = asyncio.Event(), []
    sampler = asyncio.create_task(loop_lag(stop, lags))
    cpu, waited, began = time.process_time(), run_queue_ns(), time.monotonic()
    await asyncio.sleep(window_s)
    wall = time.monotonic() - began
    share = (time.process_time() - cpu) / wall
    waiting = (run_queue_ns() - waited) / 1e9 / wall
    stop.set()
    await sampler
    p99 = statistics.quantiles(lags, n=100, method="inclusive")[98]
    return {
        "cpu": share,
        "waiting": waiting,
        "lag_p99_ms": p99 * 1000,
        "lag_max_ms": max(lags) * 1000,
        "lag_samples": len(lags),
    }


def all_converged(agents: list[Any], key: str) -> bool:
    for agent in agents:
        state = agent.journal.state
        if state.running_key != key or state.outbox or state.last_health is None:
            return False
    return True


async def run_fleet(count: int) -> dict[str, float]:
    """`count` simulated agents started back to back (as SimFleet.start does), each
    converged and reported, then FLEET_WINDOW_S of steady state."""
    cloud = FleetCloud(count)
    http = httpx.AsyncClient(transport=httpx.MockTransport(cloud.handle))
    gc.collect()
    before = status_kb(os.getpid(), "VmRSS")
    began, cpu = time.monotonic(), time.process_time()
    agents = [
        simulated_agent(vehicle_id, cloud.trust, cloud_url="http://cloud.invalid", http=http,
                        token=vehicle_id, vehicle=VehicleState(free_disk_mb=1e6), poll_s=30)
        for vehicle_id in cloud.bodies
    ]  # fmt: skip
    for agent in agents:
        await agent.start()
    while not all_converged(agents, cloud.release.key):
        await asyncio.sleep(0.5)
    startup = {"startup_s": time.monotonic() - began, "startup_cpu_s": time.process_time() - cpu}
    gc.collect()
    after = status_kb(os.getpid(), "VmRSS")
    polls = cloud.polls
    figures = await steady(FLEET_WINDOW_S)
    return {
        "agents": count,
        "before_mb": before / 1024,
        "after_mb": after / 1024,
        "per_agent_kb": (after - before) / count,
        "polls": cloud.polls - polls,
        **startup,
        **figures,
    }


async def run_timers(count: int) -> dict[str, float]:
    """Baseline: `count` tasks started together that only wake every 5 s (the agent's
    drift timer, in step as in agents started back to back)."""

    async def timer() -> None:
        while True:
            await asyncio.sleep(5)

    tasks = [asyncio.create_task(timer()) for _ in range(count)]
    await asyncio.sleep(0.5)
    figures = await steady(TIMER_WINDOW_S)
    del tasks
    return figures


def child(kind: str) -> subprocess.Popen[bytes]:
    """`python -m bench.agent fleet|timers N` in a fresh interpreter (its RSS is its own)."""
    argv = [PYTHON, "-m", "bench.agent", kind, str(FLEET)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE)


def child_result(proc: subprocess.Popen[bytes]) -> dict[str, float]:
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{proc.args} exited {proc.returncode}")
    found: dict[str, float] = json.loads(out.decode().splitlines()[-1])
    return found
