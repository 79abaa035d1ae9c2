"""Loopback services for the demo: an MQTT broker and the cloud, each a child process
(or, without the `mosquitto` binary, an embedded amqtt broker), on free ports."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause
from muto.cloud.settings import Settings
from muto.cloud.tokens import Role, issue_token
from muto.trust import KeySet, Signer, TrustConfig
from muto.trust.keys import write_key_pair


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


class MosquittoBroker:
    """The `mosquitto` binary with a generated config; anonymous on loopback only."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> str | None:
        found = shutil.which("mosquitto")
        return found or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        binary = self.binary()
        assert binary is not None
        config = self.workdir / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            "persistence false\nmax_queued_messages 10000\n"
        )
        log = (self.workdir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=log)
        await asyncio.to_thread(wait_for_port, self.port)

    async def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            await asyncio.to_thread(self.proc.wait, 10)


class EmbeddedBroker:
    """amqtt in this process's event loop: for machines without mosquitto (see
    docs/demo.md for why amqtt)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        from amqtt.broker import Broker

        self.broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                },
            }
        )
        await self.broker.start()

    async def stop(self) -> None:
        if self.broker is not None:
            await self.broker.shutdown()


def make_broker(workdir: Path, kind: str = "auto") -> MosquittoBroker | EmbeddedBroker:
    """`auto`: the mosquitto binary when installed, else the embedded broker."""
    if kind == "mosquitto" or (kind == "auto" and MosquittoBroker.binary()):
        if not MosquittoBroker.binary():
            raise RuntimeError("--broker mosquitto: no mosquitto binary on this machine")
        return MosquittoBroker(workdir)
    return EmbeddedBroker()


class CloudProcess:
    """`muto cloud serve` as a child process, like a real deployment."""

    def __init__(
        self,
        data_dir: Path,
        mqtt_url: str,
        release_key: Path,
        database_url: str | None = None,
    ) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.mqtt_url = mqtt_url
        self.release_key = release_key
        self.database_url = database_url  # None: SQLite files in the data dir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        log = (self.data_dir / "cloud.log").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "muto.cli",
                "cloud",
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                "--mqtt-url",
                self.mqtt_url,
                "--release-key",
                str(self.release_key),
                *(["--database-url", self.database_url] if self.database_url else []),
            ],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient() as client:
            while True:
                try:
                    if (await client.get(f"{self.url}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the cloud did not start; see {self.data_dir}/cloud.log")
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            await asyncio.to_thread(self.proc.wait, 30)


def prepare_cloud(
    data_dir: Path, database_url: str | None = None
) -> tuple[str, TrustConfig, Signer, Path]:
    """Before the cloud starts: a release key pair, the control-plane key (the cloud
    creates it on first open), an operator token, and the trust config for agents.
    Returns (operator token, trust config, release signer, release public key path)."""
    cloud_dir = data_dir / "cloud"
    keys = data_dir / "release-keys"
    keys.mkdir(parents=True, exist_ok=True)
    if not (keys / "release.key").exists():
        write_key_pair(Signer.generate(), keys / "release.key", keys / "release.pub")
    settings = Settings(
        data_dir=cloud_dir,
        database_url=database_url,
        mqtt_url=None,
        release_keys=(keys / "release.pub",),
    )
    plane = ControlPlane.open(settings)  # creates keys/control-plane.{key,pub}
    try:
        secret, command = issue_token(Role.OPERATOR, None, Cause.of("setup"))
        plane.execute(command)
    finally:
        plane.close()
    trust = TrustConfig(
        release_keys=KeySet(keys=[(keys / "release.pub").read_text()]),
        control_plane_keys=KeySet(keys=[(cloud_dir / "keys/control-plane.pub").read_text()]),
    )
    return secret, trust, Signer.load(keys / "release.key"), keys / "release.pub"
