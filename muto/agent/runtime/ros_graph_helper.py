"""The ROS graph helper: a separate process that judges a release's `healthModel.ros` from
the ROS 2 graph with rclpy, so the agent process itself never loads rclpy.

    python -m muto.agent.runtime.ros_graph_helper '<RosGraphHealth as JSON>'

It prints one JSON line per judgment (`{"missing": [...]}`, empty when all is well, or
`{"error": "..."}` once and exits when rclpy cannot be loaded), and exits when its stdin
closes: the agent (its parent) is gone or no longer wants it.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
from collections import deque
from typing import Any

import msgspec

from muto.domain.release import RosGraphHealth, RosNode, RosTopic

PERIOD_SEC = 0.25  # one judgment this often
LIFECYCLE_POLL_SEC = 0.5
ACTIVE = 3  # lifecycle_msgs/msg/State.PRIMARY_STATE_ACTIVE


def main() -> int:
    spec = msgspec.json.decode(sys.argv[1], type=RosGraphHealth)  # argv: survives re-exec
    try:
        # First: it re-executes this process with the ROS libraries on the library path.
        importlib.import_module("ros_wheels_bootstrapper")
        import rclpy
    except ImportError as exc:
        _emit({"error": f"ROS 2 (rclpy) is not installed for the agent's Python: {exc}"})
        return 2
    closed = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()  # returns at EOF: the agent closed it, or died
        closed.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    rclpy.init(args=[])
    node = rclpy.create_node("muto_graph_helper", start_parameter_services=False)
    judge = _Judge(node, spec)
    try:
        while not closed.is_set():
            deadline = time.monotonic() + PERIOD_SEC
            while time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=max(deadline - time.monotonic(), 0))
            _emit({"missing": judge.missing()})
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


class _Judge:
    def __init__(self, node: Any, spec: RosGraphHealth) -> None:
        self.node, self.spec = node, spec
        self.started = time.monotonic()
        self.received: dict[str, deque[float]] = {t.name: deque() for t in spec.topics}
        self.subscribed: dict[str, float] = {}  # topic -> when its subscription began
        self.states: dict[str, int | None] = {}  # lifecycle node -> last state id seen
        self.asked: dict[str, float] = {}
        self.clients: dict[str, Any] = {}

    def missing(self) -> list[str]:
        up = {_fqn(ns, name) for name, ns in self.node.get_node_names_and_namespaces()}
        missing = [f"node {n.fqn} is not up" for n in self.spec.nodes if n.fqn not in up]
        types = dict(self.node.get_topic_names_and_types())
        for topic in self.spec.topics:
            why = self._topic(topic, types.get(topic.name, []))
            if why:
                missing.append(why)
        for managed in self.spec.lifecycle_active:
            why = self._lifecycle(managed, up)
            if why:
                missing.append(why)
        return missing

    def _topic(self, topic: RosTopic, types: list[str]) -> str | None:
        if topic.name not in self.subscribed:
            if not types:
                return f"topic {topic.name} is not published"
            message = _message_class(types[0])
            if message is None:
                return f"topic {topic.name}: message type {types[0]} is not installed here"
            from rclpy.qos import qos_profile_sensor_data  # best effort: matches any publisher

            times = self.received[topic.name]
            self.node.create_subscription(
                message, topic.name, lambda _m: times.append(time.monotonic()),
                qos_profile_sensor_data, raw=True,
            )  # fmt: skip
            self.subscribed[topic.name] = time.monotonic()
        now, times = time.monotonic(), self.received[topic.name]
        while times and times[0] < now - topic.window_sec:
            times.popleft()
        measuring = now - self.subscribed[topic.name]
        if measuring < topic.window_sec:
            if topic.min_rate_hz == 0 and times:
                return None
            return f"topic {topic.name}: measuring ({len(times)} messages so far)"
        rate = len(times) / topic.window_sec
        if not times or rate < topic.min_rate_hz:
            return (
                f"topic {topic.name}: {rate:.1f} Hz over the last {topic.window_sec:g}s"
                f" (needs {topic.min_rate_hz:g} Hz)"
            )
        return None

    def _lifecycle(self, managed: RosNode, up: set[str]) -> str | None:
        name = managed.fqn
        if name not in up:
            return f"lifecycle node {name} is not up"
        if time.monotonic() - self.asked.get(name, 0) > LIFECYCLE_POLL_SEC:
            from lifecycle_msgs.srv import GetState

            client = self.clients.get(name)
            if client is None:
                client = self.node.create_client(GetState, f"{name}/get_state")
                self.clients[name] = client
            if client.service_is_ready():
                self.asked[name] = time.monotonic()
                future = client.call_async(GetState.Request())
                future.add_done_callback(lambda f: self._state(name, f))
        state = self.states.get(name)
        if state == ACTIVE:
            return None
        seen = "unknown" if state is None else _STATE_LABELS.get(state, str(state))
        return f"lifecycle node {name} is {seen}, not active"

    def _state(self, name: str, future: Any) -> None:
        result = future.result()
        self.states[name] = None if result is None else int(result.current_state.id)


_STATE_LABELS = {0: "unknown", 1: "unconfigured", 2: "inactive", 3: "active", 4: "finalized"}


def _fqn(namespace: str, name: str) -> str:
    return f"{namespace.rstrip('/')}/{name}"


def _message_class(type_name: str) -> Any:
    """`std_msgs/msg/String` -> the class, if that message package is installed."""
    package, _, rest = type_name.partition("/")
    kind, _, name = rest.partition("/")
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError):
        return None


def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(msgspec.json.encode(payload).decode() + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
