"""Real processes for the fault scenarios: Mosquitto, `muto cloud serve`, an artifact
server and `muto agent run` agents with the process runtime, plus what the scenarios
look at afterwards (the journal on disk, the agent's child processes).

The stack the agents run is a tiny Python app: `serve` writes `ready` and lives as long
as the agent that started it (so a kill -9 of the agent leaves no orphan behind);
`crash` exits at once, so the runtime sees a crash loop and the agent rolls back.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from muto.agent.journal import Journal, JournalState
from muto.agent.journal.integrity import verify
from muto.domain.release import HealthModel, Launch, StackRelease
from muto.trust import Signer
from tests.conftest import Mosquitto
from tests.support.artifact_server import ArtifactServer
from tests.support.processes import AgentProcess, CloudProcess
from tests.support.releases import archive, stack_release
from tests.support.runtime_kit import PYTHON

APP = """
import os, sys, time
if sys.argv[1] == "crash":
    sys.exit(1)
parent = os.getppid()
open("ready", "w").close()
while os.getppid() == parent:  # the agent that started us is gone: so are we
    time.sleep(0.1)
"""
READY = [PYTHON, "-c", "import os, sys; sys.exit(0 if os.path.exists('ready') else 1)"]
SETTLED = ("converged", "rolled_back", "failed")


@dataclass
class Fleet:
    """One broker, one cloud, one artifact server; releases with fresh versions."""

    tmp: Path
    broker: Mosquitto
    cloud: CloudProcess
    artifacts: ArtifactServer
    signer: Signer = field(default_factory=Signer.generate)
    _versions: Iterator[int] = field(default_factory=itertools.count)

    def release(self, mode: str = "serve") -> StackRelease:
        """A new signed release (new version, new archive bytes), published to the cloud."""
        version = f"1.0.{next(self._versions)}"
        files = {"app.py": APP, "version.txt": version}
        served, _ = archive(self.tmp, "nav", version, files, server=self.artifacts)
        release = stack_release(
            "nav",
            version,
            [served],
            launch=Launch(command=[PYTHON, "app.py", mode]),
            health=HealthModel(readiness_probe=READY, readiness_timeout_sec=30),
        )
        self.cloud.publish(release, self.signer)
        return release

    def desire(self, vehicle_id: str, release: StackRelease) -> str:
        """Assign `release` to one vehicle; returns the new revision."""
        found: str = self.cloud.desire(f"vehicle={vehicle_id}", release)["desiredStateRevision"]
        return found

    def agent(self, vehicle_id: str) -> Vehicle:
        """A registered vehicle and its (not yet started) agent."""
        self.cloud.register(vehicle_id, model="m3", vehicle=vehicle_id)
        token = self.cloud.token("--vehicle", vehicle_id)
        return Vehicle(self.tmp, vehicle_id, self.cloud, token, "process", self.signer)


class Vehicle(AgentProcess):
    """`muto agent run` with the process runtime, provisioned with the fleet's keys
    (the trust file is passed on every start; only the first one reads it)."""

    def __init__(self, tmp: Path, vehicle_id: str, cloud: CloudProcess, token: str,
                 runtime: str, signer: Signer) -> None:  # fmt: skip
        super().__init__(tmp, vehicle_id, cloud, token, runtime)
        self.trust_file = self.provision(signer)

    def run(self, kill_at: str | None = None) -> None:
        self.start(trust=self.trust_file, kill_at=kill_at)

    def kill(self) -> int:
        """kill -9, from outside; returns the exit code (-9)."""
        assert self.proc is not None
        self.proc.kill()
        return self.wait_exit()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def journal_state(agent: AgentProcess) -> JournalState:
    with Journal.read_only(agent.data) as journal:
        return journal.state


def stored_records(agent: AgentProcess) -> list[tuple[int, bytes]]:
    with Journal.read_only(agent.data) as journal:
        return list(journal.stored())


def journal_problems(agent: AgentProcess) -> list[str]:
    """What `muto agent journal verify` would complain about (empty: it opens, the
    chain links, every snapshot equals a replay)."""
    with Journal.read_only(agent.data) as journal:
        return verify(journal).problems


def settled_on(agent: AgentProcess, revision: str) -> JournalState | None:
    """The journal once the agent has finished with `revision`: a final verdict was
    reported for it, nothing is in flight and every report was acknowledged."""
    state = journal_state(agent)
    outcome = state.reported.get(revision)
    done = (
        state.desired is not None
        and state.desired.revision == revision
        and outcome is not None
        and str(outcome.status) in SETTLED
        and state.in_flight is None
        and state.rollback_due is None
        and not state.outbox
    )
    return state if done else None


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(p) for p in task.read_text().split()]
    return found


def running_apps(pid: int) -> list[str]:
    """The release directories of the stack processes the agent `pid` runs."""
    apps = []
    for child in children(pid):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            cwd = Path(f"/proc/{child}/cwd").readlink()
        except OSError:
            continue  # gone meanwhile (a readiness probe, a crashing app)
        if b"app.py" in argv:
            apps.append(cwd.name)
    return apps


def reconcile_reports(cloud: CloudProcess, vehicle_id: str) -> list[dict[str, Any]]:
    """The reconcile reports the cloud stored for one vehicle, in log order."""
    return [
        e["data"]["report"]
        for e in cloud.audit(vehicle_id)
        if e["eventType"] == "Vehicle.ReconcileReported"
    ]
