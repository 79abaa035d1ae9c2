"""The real agent: `muto agent run --runtime process` as a child process, applying a real
tar.gz, then idle; its memory and CPU from /proc. It runs as deploy/systemd's unit starts
it: HTTP to the cloud, MQTT to the broker (notifications, reports via MQTT)."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from eventsourcing.persistence import OperationalError

from bench.agent.common import IDLE_S, PAYLOAD_MB, PYTHON, wait_for
from bench.agent.fleet import child, child_result
from bench.agent.procfs import cpu_of, cpu_share, reset_peak, status_kb, tick_share
from bench.agent.services import (
    Cloud,
    artifact_server,
    baseline_processes,
    cloud_service,
    mqtt_broker,
)
from muto.agent.journal import Journal, JournalState
from muto.agent.journal import events as ev
from muto.domain.release import (
    Artifact,
    ArtifactType,
    HealthModel,
    Launch,
    StackRelease,
)
from muto.domain.reports import ReconcileStatus
from muto.domain.vehicle_state import VehicleState
from muto.domain.wire import encode, to_builtins
from muto.trust import (
    sign_release,
)

APP = "import pathlib, time\npathlib.Path('ready').touch()\ntime.sleep(3600)\n"
PROBE = [PYTHON, "-c", "import os, sys; sys.exit(0 if os.path.exists('ready') else 1)"]


def release_archive(directory: Path, base_url: str) -> StackRelease:
    """A tar.gz with the stack's program and PAYLOAD_MB of random (incompressible) data."""
    path = directory / "nav-1.0.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("app.py", APP.encode()), ("payload.bin", os.urandom(PAYLOAD_MB << 20))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = path.read_bytes()
    return StackRelease(
        stack_name="nav",
        version="1.0.0",
        artifacts=[
            Artifact(
                type=ArtifactType.ARCHIVE,
                ref=f"{base_url}/{path.name}",
                digest="sha256:" + hashlib.sha256(blob).hexdigest(),
                size=len(blob),
            )
        ],
        launch=Launch(command=[PYTHON, "app.py"]),
        health_model=HealthModel(readiness_probe=PROBE, readiness_timeout_sec=60),
    )


@dataclass
class RealAgent:
    data: Path
    cloud: Cloud
    mqtt_url: str
    vehicle_id: str = "bench-car"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, poll_s: float, token: str | None = None) -> None:
        argv = [PYTHON, "-m", "muto.cli", "agent", "run", "--vehicle-id", self.vehicle_id,
                "--cloud-url", self.cloud.url, "--mqtt-url", self.mqtt_url,
                "--reports-via", "mqtt", "--data-dir", str(self.data),
                "--runtime", "process", "--poll-s", str(poll_s)]  # fmt: skip
        env = dict(os.environ)
        if token:  # the first start provisions the token and the trust store
            argv += ["--trust", str(self.cloud.trust_file)]
            env["MUTO_AGENT_TOKEN"] = token
        with (self.data.parent / "agent.log").open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        self.proc = None
        return code

    def state(self) -> JournalState:
        assert self.proc is not None and self.proc.poll() is None, "the agent exited"
        with Journal.read_only(self.data) as journal:
            return journal.state

    def settled(self, after: int) -> JournalState | None:
        """The state once the agent has journaled past `after`, sent its first health
        report and has nothing left in its outbox; else None."""
        try:
            state = self.state()
        except (FileNotFoundError, OperationalError):  # not created yet, or half-way
            return None
        done = state.position > after and state.last_health is not None and not state.outbox
        return state if done else None

    def restored(self, after: int) -> bool:
        """Whether the running release passed readiness again after position `after`."""
        if self.settled(after) is None:
            return False
        with Journal.read_only(self.data) as journal:
            return any(isinstance(r.event, ev.ReadinessPassed) for r in journal.records(after))


@dataclass(frozen=True)
class ApplyFigures:
    before_kb: int  # RSS at idle just before the desired state was assigned
    peak_kb: int  # VmHWM from then until converged and reported
    after_kb: int  # RSS at idle after the apply, before any restart
    seconds: float  # assignment to converged report delivered (includes the poll wait)
    apply_sec: float | None
    readiness_sec: float | None


def measure_apply(agent: RealAgent, release: StackRelease, token: str) -> ApplyFigures:
    """Poll every 2 s (the apply should not wait for a 30 s poll), let it settle idle,
    then assign the release and watch the process until it has converged."""
    agent.start(poll_s=2, token=token)
    wait_for(lambda: agent.settled(0), "the agent to settle")
    time.sleep(3)
    before = status_kb(agent.pid, "VmRSS")
    reset_peak(agent.pid)
    began = time.monotonic()
    body = {"target": {"selector": "model=m3"}, "stack": {"name": "nav", "version": "1.0.0"}}
    revision = agent.cloud.call("POST", "/desired-states", body)["desiredStateRevision"]

    def converged() -> JournalState | None:
        state = agent.settled(0)
        reported = state.reported.get(revision) if state else None
        done = reported is not None and reported.status == ReconcileStatus.CONVERGED
        return state if done and state and state.running_key == release.key else None

    state = wait_for(converged, "the agent to converge")
    seconds = time.monotonic() - began
    peak = status_kb(agent.pid, "VmHWM")
    time.sleep(5)
    after = status_kb(agent.pid, "VmRSS")
    if agent.stop() != 0:
        raise RuntimeError("the agent did not exit 0 on SIGTERM")
    last = state.last_apply
    return ApplyFigures(
        before,
        peak,
        after,
        seconds,
        last.apply_sec if last else None,
        last.readiness_sec if last else None,
    )


@dataclass(frozen=True)
class IdleFigures:
    agent_kb: int
    agent_kb_start: int  # at the start of the window (growth would be a leak)
    baselines_kb: dict[str, int]
    agent_cpu: float  # share of one core
    agent_ticks: float
    timers_cpu: float
    threads: int


def measure_idle(agent: RealAgent) -> tuple[IdleFigures, dict[str, float]]:
    """Restart with the 30 s poll: the agent restores its release from the cache, settles,
    and is watched for IDLE_S next to the baseline processes. The fleet simulator's child
    runs meanwhile (the idle agent needs next to no CPU, and CPU is measured as CPU time)."""
    with Journal.read_only(agent.data) as journal:
        position = journal.last_position()
    agent.start(poll_s=30)
    fleet = child("fleet")
    try:
        with baseline_processes() as baselines:
            wait_for(lambda: agent.restored(position), "the restarted agent to restore its stack")
            time.sleep(5)
            start_kb = status_kb(agent.pid, "VmRSS")
            a0, t0 = cpu_of(agent.pid), cpu_of(baselines["timers"])
            time.sleep(IDLE_S)
            a1, t1 = cpu_of(agent.pid), cpu_of(baselines["timers"])
            idle = IdleFigures(
                agent_kb=status_kb(agent.pid, "VmRSS"),
                agent_kb_start=start_kb,
                baselines_kb={name: status_kb(pid, "VmRSS") for name, pid in baselines.items()},
                agent_cpu=cpu_share(a0, a1),
                agent_ticks=tick_share(a0, a1),
                timers_cpu=cpu_share(t0, t1),
                threads=len(a1.threads),
            )
        if agent.stop() != 0:
            raise RuntimeError("the agent did not exit 0 on SIGTERM")
        return idle, child_result(fleet)
    finally:
        fleet.kill()


def real_agent() -> tuple[ApplyFigures, IdleFigures, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="muto-bench-agent-") as tmp:
        root = Path(tmp)
        (root / "artifacts").mkdir()
        with (
            mqtt_broker(root) as mqtt_url,
            cloud_service(root, mqtt_url) as cloud,
            artifact_server(root / "artifacts") as base_url,
        ):
            release = release_archive(root / "artifacts", base_url)
            cloud.call("POST", "/releases", to_builtins(sign_release(release, [cloud.signer])))
            cloud.call("POST", "/vehicles", {"vehicleId": "bench-car", "labels": {"model": "m3"}})
            token = cloud.call("POST", "/tokens", {"role": "vehicle", "vehicleId": "bench-car"})
            agent = RealAgent(root / "agent", cloud, mqtt_url)
            agent.data.mkdir()
            (agent.data / "vehicle-state.json").write_bytes(encode(VehicleState()))
            try:
                applied = measure_apply(agent, release, token["token"])
                idle, fleet = measure_idle(agent)
            finally:
                if agent.proc is not None:
                    agent.proc.kill()
    return applied, idle, fleet
