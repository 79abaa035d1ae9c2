"""Loopback services for the demo: an MQTT broker and the cloud, each a child process
(or, without the `mosquitto` binary, an embedded amqtt broker), on free ports."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause
from muto.cloud.settings import Settings
from muto.cloud.tokens import Role, issue_token
from muto.trust import KeySet, Signer, TrustConfig
from muto.trust.keys import load_or_create_key_pair


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
        # The queue bound of deploy/mosquitto/mosquitto.conf: the cloud's one session
        # takes every vehicle's snapshots after a wave (10,000 vehicles overflowed 10,000,
        # and the broker dropped them).
        config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            "persistence false\nmax_queued_messages 100000\n"
        )
        with (self.workdir / "mosquitto.log").open("ab") as log:  # the child keeps its copy
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


@dataclass(frozen=True)
class Logged:
    """One request as haproxy logged it."""

    at: float  # unix time the request was received
    status: int
    method: str
    path: str
    server: str


class Haproxy:
    """haproxy (Debian's package) in front of `--role api` processes, for the tests and
    benchmarks of the production topology: a generated config on a free port, health
    checks on /readyz, and a request that found its server dead (connection refused, or
    closed without an answer) tried again on another one. Logs one line per request
    (`Logged`) to its stdout, kept in `log`."""

    # Each caller's requests to one API process while it is up (consistent hashing on
    # the bearer token: a vehicle's own), so that a vehicle's reports do not land on
    # several processes, each then behind the others' writes (docs/deploy.md).
    BY_CALLER = "hdr(Authorization)"

    def __init__(self, workdir: Path, servers: dict[str, int], balance: str = "roundrobin") -> None:
        """`servers`: name -> port of each API process on 127.0.0.1; `balance`: haproxy's
        balance algorithm (round robin, or BY_CALLER)."""
        binary = self.find()
        if binary is None:
            raise RuntimeError("haproxy not found (apt-get install haproxy)")
        self.binary = binary
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "haproxy.cfg"
        self.log = workdir / "haproxy.log"
        backends = "\n".join(
            f"    server {name} 127.0.0.1:{port} check" for name, port in servers.items()
        )
        self.config.write_text(
            "global\n"
            "    log stdout format raw local0 info\n"
            "    maxconn 4000\n"
            "defaults\n"
            "    mode http\n"
            "    log global\n"
            '    log-format "%Ts.%ms %ST %HM %HP %s"\n'
            "    timeout connect 2s\n"
            "    timeout client 120s\n"
            "    timeout server 120s\n"
            "    retries 3\n"
            "    option redispatch 1\n"
            # A request whose server died before answering goes to another one only if
            # it reads (GET, HEAD): a write may have committed there, and haproxy cannot
            # tell whether it carries what makes a second one harmless. Clients resend
            # their own writes instead: reports by reportId, registrations by id, and
            # assignments, tokens and rollouts under their Idempotency-Key (the API
            # answers a resend as the first, writing nothing; docs/api.md). A
            # connection that failed sent nothing, so any request retries that.
            "    retry-on conn-failure empty-response\n"
            "frontend api\n"
            f"    bind 127.0.0.1:{self.port}\n"
            "    default_backend apis\n"
            "backend apis\n"
            "    http-request disable-l7-retry if !METH_GET\n"
            f"    balance {balance}\n"
            # A hashing balance moves only the callers of a server that goes or comes.
            "    hash-type consistent\n"
            "    option httpchk GET /readyz\n"
            "    http-check expect status 200\n"
            # A saturated API process answers its probe late: give it 5 s and three
            # misses, or a busy replica is taken out and its load sinks the others.
            "    timeout check 5s\n"
            "    default-server inter 1s fall 3 rise 2\n"
            f"{backends}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def find() -> str | None:
        found = shutil.which("haproxy")
        return found or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)

    def start(self) -> None:
        check = subprocess.run(
            [self.binary, "-c", "-f", str(self.config)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refused its config: {check.stdout}{check.stderr}")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-db", "-f", str(self.config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"haproxy did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        self.proc = None

    def requests(self) -> list[Logged]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 5 and parts[1].isdigit():
                found.append(Logged(float(parts[0]), int(parts[1]), parts[2], parts[3], parts[4]))
        return found


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
        argv = [
            *(sys.executable, "-m", "muto.cli", "cloud", "serve"),
            *("--data-dir", str(self.data_dir), "--port", str(self.port)),
            *("--mqtt-url", self.mqtt_url, "--release-key", str(self.release_key)),
            *(["--database-url", self.database_url] if self.database_url else []),
        ]
        with (self.data_dir / "cloud.log").open("ab") as log:  # the child keeps its copy
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log)
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
    signer = load_or_create_key_pair(keys / "release.key", keys / "release.pub")
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
    return secret, trust, signer, keys / "release.pub"
