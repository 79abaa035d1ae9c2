"""Real ROS 2 nodes for the tests (rclpy from the `ros` extra's wheels): a talker whose
behaviour the test picks, a listener, and a lifecycle node; each test gets its own ROS
domain so parallel runs on one machine do not see each other's graphs."""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Callable
from pathlib import Path

from muto.domain.release import ArtifactType, HealthModel, Launch, NodeLaunch, StackRelease
from tests.conftest import unavailable
from tests.integration.test_runtime_support import PYTHON, artifact_for, make_archive

TALKER = """
import importlib, sys, time
importlib.import_module("ros_wheels_bootstrapper")
import rclpy
from std_msgs.msg import String

mode = sys.argv[1]  # talk | silent | crash | quiet-after-N
rclpy.init(args=sys.argv)
if mode == "crash":  # joins the graph, then dies
    rclpy.create_node("talker")
    time.sleep(0.3)
    sys.exit(3)
node = rclpy.create_node("talker")
publisher = node.create_publisher(String, "chatter", 10)
began = time.monotonic()
count = 0

def tick():
    global count
    if mode.startswith("quiet-after-") and time.monotonic() - began > float(mode[12:]):
        return
    if mode != "silent":
        count += 1
        publisher.publish(String(data=f"hello {count}"))

node.create_timer(0.05, tick)  # 20 Hz
try:
    rclpy.spin(node)
except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
    pass
"""

LISTENER = """
import importlib, sys
importlib.import_module("ros_wheels_bootstrapper")
import rclpy
from std_msgs.msg import String

rclpy.init(args=sys.argv)
node = rclpy.create_node("listener")
heard = open("heard.log", "a")

def hear(message):
    heard.write(message.data + "\\n")
    heard.flush()

node.create_subscription(String, "chatter", hear, 10)
try:
    rclpy.spin(node)
except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
    pass
"""

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


def ros_env() -> dict[str, str]:
    """A private ROS domain on loopback for one test."""
    return {
        "ROS_DOMAIN_ID": str(random.randint(1, 100)),
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
    serve: Callable[[Path], str] | None = None,
) -> StackRelease:
    """A `ros_nodes` release of the three scripts; `serve` puts the archive on an artifact
    server and returns its URL (the ref), else the ref is the file name."""
    archive = make_archive(
        tmp / f"demo-{version}.tar.gz",
        {"talker.py": TALKER, "listener.py": LISTENER, "managed.py": MANAGED},
    )
    ref = serve(archive) if serve is not None else None
    return StackRelease(
        stack_name="demo",
        version=version,
        artifacts=[artifact_for(archive, ArtifactType.ARCHIVE, ref=ref)],
        launch=Launch(nodes=nodes, env=env),
        health_model=health,
    )
