"""A rig for fleet-scale benchmarks: broker + cloud + `muto sim fleet` on loopback,
brought to a settled state (every agent up, the event log quiet) before measuring."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from muto.domain.wire import encode
from muto.sim.demo import release
from muto.sim.operator import OperatorClient
from muto.sim.services import CloudProcess, MosquittoBroker, prepare_cloud
from muto.trust import sign_release

ROOT = Path(__file__).resolve().parents[1]


class FleetRig:
    def __init__(
        self,
        workdir: Path,
        vehicles: int,
        processes: int = 2,
        poll_s: float = 30.0,
        health_every_s: float = 300.0,
        database_url: str | None = None,  # None: the cloud's SQLite files
    ) -> None:
        self.workdir = workdir
        self.database_url = database_url
        self.vehicles = vehicles
        self.processes = processes
        self.poll_s, self.health_every_s = poll_s, health_every_s
        self.sim: subprocess.Popen[str] | None = None
        self._started = contextlib.AsyncExitStack()  # broker, cloud, operator client

    async def __aenter__(self) -> FleetRig:
        try:
            return await self._start()
        except BaseException:  # nothing started may outlive a failed start
            await self.__aexit__()
            raise

    async def _start(self) -> FleetRig:
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        token, trust, self.signer, pub = prepare_cloud(self.workdir, self.database_url)
        (self.workdir / "trust.json").write_bytes(encode(trust))
        self.broker = MosquittoBroker(self.workdir)
        self._started.push_async_callback(self.broker.stop)
        await self.broker.start()
        self.cloud = CloudProcess(
            self.workdir / "cloud", self.broker.url, pub, database_url=self.database_url
        )
        self._started.push_async_callback(self.cloud.stop)
        await self.cloud.start()
        self.operator = OperatorClient(self.cloud.url, token)
        self._started.push_async_callback(self.operator.aclose)
        for version in ("1.0.0", "1.1.0", "1.2.0"):
            await self.operator.register_release(sign_release(release(version), [self.signer]))
        profile = self.workdir / "profile.yaml"  # the demo's fleet, with these intervals
        profile.write_text(f"pollS: {self.poll_s}\nhealthEveryS: {self.health_every_s}\n")
        started = time.monotonic()
        self.sim = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "muto.cli",
                "sim",
                "fleet",
                "--cloud-url",
                self.cloud.url,
                "--operator-token",
                token,
                "--trust",
                str(self.workdir / "trust.json"),
                "--mqtt-url",
                self.broker.url,
                "--vehicles",
                str(self.vehicles),
                "--processes",
                str(self.processes),
                "--profile",
                str(profile),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: the slices go with it
        )
        ready = 0
        assert self.sim.stdout is not None
        while ready < self.processes:
            line = await asyncio.to_thread(self.sim.stdout.readline)
            if not line:
                raise RuntimeError("the simulated fleet exited during start-up")
            ready += "agents running" in line
        self.startup_s = time.monotonic() - started
        self.settle_s = await self.settle()
        return self

    def sim_cpu_s(self) -> dict[int, float]:
        """CPU seconds (user + system) so far of each process of the simulated fleet (its
        session: the launcher and its slices), by pid, from /proc (Linux)."""
        assert self.sim is not None
        sim = self.sim.pid
        return {pid: used for pid, (session, used) in _cpu_s().items() if session == sim}

    def cloud_cpu_s(self) -> float:
        """CPU seconds (user + system) so far of the cloud's process."""
        assert self.cloud.proc is not None
        return _cpu_s().get(self.cloud.proc.pid, (0, 0.0))[1]

    async def settle(self, quiet_s: float = 3.0, timeout_s: float = 300.0) -> float:
        """Wait until the event log has not moved for `quiet_s` (start-up reports,
        presence and health all absorbed)."""
        started = time.monotonic()
        last, still_since = -1, time.monotonic()
        async with httpx.AsyncClient() as client:
            while time.monotonic() - started < timeout_s:
                position = (await client.get(f"{self.cloud.url}/healthz")).json()["data"][
                    "position"
                ]
                if position != last:
                    last, still_since = position, time.monotonic()
                elif time.monotonic() - still_since >= quiet_s:
                    break
                await asyncio.sleep(0.5)
        return time.monotonic() - started

    async def __aexit__(self, *exc: object | TracebackType | None) -> None:
        if self.sim is not None:
            self.sim.terminate()  # forwarded to its slices, which stop their agents
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self.sim.wait, 300)
            # A benchmark rig: do not hang on a slow shutdown, and leave no slice behind.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.sim.pid, signal.SIGKILL)
            await asyncio.to_thread(self.sim.wait)
        await self._started.aclose()  # operator client, cloud, broker


def _cpu_s() -> dict[int, tuple[int, float]]:
    """Every process's session id and CPU seconds (user + system) so far, by pid, from
    /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[int, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rpartition(")")[2].split()
            found[int(stat.parent.name)] = (
                int(fields[3]),
                (int(fields[11]) + int(fields[12])) / tick,
            )
    return found
