"""Eclipse Muto stack definitions imported as ros_nodes releases: what maps, and what is
refused by name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from muto.domain.muto_stack import UnsupportedStack, release_from_muto_stack
from muto.domain.release import Artifact, ArtifactType, NodeLaunch, RosNode
from muto.trust import Signer
from muto.trust.keys import write_key_pair

ARCHIVE = Artifact(type=ArtifactType.ARCHIVE, ref="tl.tar.gz", digest="sha256:" + "ab" * 32,
                   size=10)  # fmt: skip
STACK: dict[str, Any] = {
    "metadata": {"name": "Talker Listener", "content_type": "stack/json"},
    "launch": {
        "node": [
            {"name": "talker", "pkg": "demo_nodes_cpp", "exec": "talker", "namespace": "demo",
             "param": [{"name": "rate", "value": 5}, {"name": "sim", "value": False}],
             "remap": [{"from": "chatter", "to": "/demo/chatter"}]},
            {"name": "listener", "pkg": "demo_nodes_cpp", "exec": "listener", "args": "-v 2"},
        ],
    },
}  # fmt: skip


def convert(stack: Any) -> Any:
    return release_from_muto_stack(stack, stack_name="tl", version="1.0.0", archive=ARCHIVE,
                                   prefix="install/")  # fmt: skip


def test_nodes_map_to_ros_nodes_and_readiness_waits_for_each() -> None:
    release = convert(STACK)
    assert release.launch.nodes == [
        NodeLaunch(name="talker", namespace="/demo", command=["install/lib/demo_nodes_cpp/talker"],
                   params={"rate": 5, "sim": False}, remap={"chatter": "/demo/chatter"}),
        NodeLaunch(name="listener", command=["install/lib/demo_nodes_cpp/listener", "-v", "2"]),
    ]  # fmt: skip
    assert release.health_model.ros is not None
    assert release.health_model.ros.nodes == [
        RosNode(name="talker", namespace="/demo"),
        RosNode(name="listener", namespace="/"),
    ]
    legacy = {"name": "tl", "context": "office", "stackId": "org:tl",
              "node": STACK["launch"]["node"], "composable": []}  # fmt: skip
    assert convert(legacy).launch == release.launch  # the older top-level form; empty parts


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"launch": {**STACK["launch"], "composable": [{"name": "c"}]}}, "composable"),
        ({"launch_description_source": "x.launch.py", "on_start": "a", "on_kill": "b"},
         "launch_description_source, on_kill, on_start"),
        ({"launch": {"node": [{**STACK["launch"]["node"][1], "respawn": True}]}}, "respawn"),
        ({"launch": {"node": [{**STACK["launch"]["node"][1],
                               "param": [{"name": "f", "from": "p.yaml"}]}]}}, "from"),
        ({"launch": {"node": [{**STACK["launch"]["node"][1],
                               "param": [{"name": "l", "value": [1, 2]}]}]}}, "not a scalar"),
        ({"launch": {"node": [{"name": "x", "exec": "y"}]}}, "pkg is missing"),
        ({"launch": {}}, "no nodes"),
    ],
)  # fmt: skip
def test_what_a_release_cannot_express_is_refused_by_name(change: Any, named: str) -> None:
    with pytest.raises(UnsupportedStack, match=named):
        convert({**STACK, **change})


def test_the_cli_writes_a_manifest_that_release_sign_accepts(tmp_path: Path) -> None:
    (tmp_path / "stack.json").write_text(json.dumps(STACK))
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "tl.tar.gz").write_bytes(b"overlay bytes")
    write_key_pair(Signer.generate(), tmp_path / "k.key", tmp_path / "k.pub")
    muto = [sys.executable, "-m", "muto.cli", "release"]
    done = subprocess.run(
        [*muto, "from-muto-stack", str(tmp_path / "stack.json"), "--version", "1.0.0",
         "--archive", "tl.tar.gz", "--out", str(tmp_path / "release.yaml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    signed = subprocess.run(
        [*muto, "sign", str(tmp_path / "release.yaml"), "--key", str(tmp_path / "k.key"),
         "--artifact-dir", str(dist)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    (tmp_path / "bad.json").write_text(json.dumps({**STACK, "on_start": "run.sh"}))
    refused = subprocess.run(
        [*muto, "from-muto-stack", str(tmp_path / "bad.json"), "--version", "1", "--archive",
         "a.tgz"], capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert refused.returncode == 2 and "on_start" in refused.stderr
