"""An agent process with the ros_nodes runtime and real rclpy nodes, against the real cloud:
converge when the ROS graph is as declared, roll back a release whose talker never
publishes (READINESS_TIMEOUT) and one whose talker keeps dying (CRASH_LOOP_DETECTED)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from muto.domain.release import HealthModel, RosGraphHealth, RosNode, RosTopic, StackRelease
from muto.trust import Signer
from tests.conftest import Mosquitto
from tests.support.artifact_server import ArtifactServer
from tests.support.processes import AgentProcess, CloudProcess, reported, status
from tests.support.ros import node, require_ros, ros_env, ros_release
from tests.support.waits import eventually

pytestmark = pytest.mark.mqtt

GRAPH = RosGraphHealth(
    nodes=[RosNode(name="talker", namespace="/demo"), RosNode(name="listener", namespace="/demo")],
    topics=[RosTopic(name="/demo/chatter", min_rate_hz=5, window_sec=1)],
)


@pytest.fixture
def fleet(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[tuple[CloudProcess, ArtifactServer]]:
    require_ros()
    cloud = CloudProcess(tmp_path, mosquitto.url)
    with ArtifactServer() as server:
        cloud.start()
        try:
            yield cloud, server
        finally:
            cloud.stop()


def test_converge_then_roll_back_a_silent_talker_and_a_dying_one(
    tmp_path: Path, fleet: tuple[CloudProcess, ArtifactServer]
) -> None:
    cloud, server = fleet
    env = ros_env()

    def release(version: str, mode: str, readiness_s: float = 20) -> StackRelease:
        health = HealthModel(readiness_timeout_sec=readiness_s, crash_loop_restarts=2, ros=GRAPH)
        nodes = [node("talker", "talker.py", mode), node("listener", "listener.py")]
        return ros_release(tmp_path, version, nodes, health, env=env, server=server)

    signer = Signer.generate()
    # The silent talker waits out its whole readiness timeout, whatever its length: short.
    good, silent = release("1.0.0", "talk"), release("2.0.0", "silent", readiness_s=6)
    dying = release("3.0.0", "crash")
    for each in (good, silent, dying):
        cloud.publish(each, signer)
    cloud.register("car-r", model="m6")
    agent = AgentProcess(tmp_path, "car-r", cloud, cloud.token("--vehicle", "car-r"), "ros_nodes")
    agent.start(trust=agent.provision(signer))
    try:
        first = cloud.desire("model=m6", good)["desiredStateRevision"]
        status(cloud, "car-r", first, "converged")

        second = cloud.desire("model=m6", silent)["desiredStateRevision"]
        seen = status(cloud, "car-r", second, "rolled_back")
        assert seen["lastReasonCodes"] == ["READINESS_TIMEOUT", "ROLLBACK_APPLIED"]
        assert agent.journal().running_key == good.key

        third = cloud.desire("model=m6", dying)["desiredStateRevision"]
        # (the vehicle's last status reads rolled_back already: wait for this revision's)
        eventually(lambda: (third, "rolled_back") in reported(cloud, "car-r"), "3.0.0 rolled back")
        seen = cloud.vehicle("car-r")
        assert seen["lastReasonCodes"] == ["CRASH_LOOP_DETECTED", "ROLLBACK_APPLIED"]
        assert agent.journal().running_key == good.key
        assert agent.proc is not None  # the graph was judged by a helper, not in the agent:
        maps = Path(f"/proc/{agent.proc.pid}/maps").read_text()
        assert "rclpy" not in maps and "librcl" not in maps
    finally:
        assert agent.stop() == 0


def test_a_topic_that_goes_silent_after_readiness_is_rolled_back(
    tmp_path: Path, fleet: tuple[CloudProcess, ArtifactServer]
) -> None:
    # crashLoopRestarts=1: one degradation of the graph after readiness trips the rule.
    cloud, server = fleet
    env = ros_env()

    def release(version: str, mode: str) -> StackRelease:
        health = HealthModel(readiness_timeout_sec=30, crash_loop_restarts=1, ros=GRAPH)
        nodes = [node("talker", "talker.py", mode), node("listener", "listener.py")]
        return ros_release(tmp_path, version, nodes, health, env=env, server=server)

    signer = Signer.generate()
    good, fading = release("1.0.0", "talk"), release("2.0.0", "quiet-after-12")
    for each in (good, fading):
        cloud.publish(each, signer)
    cloud.register("car-d", model="m7")
    agent = AgentProcess(tmp_path, "car-d", cloud, cloud.token("--vehicle", "car-d"), "ros_nodes")
    agent.start(trust=agent.provision(signer))
    try:
        first = cloud.desire("model=m7", good)["desiredStateRevision"]
        status(cloud, "car-d", first, "converged")
        second = cloud.desire("model=m7", fading)["desiredStateRevision"]
        status(cloud, "car-d", second, "converged")  # ready while the talker still talks
        eventually(lambda: (second, "rolled_back") in reported(cloud, "car-d"), "drift rollback")
        seen = cloud.vehicle("car-d")
        assert seen["lastReasonCodes"] == ["CRASH_LOOP_DETECTED", "ROLLBACK_APPLIED"]
        assert agent.journal().running_key == good.key
    finally:
        assert agent.stop() == 0


def test_a_topic_that_stays_silent_past_its_grace_is_rolled_back_and_shown_why(
    tmp_path: Path, fleet: tuple[CloudProcess, ArtifactServer]
) -> None:
    # crashLoopRestarts=5: one lasting degradation never trips the crash-loop rule; the
    # graph's grace (readinessTimeoutSec, 15 s) does. Meanwhile the fleet views say why.
    cloud, server = fleet
    env = ros_env()

    def release(version: str, mode: str) -> StackRelease:
        health = HealthModel(readiness_timeout_sec=15, crash_loop_restarts=5, ros=GRAPH)
        nodes = [node("talker", "talker.py", mode), node("listener", "listener.py")]
        return ros_release(tmp_path, version, nodes, health, env=env, server=server)

    signer = Signer.generate()
    good, fading = release("1.0.0", "talk"), release("2.0.0", "quiet-after-6")
    for each in (good, fading):
        cloud.publish(each, signer)
    cloud.register("car-g", model="m8")
    agent = AgentProcess(tmp_path, "car-g", cloud, cloud.token("--vehicle", "car-g"), "ros_nodes")
    agent.start(trust=agent.provision(signer))
    try:
        first = cloud.desire("model=m8", good)["desiredStateRevision"]
        status(cloud, "car-g", first, "converged")
        second = cloud.desire("model=m8", fading)["desiredStateRevision"]
        status(cloud, "car-g", second, "converged")  # ready while the talker still talks
        unhealthy = eventually(
            lambda: (seen := cloud.vehicle("car-g"))["health"] == "unhealthy" and seen,
            "unhealthy",
            timeout=30,
        )
        assert unhealthy["healthReasonCodes"] == ["ROS_GRAPH_DEGRADED"]
        listed = cloud.call("GET", "/vehicles?selector=model%3Dm8")
        assert [v["healthReasonCodes"] for v in listed] in (
            [["ROS_GRAPH_DEGRADED"]], [[]],  # [] : rolled back (healthy) in between
        )  # fmt: skip
        eventually(lambda: (second, "rolled_back") in reported(cloud, "car-g"), "grace rollback")
        seen = cloud.vehicle("car-g")
        assert seen["lastReasonCodes"] == ["ROS_GRAPH_DEGRADED", "ROLLBACK_APPLIED"]
        assert agent.journal().running_key == good.key
        eventually(lambda: cloud.vehicle("car-g")["health"] == "healthy", "healthy again")
        assert cloud.vehicle("car-g")["healthReasonCodes"] == []
    finally:
        assert agent.stop() == 0
