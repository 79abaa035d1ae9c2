"""An Eclipse Muto stack definition as a muto release for the `ros_nodes` runtime.

Eclipse Muto describes a stack as JSON: `launch.node` (or, in its older form, a top-level
`node`) lists nodes by `pkg`, `exec` and `name`, with `namespace`, `param`
(`[{name, value}]`), `remap` (`[{from, to}]`) and `args`. Each becomes a
`launch.nodes` entry running `<prefix>lib/<pkg>/<exec>` from the release archive (the
colcon install layout `ros2 run` uses), and readiness waits for every node in the graph.
Whatever else the stack says (composable containers, launch files, on_start/on_kill
scripts, stack-wide args) has no equivalent here: it is refused by name, never dropped.
"""

from __future__ import annotations

import shlex
from typing import Any

from muto.domain.release import (
    Artifact,
    HealthModel,
    Launch,
    NodeLaunch,
    RosGraphHealth,
    RosNode,
    StackRelease,
)
from muto.domain.wire import WireError, convert, to_builtins

STACK_KEYS = frozenset({"name", "context", "stackId", "metadata", "launch", "node"})
METADATA_KEYS = frozenset({"name", "description", "content_type"})
EMPTY: tuple[Any, ...] = (None, "", [], {})
NODE_KEYS = frozenset({"name", "pkg", "exec", "namespace", "param", "remap", "args"})


class UnsupportedStack(ValueError):
    """The stack uses something a muto release cannot express; the message names it."""


def release_from_muto_stack(
    stack: Any,
    *,
    stack_name: str,
    version: str,
    archive: Artifact,
    prefix: str = "",
    readiness_timeout_sec: float = 180,
) -> StackRelease:
    if not isinstance(stack, dict):
        raise UnsupportedStack("the stack definition is not a JSON object")
    _only(stack, STACK_KEYS, "$")
    _only(stack.get("metadata") or {}, METADATA_KEYS, "$.metadata")
    launch = stack.get("launch") or {}
    if not isinstance(launch, dict):
        raise UnsupportedStack("$.launch is not an object")
    _only(launch, frozenset({"node"}), "$.launch")
    if "node" in launch and "node" in stack:
        raise UnsupportedStack("both $.node and $.launch.node: say the nodes once")
    where, listed = ("$.launch.node", launch["node"]) if "node" in launch else ("$.node", None)
    if listed is None:
        listed = stack.get("node")
    if not isinstance(listed, list) or not listed:
        raise UnsupportedStack(f"{where}: no nodes")
    nodes = [_node(entry, f"{where}[{i}]", prefix) for i, entry in enumerate(listed)]
    release = {
        "stackName": stack_name,
        "version": version,
        "artifacts": [to_builtins(archive)],
        "launch": to_builtins(Launch(nodes=nodes)),
        "healthModel": to_builtins(
            HealthModel(
                readiness_timeout_sec=readiness_timeout_sec,
                ros=RosGraphHealth(
                    nodes=[RosNode(name=n.name, namespace=n.namespace) for n in nodes]
                ),
            )
        ),
    }
    return convert(release, StackRelease)


def _node(entry: Any, where: str, prefix: str) -> NodeLaunch:
    if not isinstance(entry, dict):
        raise UnsupportedStack(f"{where} is not an object")
    _only(entry, NODE_KEYS, where)
    for key in ("name", "pkg", "exec"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise UnsupportedStack(f"{where}.{key} is missing")
    args = entry.get("args") or []
    if isinstance(args, str):
        args = shlex.split(args)
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise UnsupportedStack(f"{where}.args: a string or a list of strings")
    namespace = entry.get("namespace") or "/"
    params: dict[str, str | int | float | bool] = {}
    for i, param in enumerate(entry.get("param") or []):
        spot = f"{where}.param[{i}]"
        if not isinstance(param, dict) or set(param) != {"name", "value"}:
            keys = sorted(param) if isinstance(param, dict) else param
            raise UnsupportedStack(f"{spot}: only {{name, value}} is supported, not {keys}")
        if not isinstance(param["value"], str | int | float | bool):
            raise UnsupportedStack(f"{spot}: value of {param['name']!r} is not a scalar")
        params[str(param["name"])] = param["value"]
    remap: dict[str, str] = {}
    for i, rule in enumerate(entry.get("remap") or []):
        if not isinstance(rule, dict) or set(rule) != {"from", "to"}:
            raise UnsupportedStack(f"{where}.remap[{i}]: only {{from, to}} is supported")
        remap[str(rule["from"])] = str(rule["to"])
    try:
        return convert(
            {
                "name": entry["name"],
                "namespace": namespace if namespace.startswith("/") else f"/{namespace}",
                "command": [f"{prefix}lib/{entry['pkg']}/{entry['exec']}", *args],
                "params": params,
                "remap": remap,
            },
            NodeLaunch,
        )
    except WireError as exc:
        raise UnsupportedStack(f"{where}: {exc}") from None


def _only(part: Any, allowed: frozenset[str], where: str) -> None:
    if not isinstance(part, dict):
        raise UnsupportedStack(f"{where} is not an object")
    # An empty part (`"composable": []`) says nothing: only content is refused.
    unsupported = sorted(k for k, v in part.items() if k not in allowed and v not in EMPTY)
    if unsupported:
        raise UnsupportedStack(f"{where}: not supported by muto releases: {', '.join(unsupported)}")
