"""An agent with the real parts `muto agent run` composes (SQLite journal, trust store
file, artifact cache over HTTP, cloud client), in process so that a test can put a
transport between it and the cloud, shorten the cache's timeouts, drive passes one at
a time and read its state. Only the runtime and the vehicle are simulated."""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from muto.agent.agent import Agent
from muto.agent.artifacts import CachedArtifacts
from muto.agent.cache import ArtifactCache
from muto.agent.journal import Journal
from muto.agent.parts import AgentParts, AgentSettings
from muto.agent.runtime.simulated import SimulatedRuntime
from muto.agent.safety import SimulatedStateProvider
from muto.agent.transport.http import CloudClient
from muto.agent.trust import provision
from muto.domain.vehicle_state import VehicleState
from muto.domain.wire import encode
from muto.trust import TrustConfig

Respond = Callable[[httpx.Request], Awaitable[httpx.Response]]


class Between(httpx.AsyncBaseTransport):
    """What sits between the vehicle and the cloud: passes requests on, unless `tamper`
    is set; then `tamper(request, forward)` answers instead."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.tamper: Callable[[httpx.Request, Respond], Awaitable[httpx.Response]] | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.tamper is None:
            return await self.inner.handle_async_request(request)
        return await self.tamper(request, self.forward)

    async def forward(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        await response.aread()
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def real_parts_agent(
    data: Path,
    vehicle_id: str,
    cloud_url: str,
    token: str,
    trust: TrustConfig,
    *,
    between: Between | None = None,
    cache_budget: int = 1 << 30,
    read_timeout_s: float = 30,
    total_timeout_s: float = 600,
) -> tuple[Agent, httpx.AsyncClient]:
    """The agent, and its HTTP client to close after it stopped."""
    data.mkdir(parents=True, exist_ok=True)
    trust_file = data.parent / f"{data.name}-trust.json"
    trust_file.write_bytes(encode(trust))
    cache = ArtifactCache(
        data / "cache",
        cache_budget,
        read_timeout_s=read_timeout_s,
        total_timeout_s=total_timeout_s,
        free_disk=lambda: shutil.disk_usage(data).free,
    )
    http = httpx.AsyncClient(transport=between or Between(), timeout=30)
    parts = AgentParts(
        journal=Journal.open(data),
        trust=provision(data, trust_file),
        runtime=SimulatedRuntime(),
        vehicle=SimulatedStateProvider(VehicleState(free_disk_mb=1e6)),
        artifacts=CachedArtifacts(cache),
        cloud=CloudClient(cloud_url, vehicle_id, token, client=http),
        data_dir=data,
    )
    return Agent(AgentSettings(vehicle_id=vehicle_id), parts), http
