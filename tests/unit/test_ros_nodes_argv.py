"""How a ros_nodes release's node becomes an argv: its program resolved, --ros-args naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from muto.agent.runtime.ros_nodes import node_argv
from muto.domain.errors import ReasonError
from muto.domain.release import NodeLaunch, RosNode


def test_a_node_runs_with_ros_args_naming_it(tmp_path: Path) -> None:
    (tmp_path / "lib" / "demo").mkdir(parents=True)
    (tmp_path / "lib" / "demo" / "talker").write_text("#!/bin/sh\n")
    node = NodeLaunch(name="talker", namespace="/demo", command=["lib/demo/talker", "--fast"],
                      params={"rate": 5, "sim": True, "frame": "map"},
                      remap={"chatter": "/demo/chatter"})  # fmt: skip
    assert node_argv(node, tmp_path, {}) == [
        str(tmp_path / "lib" / "demo" / "talker"), "--fast",
        "--ros-args", "-r", "__node:=talker", "-r", "__ns:=/demo",
        "-p", "frame:=map", "-p", "rate:=5", "-p", "sim:=true",
        "-r", "chatter:=/demo/chatter",
    ]  # fmt: skip


@pytest.mark.parametrize("program", ["../escape", "lib/missing", "/no/such/python", "nowhere"])
def test_a_program_outside_the_release_or_missing_is_refused(tmp_path: Path, program: str) -> None:
    with pytest.raises(ReasonError, match="node x"):
        node_argv(NodeLaunch(name="x", command=[program]), tmp_path, {"PATH": str(tmp_path)})


def test_fully_qualified_node_names() -> None:
    assert RosNode(name="talker").fqn == "/talker"
    assert RosNode(name="talker", namespace="/demo/").fqn == "/demo/talker"
