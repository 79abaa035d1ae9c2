"""Processes for the agent's end-to-end tests: the real cloud (`muto cloud serve`, through
tests.support.api_server) and real agents (`muto agent run`), each a child process that
the tests stop."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx

from muto.agent.journal import Journal, JournalState
from muto.domain.release import StackRelease
from muto.domain.vehicle_state import VehicleState
from muto.domain.wire import encode
from muto.trust import KeySet, Signer, TrustConfig
from muto.trust.files import atomic_write
from tests.support.api_server import MUTO, ApiServer
from tests.support.releases import signed
from tests.support.waits import WAIT_S, eventually


class CloudProcess(ApiServer):
    """The cloud with MQTT (data in `tmp/cloud`), an operator token, and the calls the
    agents' tests make."""

    def __init__(self, tmp: Path, mqtt_url: str) -> None:
        super().__init__(tmp / "cloud", mqtt_url=mqtt_url, name="cloud")
        self.data = self.data_dir
        self.operator = self.token("--operator")

    def token(self, *who: str) -> str:
        return self.cli("token", "create", *who).stdout.splitlines()[0].strip()

    @property
    def control_plane_pem(self) -> str:
        return (self.data / "keys" / "control-plane.pub").read_text()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(
            method,
            f"{self.url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.operator}"},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()["data"]

    def register(self, vehicle_id: str, **labels: str) -> None:
        self.call("POST", "/vehicles", {"vehicleId": vehicle_id, "labels": labels})

    def publish(self, release: StackRelease, signer: Signer) -> None:
        self.call("POST", "/releases", signed(release, signer).body())

    def desire(self, selector: str, release: StackRelease, **extra: Any) -> Any:
        stack = {"name": release.stack_name, "version": release.version}
        body = {"target": {"selector": selector}, "stack": stack, **extra}
        return self.call("POST", "/desired-states", body)

    def vehicle(self, vehicle_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.call("GET", f"/vehicles/{vehicle_id}")
        return found

    def audit(self, vehicle_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.call("GET", f"/audit?vehicleId={vehicle_id}&limit=5000")
        return found


class AgentProcess:
    def __init__(
        self, tmp: Path, vehicle_id: str, cloud: CloudProcess, token: str, runtime: str
    ) -> None:
        self.vehicle_id = vehicle_id
        self.data = tmp / f"agent-{vehicle_id}"
        self.data.mkdir(parents=True, exist_ok=True)
        self.cloud = cloud
        self.token = token
        self.runtime = runtime
        self.log = tmp / f"agent-{vehicle_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.park()

    def provision(self, release_signer: Signer) -> Path:
        trust = TrustConfig(
            release_keys=KeySet(keys=[release_signer.public_pem]),
            control_plane_keys=KeySet(keys=[self.cloud.control_plane_pem]),
        )
        path = self.data.parent / f"trust-{self.vehicle_id}.json"
        path.write_bytes(encode(trust))
        return path

    def set_state(self, state: VehicleState) -> None:
        atomic_write(self.data / "vehicle-state.json", encode(state))

    def park(self) -> None:
        self.set_state(VehicleState())

    def drive(self) -> None:
        self.set_state(VehicleState(speed_mps=8.0))

    def start(self, trust: Path | None = None, kill_at: str | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if k != "MUTO_AGENT_KILL_AT"}
        env["MUTO_AGENT_TOKEN"] = self.token  # never argv: `ps` shows it to everyone
        if kill_at:
            env["MUTO_AGENT_KILL_AT"] = kill_at
        args = [*MUTO, "agent", "run", "--vehicle-id", self.vehicle_id,
                "--cloud-url", self.cloud.url, "--mqtt-url", self.cloud.mqtt_url,
                "--data-dir", str(self.data), "--runtime", self.runtime,
                "--poll-s", "2"]  # fmt: skip
        if trust is not None:
            args += ["--trust", str(trust)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)

    def stop(self) -> int | None:
        """SIGTERM and wait: the agent flushes and exits 0."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # fail the test, but leave no agent behind
            proc.kill()
            proc.wait()
            raise

    def wait_exit(self) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout=WAIT_S)
        self.proc = None
        return code

    def journal(self) -> JournalState:
        with Journal.read_only(self.data) as journal:
            return journal.state


def status(cloud: CloudProcess, vehicle_id: str, revision: str, wanted: str) -> Any:
    def check() -> Any:
        seen = cloud.vehicle(vehicle_id)
        return seen if (seen["desiredRevision"], seen["lastStatus"]) == (revision, wanted) else None

    return eventually(check, f"{vehicle_id} {wanted} on {revision}")


def reported(cloud: CloudProcess, vehicle_id: str) -> list[tuple[str, str]]:
    """The reconcile reports the cloud recorded, in the order it recorded them."""
    return [
        (e["data"]["report"]["desiredStateRevision"], e["data"]["report"]["status"])
        for e in cloud.audit(vehicle_id)
        if e["eventType"] == "Vehicle.ReconcileReported"
    ]
