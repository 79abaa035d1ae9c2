"""Real ROS 2 nodes for the tests (rclpy from the `ros` extra's wheels): a talker whose
behaviour the test picks, a listener, and a lifecycle node; each test gets its own ROS
domain so parallel runs on one machine do not see each other's graphs."""

from __future__ import annotations

import importlib.util
import os
import random
from pathlib import Path

from muto.domain.release import HealthModel, Launch, NodeLaunch, StackRelease
from muto.sim.ros_story import LISTENER, TALKER
from tests.conftest import unavailable
from tests.support.artifact_server import ArtifactServer
from tests.support.releases import archive, stack_release
from tests.support.runtime_kit import PYTHON

MANAGED = """
import importlib, sys
importlib.import_module("ros_wheels_bootstrapper")
import rclpy
from rclpy.lifecycle import LifecycleNode

rclpy.init(args=sys.argv)
node = LifecycleNode("managed")
node.trigger_configure()
if sys.argv[1] == "activate":
    node.trigger_activate()
try:
    rclpy.spin(node)
except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
    pass
"""


def require_ros() -> None:
    if importlib.util.find_spec("rclpy") is None:
        unavailable("rclpy not installed (pip install -e '.[ros]')")


# Its own generator: pytest-randomly reseeds the global one before every test, so the
# same draw would give every test (and each xdist worker's test) the same domain.
_domains = random.Random()


def worker_domains() -> range:
    """This pytest worker's share of domains 1-100: xdist workers run side by side, so
    each draws from its own slice and two tests never share a graph."""
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    size = 100 // count
    return range(1 + worker * size, 1 + (worker + 1) * size)


def ros_env() -> dict[str, str]:
    """A private ROS domain on loopback for one test."""
    return {
        "ROS_DOMAIN_ID": str(_domains.choice(worker_domains())),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "PYTHONUNBUFFERED": "1",
    }


def node(name: str, script: str, *args: str, namespace: str = "/demo") -> NodeLaunch:
    return NodeLaunch(name=name, namespace=namespace, command=[PYTHON, script, *args])


def ros_release(
    tmp: Path,
    version: str,
    nodes: list[NodeLaunch],
    health: HealthModel,
    *,
    env: dict[str, str],
    server: ArtifactServer | None = None,
) -> StackRelease:
    """A `ros_nodes` release of the three scripts, served by `server` when given."""
    scripts = {"talker.py": TALKER, "listener.py": LISTENER, "managed.py": MANAGED}
    artifact, _ = archive(tmp, "demo", version, scripts, server=server)
    return stack_release("demo", version, [artifact], launch=Launch(nodes=nodes, env=env),
                         health=health)  # fmt: skip
