"""A vehicle with a real ROS 2 stack, for `muto demo` when the `ros` extra is installed:
a real agent (`ros_nodes` runtime) with a talker and a listener from rclpy wheels. Release
1.0.0 converges once the graph shows both nodes and /demo/chatter at 5 Hz or more; 1.1.0's
talker never publishes, so it fails readiness and the vehicle rolls back.

The node scripts live here (the tests run the same ones).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib.util
import io
import random
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from muto.agent.compose import STATE_FILE, RunOptions, local_agent
from muto.domain.release import (
    Artifact,
    ArtifactType,
    HealthModel,
    Launch,
    NodeLaunch,
    RosGraphHealth,
    RosNode,
    RosTopic,
    StackRelease,
)
from muto.domain.vehicle_state import VehicleState
from muto.domain.wire import encode
from muto.sim.operator import OperatorClient
from muto.trust import Signer, TrustConfig, sign_release

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

STACK = "ros-demo"
VEHICLE = "ros-1"
GRAPH = RosGraphHealth(
    nodes=[RosNode(name="talker", namespace="/demo"), RosNode(name="listener", namespace="/demo")],
    topics=[RosTopic(name="/demo/chatter", min_rate_hz=5, window_sec=1)],
)


def ros_installed() -> bool:
    return importlib.util.find_spec("rclpy") is not None


def archive_bytes() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in (("talker.py", TALKER), ("listener.py", LISTENER)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def ros_release(
    version: str, mode: str, url: str, data: bytes, readiness_s: float = 20
) -> StackRelease:
    python = sys.executable
    nodes = [
        NodeLaunch(name="talker", namespace="/demo", command=[python, "talker.py", mode]),
        NodeLaunch(name="listener", namespace="/demo", command=[python, "listener.py"]),
    ]
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return StackRelease(
        stack_name=STACK,
        version=version,
        artifacts=[Artifact(type=ArtifactType.ARCHIVE, ref=url, digest=digest, size=len(data))],
        launch=Launch(nodes=nodes, env={"ROS_DOMAIN_ID": str(random.randint(101, 200)),
                                        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}),
        health_model=HealthModel(readiness_timeout_sec=readiness_s, ros=GRAPH),
    )  # fmt: skip


async def ros_vehicle_story(
    data_dir: Path,
    cloud_url: str,
    mqtt_url: str,
    operator: OperatorClient,
    signer: Signer,
    trust: TrustConfig,
    check: Callable[[bool, str], None],
    say: Callable[[str], None],
) -> None:
    if not ros_installed():
        say("  skipped: ROS 2 (rclpy) is not installed; pip install -e '.[ros]' to see it")
        return
    served = data_dir / "ros-artifacts"
    served.mkdir(parents=True, exist_ok=True)
    data = archive_bytes()
    (served / "ros-demo.tar.gz").write_bytes(data)
    handler = functools.partial(_Quiet, directory=str(served))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/ros-demo.tar.gz"
    good = ros_release("1.0.0", "talk", url, data)
    # Its talker never publishes: it waits out the whole readiness timeout, so a short one.
    silent = ros_release("1.1.0", "silent", url, data, readiness_s=8)
    for release in (good, silent):
        await operator.register_release(sign_release(release, [signer]))
    await operator.register_vehicle(VEHICLE, {"fleet": "ros"})
    trust_file = data_dir / "ros-trust.json"
    trust_file.write_bytes(encode(trust))
    options = RunOptions(vehicle_id=VEHICLE, data_dir=data_dir / "ros-vehicle", cloud_url=cloud_url,
                         mqtt_url=mqtt_url, runtime="ros_nodes", trust=trust_file,
                         token=await operator.vehicle_token(VEHICLE), poll_s=2.0)  # fmt: skip
    options.data_dir.mkdir(parents=True, exist_ok=True)  # parked, manual: the gates open
    (options.data_dir / STATE_FILE).write_bytes(encode(VehicleState()))
    agent = local_agent(options)
    await agent.start()
    try:
        say(f"  {VEHICLE}: a real agent, talker and listener from rclpy wheels (ros_nodes)")
        converged = await _reaches(operator, good, "converged")
        check(
            converged is not None,
            f"{VEHICLE} converged on {good.key}: both nodes up, /demo/chatter at 5 Hz or more",
        )
        seen = await _reaches(operator, silent, "rolled_back")
        codes = seen["lastReasonCodes"] if seen else []
        check(
            codes == ["READINESS_TIMEOUT", "ROLLBACK_APPLIED"],
            f"{silent.key}'s talker never publishes: READINESS_TIMEOUT, back on {good.key}",
        )
    finally:
        await agent.stop()
        server.shutdown()
        server.server_close()


async def _reaches(
    operator: OperatorClient, release: StackRelease, wanted: str, timeout_s: float = 90.0
) -> dict[str, Any] | None:
    stack = {"name": STACK, "version": release.version}
    assigned = await operator.assign({"target": {"selector": "fleet=ros"}, "stack": stack})
    revision = assigned["desiredStateRevision"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for vehicle in await operator.vehicles("fleet=ros"):
            if (vehicle["desiredRevision"], vehicle["lastStatus"]) == (revision, wanted):
                return vehicle
        await asyncio.sleep(0.5)
    return None


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # the story is on stdout
        pass
