"""The agent against the real cloud and a real Mosquitto, as processes: converge, block,
roll back, converge offline after the cloud is stopped, kill -9 mid-apply or mid-readiness
and restart with one copy of the stack (the orphan reaped), frozen by SIGSTOP (stale)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from muto.domain.release import HealthModel, Launch, StackRelease
from muto.trust import Signer
from tests.conftest import Mosquitto
from tests.support.artifact_server import ArtifactServer
from tests.support.processes import AgentProcess, CloudProcess, reported, status
from tests.support.releases import archive, stack_release
from tests.support.runtime_kit import LIVE_READY, PYTHON, pid_alive
from tests.support.waits import eventually

pytestmark = pytest.mark.mqtt

APP = """
import os, sys, time
if sys.argv[1] == "crash":
    sys.exit(1)
open("pid", "w").write(str(os.getpid()))
open("ready", "w").close()
time.sleep(300)
"""


@pytest.fixture
def fleet(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[tuple[CloudProcess, ArtifactServer]]:
    cloud = CloudProcess(tmp_path, mosquitto.url)
    with ArtifactServer() as server:
        cloud.start()
        try:
            yield cloud, server
        finally:
            cloud.stop()


def stack(tmp: Path, server: ArtifactServer, version: str, mode: str = "serve") -> StackRelease:
    served, _ = archive(tmp, "nav", version, {"app.py": APP}, server=server)
    return stack_release(
        "nav",
        version,
        [served],
        launch=Launch(command=[PYTHON, "app.py", mode]),
        health=HealthModel(readiness_probe=LIVE_READY, readiness_timeout_sec=30),
    )


def test_converge_block_roll_back_then_converge_offline(
    tmp_path: Path, fleet: tuple[CloudProcess, ArtifactServer]
) -> None:
    cloud, server = fleet
    signer = Signer.generate()
    good, bad, newer = (stack(tmp_path, server, "1.0.0"), stack(tmp_path, server, "2.0.0", "crash"),
                        stack(tmp_path, server, "3.0.0"))  # fmt: skip
    for release in (good, bad, newer):
        cloud.publish(release, signer)
    cloud.register("car-1", model="m3", region="eu")
    agent = AgentProcess(tmp_path, "car-1", cloud, cloud.token("--vehicle", "car-1"), "process")
    agent.start(trust=agent.provision(signer))
    try:
        first = cloud.desire("model=m3", good)["desiredStateRevision"]
        status(cloud, "car-1", first, "converged")

        agent.drive()
        second = cloud.desire("model=m3", bad)["desiredStateRevision"]
        seen = status(cloud, "car-1", second, "blocked")
        assert seen["lastReasonCodes"] == ["DENY_MOVING"]
        assert agent.journal().running_key == good.key

        agent.park()
        seen = status(cloud, "car-1", second, "rolled_back")
        assert seen["lastReasonCodes"] == ["CRASH_LOOP_DETECTED", "ROLLBACK_APPLIED"]
        assert agent.journal().running_key == good.key

        agent.drive()
        third = cloud.desire("model=m3", newer)["desiredStateRevision"]
        status(cloud, "car-1", third, "blocked")
        cloud.stop()  # offline from here: the vehicle decides alone
        agent.park()
        eventually(lambda: agent.journal().running_key == newer.key, "offline convergence")
        # The report is queued by the step after the one that switched: wait for it.
        eventually(lambda: len(agent.journal().outbox) >= 1, "the report queued offline")
        cloud.start()
        status(cloud, "car-1", third, "converged")
        eventually(lambda: not agent.journal().outbox, "the outbox to drain")
        assert reported(cloud, "car-1") == [
            (first, "converged"),
            (second, "blocked"),
            (second, "rolled_back"),
            (third, "blocked"),
            (third, "converged"),  # sent after the cloud came back, in order
        ]
        running = agent.data / "runtime" / "releases"
        pid = int(next(running.glob("nav@3.0.0-*/pid")).read_text())
        assert pid_alive(pid)
    finally:
        assert agent.stop() == 0
    assert not pid_alive(pid)  # SIGTERM: the agent stopped its stack before exiting
    eventually(lambda: cloud.vehicle("car-1")["presence"] == "offline", "offline presence")


def stack_pids(agent: AgentProcess) -> list[int]:
    """The live processes running the stack's app.py out of this agent's releases."""
    releases = (agent.data / "runtime" / "releases").resolve()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cwd = (entry / "cwd").resolve(strict=True)
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, RuntimeError):
            continue
        if cwd.is_relative_to(releases) and b"app.py" in argv and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("point", ["apply", "readiness"])
def test_killed_mid_step_the_agent_resumes_on_restart_with_one_copy_of_the_stack(
    tmp_path: Path, fleet: tuple[CloudProcess, ArtifactServer], point: str
) -> None:
    # The real process runtime: killed at `readiness`, the agent leaves its stack running
    # as an orphan; the restarted agent's runtime reaps it before restoring the release.
    cloud, server = fleet
    signer = Signer.generate()
    release = stack(tmp_path, server, "1.0.0")
    cloud.publish(release, signer)
    cloud.register("car-2", model="m4", region="eu")
    revision = cloud.desire("model=m4", release)["desiredStateRevision"]
    agent = AgentProcess(tmp_path, "car-2", cloud, cloud.token("--vehicle", "car-2"), "process")
    agent.start(trust=agent.provision(signer), kill_at=point)
    assert agent.wait_exit() == -9
    state = agent.journal()
    assert state.in_flight is not None and state.in_flight.step == point
    orphans = stack_pids(agent)
    assert len(orphans) == (1 if point == "readiness" else 0)  # started before the kill
    eventually(lambda: cloud.vehicle("car-2")["presence"] == "offline", "the Last Will")
    agent.start()  # no kill switch this time; the trust store is already provisioned
    running: list[int] = []
    try:
        status(cloud, "car-2", revision, "converged")
        state = agent.journal()
        assert state.interruptions == {f"1:{point}": 1} and state.running_key == release.key
        running = stack_pids(agent)
        assert len(running) == 1 and running != orphans  # one copy: the orphan is gone
    finally:
        assert agent.stop() == 0
    assert not any(pid_alive(pid) for pid in orphans + running)


def test_a_frozen_agent_is_shown_stale_and_heartbeats_make_no_events(
    tmp_path: Path, fleet: tuple[CloudProcess, ArtifactServer]
) -> None:
    """Issue #14 item 15: an agent frozen with SIGSTOP stayed `online`. With a 1 s
    heartbeat it is `stale` once silent for three (its MQTT session lives on: the broker
    fires the Last Will only after 1.5 keepalives, 45 s); SIGCONT brings it back online.
    Neither heartbeats nor staleness are events: `presenceAt` keeps the last change."""
    cloud, server = fleet
    signer = Signer.generate()
    release = stack(tmp_path, server, "1.0.0")
    cloud.publish(release, signer)
    cloud.register("car-3", model="m5", region="eu")
    revision = cloud.desire("model=m5", release, agentConfig={"heartbeatS": 1})[
        "desiredStateRevision"
    ]
    agent = AgentProcess(tmp_path, "car-3", cloud, cloud.token("--vehicle", "car-3"), "process")
    agent.start(trust=agent.provision(signer))
    assert agent.proc is not None
    pid = agent.proc.pid

    def heard() -> str | None:
        seen = cloud.vehicle("car-3")
        return seen["lastHeartbeatAt"] if seen["presence"] == "online" else None

    def events() -> list[dict[str, Any]]:
        return [e for e in cloud.audit("car-3") if e["eventType"] == "Vehicle.PresenceChanged"]

    try:
        status(cloud, "car-3", revision, "converged")
        first = eventually(heard, "a heartbeat on the 1 s interval")
        later = eventually(lambda: (h := heard()) and h > first and h, "the next heartbeat")
        before, changed_at = events(), cloud.vehicle("car-3")["presenceAt"]
        end = time.monotonic() + 3  # three more heartbeats: never stale, and no events
        while time.monotonic() < end:
            assert cloud.vehicle("car-3")["presence"] == "online"
            time.sleep(0.2)
        assert events() == before
        os.kill(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        seen = eventually(
            lambda: (v := cloud.vehicle("car-3"))["presence"] == "stale" and v, "stale", 15
        )
        became_stale = time.monotonic() - stopped
        frozen = seen["lastHeartbeatAt"]
        silent = datetime.now(UTC) - datetime.fromisoformat(frozen)
        assert silent > timedelta(seconds=3)  # not before three heartbeat intervals
        assert frozen >= later and seen["presenceAt"] == changed_at
        time.sleep(max(0.0, 6 - became_stale))  # frozen for six heartbeats in all
        seen = cloud.vehicle("car-3")
        assert (seen["presence"], seen["lastHeartbeatAt"]) == ("stale", frozen)
        assert events() == before  # staleness is judged when asked, never stored
        os.kill(pid, signal.SIGCONT)
        eventually(lambda: (h := heard()) and h > frozen, "online again after SIGCONT", 15)
        assert became_stale < 3 + 1 + 3  # 3 heartbeats + the 1 s flush + slack
        print(f"stale {became_stale:.1f} s after SIGSTOP ({silent.total_seconds():.1f} s silent)")
    finally:
        os.kill(pid, signal.SIGCONT)
        assert agent.stop() == 0
