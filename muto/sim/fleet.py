"""A simulated fleet in one process: N real agents on one event loop, sharing a few
kept-alive HTTP connections (muto/sim/link.py), each with its own simulated vehicle
state, clock and switchable cloud link."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import httpx

from muto.agent.agent import Agent
from muto.agent.clock import SystemClock
from muto.agent.compose import simulated_agent
from muto.agent.journal import Journal
from muto.agent.safety import SimulatedStateProvider
from muto.agent.transport.http import CloudClient
from muto.domain.vehicle_state import VehicleState
from muto.sim.link import FleetLink, SimCloud
from muto.sim.profile import SimProfile
from muto.trust import TrustConfig

logger = logging.getLogger("muto.sim")
PROVISIONING = 32  # concurrent provisioning requests
# Thousands of MQTT links share one event loop here, so a broker's answer can wait behind
# the loop's queue for seconds while a wave is applied (a simulator's delay, not the
# network's). With the agent's 10 s round-trip timeout, 10,000 links on 2 cores timed
# out in waves, disconnected and reconnected in storms that fed themselves (about 3,000
# disconnections per minute). Simulated links wait longer and ping less often.
LINK_TIMEOUT_S = 60.0
LINK_KEEPALIVE_S = 60


class ShiftedClock(SystemClock):
    """A vehicle's wall clock, shifted (the demo moves a vehicle into its apply window
    by shifting its clock); the monotonic clock is untouched."""

    def __init__(self) -> None:
        self.shift = timedelta()

    def now(self) -> datetime:
        return super().now() + self.shift


@dataclass
class SimVehicle:
    vehicle_id: str
    region: str
    model: str
    timezone: str = "UTC"
    token: str = ""
    # Its own broker login (a broker with per-vehicle users and ACL); default: the fleet's.
    mqtt_url: str | None = None
    clock: ShiftedClock = field(default_factory=ShiftedClock)
    agent: Agent | None = None

    @property
    def state(self) -> SimulatedStateProvider:
        assert self.agent is not None
        provider = self.agent.parts.vehicle
        assert isinstance(provider, SimulatedStateProvider)
        return provider


class SimFleet:
    def __init__(
        self,
        cloud_url: str,
        trust: TrustConfig,
        profile: SimProfile,
        *,
        mqtt_url: str | None = None,
        operator_token: str | None = None,
    ) -> None:
        self.cloud_url = cloud_url.rstrip("/")
        self.trust = trust
        self.profile = profile
        self.mqtt_url = mqtt_url
        self.operator_token = operator_token
        self.link = FleetLink()  # the agents' exchanges
        self.http = httpx.AsyncClient(timeout=30.0)  # the operator's, provisioning only
        self.vehicles: dict[str, SimVehicle] = {}

    # -- provisioning (operator side, over the API) ---------------------------------

    async def provision(self, vehicles: Iterable[SimVehicle]) -> None:
        """Register each vehicle and issue its token, `PROVISIONING` at a time."""
        assert self.operator_token, "provisioning needs an operator token"
        headers = {"Authorization": f"Bearer {self.operator_token}"}
        gate = asyncio.Semaphore(PROVISIONING)

        async def post(
            path: str, body: dict[str, object] | None, key: str | None = None
        ) -> httpx.Response:
            # A kept-alive connection the server just closed fails once: retry
            # transport errors, with the same Idempotency-Key (re-registering is
            # idempotent by itself; a token request's key makes a resend issue nothing).
            sent = {**headers, "Idempotency-Key": key} if key else headers
            for attempt in range(5):
                try:
                    r = await self.http.post(f"{self.cloud_url}{path}", headers=sent, json=body)
                    if not (key and r.status_code == 409):
                        r.raise_for_status()
                    return r
                except httpx.TransportError:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.2 * 2**attempt)
            raise AssertionError("unreachable")

        async def token(v: SimVehicle) -> str:
            """A vehicle token. A resend whose first request was stored is answered 409
            naming the token it issued, whose secret no answer brought back (the API
            never shows it twice): that token is revoked, and one asked for again under
            a new key, so no valid token nobody holds is left behind."""
            body: dict[str, object] = {"role": "vehicle", "vehicleId": v.vehicle_id}
            for _ in range(5):
                r = await post("/tokens", body, key=str(uuid.uuid4()))
                if r.status_code != 409:
                    return str(r.json()["data"]["token"])
                lost = str(r.json()["error"]["details"]["tokenId"])
                await post(f"/tokens/{lost}/revoke", None)
            raise RuntimeError(f"no token for {v.vehicle_id}: every answer was lost")

        async def one(v: SimVehicle) -> None:
            async with gate:
                await post(
                    "/vehicles",
                    {
                        "vehicleId": v.vehicle_id,
                        "labels": {**self.profile.labels, "model": v.model, "region": v.region},
                        "attributes": {"os": self.profile.os, "rosDistro": self.profile.ros_distro},
                    },
                )
                v.token = await token(v)
                self.add(v)

        await asyncio.gather(*(one(v) for v in vehicles))

    def add(self, vehicle: SimVehicle) -> None:
        self.vehicles[vehicle.vehicle_id] = vehicle
        self.link.register(vehicle.vehicle_id, vehicle.token)

    # -- running ----------------------------------------------------------------------

    async def start(self, stagger_s: float = 0.0, journal_root: Path | None = None) -> None:
        """Start every agent. With `journal_root`, each keeps its journal in an SQLite
        file under it (inspectable with `muto agent journal`); otherwise in memory."""
        behaviours = self.profile.behaviours()
        for v in self.vehicles.values():
            journal = Journal.open(journal_root / v.vehicle_id) if journal_root else None
            v.agent = simulated_agent(
                v.vehicle_id,
                self.trust,
                cloud=SimCloud(
                    CloudClient(self.cloud_url, v.vehicle_id, v.token, client=self.link),
                    self.link,
                    v.vehicle_id,
                ),
                mqtt_url=v.mqtt_url or self.mqtt_url,
                vehicle=VehicleState(
                    model=v.model,
                    os=self.profile.os,
                    ros_distro=self.profile.ros_distro,
                    timezone=v.timezone,
                    free_disk_mb=1e6,
                ),
                behaviours=behaviours,
                clock=v.clock,
                journal=journal,
                poll_s=self.profile.poll_s,
                health_every_s=self.profile.health_every_s,
                reports_via=self.profile.reports_via,
                mqtt_keepalive_s=LINK_KEEPALIVE_S,
                mqtt_timeout_s=LINK_TIMEOUT_S,
            )
            await v.agent.start()
            if stagger_s:
                await asyncio.sleep(stagger_s)

    async def connected(self, timeout_s: float = 600.0) -> int:
        """Wait until every agent's MQTT link is up (or the timeout); returns how many
        are. Without MQTT, every agent counts as connected."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            up = sum(
                1
                for v in self.vehicles.values()
                if v.agent is None or v.agent.mqtt is None or v.agent.mqtt.connected
            )
            if up == len(self.vehicles) or asyncio.get_running_loop().time() > deadline:
                return up
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        await asyncio.gather(
            *(v.agent.stop() for v in self.vehicles.values() if v.agent), return_exceptions=True
        )
        await self.http.aclose()
        await self.link.aclose()

    # -- what a scenario changes --------------------------------------------------------

    def cut(self, vehicle_ids: Iterable[str]) -> None:
        self.link.cut.update(vehicle_ids)

    def restore(self, vehicle_ids: Iterable[str]) -> None:
        self.link.cut.difference_update(vehicle_ids)
        for vehicle_id in vehicle_ids:
            self.nudge(vehicle_id)

    def nudge(self, vehicle_id: str) -> None:
        agent = self.vehicles[vehicle_id].agent
        if agent is not None:
            agent.trigger("simulator")

    def set_state(self, vehicle_id: str, **changes: object) -> None:
        self.vehicles[vehicle_id].state.set(**changes)
        self.nudge(vehicle_id)
