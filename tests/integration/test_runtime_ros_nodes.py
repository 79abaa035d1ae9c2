"""The ros_nodes runtime and ROS-aware readiness with real rclpy nodes (talker, listener,
a lifecycle node) judged from the ROS graph by the helper process."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from muto.agent.runtime.base import RuntimeAdapter
from muto.agent.runtime.group_ledger import FILE as LEDGER_FILE
from muto.agent.runtime.group_ledger import GroupLedger
from muto.agent.runtime.procfs import PROC, process_table
from muto.agent.runtime.ros_nodes import RosNodesRuntime
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import HealthModel, NodeLaunch, RosGraphHealth, RosNode, RosTopic
from tests.support.ros import node, require_ros, ros_env, ros_release
from tests.support.runtime_contract import Built, RuntimeContract
from tests.support.runtime_kit import cache_of, pid_alive

CHATTER = RosTopic(name="/demo/chatter", min_rate_hz=5, window_sec=1)
GRAPH = RosGraphHealth(
    nodes=[RosNode(name="talker", namespace="/demo"), RosNode(name="listener", namespace="/demo")],
    topics=[CHATTER],
)


@pytest.fixture(autouse=True)
def _ros() -> None:
    require_ros()


def run(tmp_path: Path, body: Callable[[RosNodesRuntime], Awaitable[None]]) -> None:
    rt = RosNodesRuntime(tmp_path / "runtime", grace_sec=3, poll_sec=0.2)

    async def main() -> None:
        try:
            await body(rt)
        finally:
            await rt.stop()

    asyncio.run(main())


def archive(tmp_path: Path, version: str) -> dict[str, Path]:
    return cache_of(tmp_path / f"demo-{version}.tar.gz")


def helper_pids() -> list[int]:
    """This process's graph helpers (its children: another pytest worker's are not)."""
    found = []
    for pid, entry in process_table().items():
        try:
            argv = (PROC / str(pid) / "cmdline").read_bytes()
        except OSError:
            continue
        if entry.ppid == os.getpid() and b"muto.agent.runtime.ros_graph_helper" in argv:
            found.append(pid)
    return found


def test_talker_and_listener_are_ready_by_the_graph(tmp_path: Path) -> None:
    health = HealthModel(readiness_timeout_sec=60, ros=GRAPH)
    nodes = [node("talker", "talker.py", "talk"), node("listener", "listener.py")]
    rel = ros_release(tmp_path, "1.0.0", nodes, health, env=ros_env())

    async def body(rt: RosNodesRuntime) -> None:
        await rt.apply(rel, archive(tmp_path, "1.0.0"))
        await rt.wait_ready(health)
        status = rt.status()
        assert (status.alive, status.crash_looping, status.degraded) == (True, False, None)
        directory = rt.running_directory()
        assert directory is not None
        await asyncio.sleep(0.5)
        assert "hello" in (directory / "heard.log").read_text()  # the listener hears it
        before = [p for p in helper_pids() if pid_alive(p)]
        assert before  # the graph is judged in a helper process, not in this one
        assert "rclpy" not in sys.modules
        await rt.stop()
        assert not [p for p in before if pid_alive(p)]

    run(tmp_path, body)


def test_a_topic_never_published_is_a_readiness_timeout_naming_the_rate(tmp_path: Path) -> None:
    health = HealthModel(readiness_timeout_sec=6, ros=GRAPH)
    nodes = [node("talker", "talker.py", "silent"), node("listener", "listener.py")]
    rel = ros_release(tmp_path, "1.0.0", nodes, health, env=ros_env())

    async def body(rt: RosNodesRuntime) -> None:
        await rt.apply(rel, archive(tmp_path, "1.0.0"))
        with pytest.raises(ReasonError) as failure:
            await rt.wait_ready(health)
        assert failure.value.code == ReasonCode.READINESS_TIMEOUT
        assert "topic /demo/chatter: 0.0 Hz over the last 1s (needs 5 Hz)" in failure.value.detail

    run(tmp_path, body)


def test_a_missing_node_and_an_inactive_lifecycle_node_are_named(tmp_path: Path) -> None:
    graph = RosGraphHealth(
        nodes=[RosNode(name="planner", namespace="/demo")],
        lifecycle_active=[RosNode(name="managed", namespace="/demo")],
    )
    health = HealthModel(readiness_timeout_sec=8, ros=graph)
    rel = ros_release(tmp_path, "1.0.0", [node("managed", "managed.py", "configure-only")],
                      health, env=ros_env())  # fmt: skip

    async def body(rt: RosNodesRuntime) -> None:
        await rt.apply(rel, archive(tmp_path, "1.0.0"))
        with pytest.raises(ReasonError) as failure:
            await rt.wait_ready(health)
        assert failure.value.code == ReasonCode.READINESS_TIMEOUT
        detail = failure.value.detail
        assert "node /demo/planner is not up" in detail
        assert "lifecycle node /demo/managed is inactive, not active" in detail

    run(tmp_path, body)


def test_an_active_lifecycle_node_is_ready(tmp_path: Path) -> None:
    graph = RosGraphHealth(lifecycle_active=[RosNode(name="managed", namespace="/demo")])
    health = HealthModel(readiness_timeout_sec=60, ros=graph)
    rel = ros_release(tmp_path, "1.0.0", [node("managed", "managed.py", "activate")], health,
                      env=ros_env())  # fmt: skip

    async def body(rt: RosNodesRuntime) -> None:
        await rt.apply(rel, archive(tmp_path, "1.0.0"))
        await rt.wait_ready(health)

    run(tmp_path, body)


def test_a_node_that_dies_is_a_crash_loop(tmp_path: Path) -> None:
    health = HealthModel(readiness_timeout_sec=60, crash_loop_restarts=2, ros=GRAPH)
    nodes = [node("talker", "talker.py", "crash"), node("listener", "listener.py")]
    rel = ros_release(tmp_path, "1.0.0", nodes, health, env=ros_env())

    async def body(rt: RosNodesRuntime) -> None:
        await rt.apply(rel, archive(tmp_path, "1.0.0"))
        with pytest.raises(ReasonError) as failure:
            await rt.wait_ready(health)
        assert failure.value.code == ReasonCode.CRASH_LOOP_DETECTED

    run(tmp_path, body)


def test_a_topic_that_goes_silent_after_readiness_is_drift(tmp_path: Path) -> None:
    health = HealthModel(readiness_timeout_sec=60, crash_loop_restarts=1, ros=GRAPH)
    nodes = [node("talker", "talker.py", "quiet-after-6"), node("listener", "listener.py")]
    rel = ros_release(tmp_path, "1.0.0", nodes, health, env=ros_env())

    async def body(rt: RosNodesRuntime) -> None:
        await rt.apply(rel, archive(tmp_path, "1.0.0"))
        await rt.wait_ready(health)
        for _ in range(300):
            if rt.status().degraded:
                break
            await asyncio.sleep(0.1)
        status = rt.status()
        assert status.degraded is not None and "topic /demo/chatter" in status.degraded
        assert status.alive  # the processes live on: only the graph says something is wrong
        assert status.crash_looping  # one degradation against crash_loop_restarts=1

    run(tmp_path, body)


@pytest.mark.parametrize(
    ("command", "why"),
    [(["../outside.py"], "no '../outside.py'"), (["no-such-binary"], "not found")],
)
def test_node_commands_must_exist(tmp_path: Path, command: list[str], why: str) -> None:
    from muto.domain.release import NodeLaunch

    rel = ros_release(tmp_path, "1.0.0", [NodeLaunch(name="x", command=command)], HealthModel(),
                      env={})  # fmt: skip

    async def body(rt: RosNodesRuntime) -> None:
        with pytest.raises(ReasonError) as failure:
            await rt.apply(rel, archive(tmp_path, "1.0.0"))
        assert failure.value.code == ReasonCode.APPLY_FAILED and why in failure.value.detail

    run(tmp_path, body)


def test_a_graph_helper_that_cannot_start_fails_the_apply_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    health = HealthModel(ros=GRAPH)
    rel = ros_release(tmp_path, "1.0.0", [node("listener", "listener.py")], health, env=ros_env())
    rt = RosNodesRuntime(tmp_path / "runtime", ros_helper=[str(tmp_path / "no-such-helper")])

    async def main() -> None:
        with pytest.raises(ReasonError) as failure:
            await rt.apply(rel, archive(tmp_path, "1.0.0"))
        assert failure.value.code == ReasonCode.APPLY_FAILED
        assert "ROS graph helper cannot start" in failure.value.detail
        assert rt.status().release is None
        ledger = GroupLedger.read(tmp_path / "runtime" / LEDGER_FILE)
        assert ledger is not None and ledger.groups == ()  # the started node was stopped

    asyncio.run(main())


class TestRosNodesRuntimeContract(RuntimeContract):
    """Ready by the ROS graph: both nodes seen, the talker's topic at its rate."""

    @pytest.fixture
    def runtime(self, tmp_path: Path) -> RuntimeAdapter:
        return RosNodesRuntime(tmp_path / "runtime", grace_sec=3, poll_sec=0.2)

    @pytest.fixture
    def runnable(self, tmp_path: Path) -> Callable[[str], Built]:
        health = HealthModel(readiness_timeout_sec=60, ros=GRAPH)
        nodes = [node("talker", "talker.py", "talk"), node("listener", "listener.py")]
        env = ros_env()  # one domain for both versions: the second replaces the first
        return lambda version: (
            ros_release(tmp_path, version, nodes, health, env=env),
            archive(tmp_path, version),
        )

    @pytest.fixture
    def unpreparable(self, tmp_path: Path) -> Built:
        missing = NodeLaunch(name="x", command=["no-such-binary"])  # in no archive, no PATH
        rel = ros_release(tmp_path, "9.0.0", [missing], HealthModel(), env={})
        return rel, archive(tmp_path, "9.0.0")
