"""The `ros_nodes` runtime: a release's ROS 2 nodes, each its own supervised process,
started from the extracted overlay without `ros2 launch` (for vehicles with rclpy from
wheels, or any ROS 2 install without the launch system)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from muto.agent.runtime.archive import extract_release
from muto.agent.runtime.supervised import LaunchPlan, SupervisedRuntime, release_env
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import NodeLaunch, StackRelease


class RosNodesRuntime(SupervisedRuntime):
    """Extracts the release's `archive` artifact like `process` and supervises each of
    `release.launch.nodes` as `<command> --ros-args -r __node:=<name> -r __ns:=<namespace>
    [-p k:=v] [-r from:=to]`. A node that exits is restarted with backoff; the restarts of
    all nodes count together for the crash-loop rule."""

    name: str = "ros_nodes"

    async def _prepare(self, release: StackRelease, artifacts: Mapping[str, Path]) -> LaunchPlan:
        nodes = release.launch.nodes
        if not nodes:
            raise ReasonError(ReasonCode.APPLY_FAILED, f"{release.key}: launch.nodes is empty")
        names = [node.namespace.rstrip("/") + "/" + node.name for node in nodes]
        if len(set(names)) != len(names):
            raise ReasonError(ReasonCode.APPLY_FAILED, f"{release.key}: a node name repeats")
        directory = await extract_release(release, artifacts, self.releases_dir)
        env = release_env(release, directory)
        commands = [node_argv(n, directory, env) for n in nodes]
        # Logs: workdir/logs/<stack>@<version>-<namespace.name>.log, one per node.
        return LaunchPlan(directory, commands, env, [n.strip("/").replace("/", ".") for n in names])


def node_argv(node: NodeLaunch, directory: Path, env: Mapping[str, str]) -> list[str]:
    """The node's argv: an absolute executable as is (the vehicle's python3), a relative
    path from the release directory (it must stay inside it), a bare name from PATH;
    APPLY_FAILED when it is not there."""
    program, *args = node.command
    if Path(program).is_absolute():
        if not Path(program).is_file():
            raise ReasonError(ReasonCode.APPLY_FAILED, f"node {node.name}: no {program!r}")
        found = program
    elif "/" in program:
        inside = (directory / program).resolve()
        if not inside.is_relative_to(directory.resolve()) or not inside.is_file():
            raise ReasonError(ReasonCode.APPLY_FAILED, f"node {node.name}: no {program!r}")
        found = str(inside)
    else:
        on_path = shutil.which(program, path=env.get("PATH"))
        if on_path is None:
            raise ReasonError(ReasonCode.APPLY_FAILED, f"node {node.name}: {program!r} not found")
        found = on_path
    ros_args = ["--ros-args", "-r", f"__node:={node.name}", "-r", f"__ns:={node.namespace}"]
    for key, value in sorted(node.params.items()):
        ros_args += ["-p", f"{key}:={_param(value)}"]
    for source, target in sorted(node.remap.items()):
        ros_args += ["-r", f"{source}:={target}"]
    return [found, *args, *ros_args]


def _param(value: str | int | float | bool) -> str:
    # ROS 2 parses `-p` values as YAML: booleans in lower case.
    return str(value).lower() if isinstance(value, bool) else str(value)
