"""The ros2_launch runtime, with a stand-in `ros2` (the real CLI is not installable here):
a script on PATH that records its argv and cwd and, like `ros2 launch`, starts a node."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from muto.agent.runtime.base import RuntimeAdapter
from muto.agent.runtime.ros2_launch import Ros2LaunchRuntime
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import ArtifactType, HealthModel, Launch, StackRelease
from tests.support.releases import stack_release
from tests.support.runtime_contract import Built, RuntimeContract
from tests.support.runtime_kit import (
    PYTHON,
    artifact_for,
    cache_of,
    make_archive,
    pid_alive,
    write_script,
)

STANDIN_ROS2 = f"""#!{PYTHON}
import json, os, subprocess, sys, time
log = os.environ["ROS2_STANDIN_LOG"]
def record(entry):
    with open(log, "a") as f:
        f.write(json.dumps(entry) + "\\n")
record({{"argv": sys.argv[1:], "cwd": os.getcwd(), "pid": os.getpid()}})
if sys.argv[1:2] != ["launch"] or not os.path.isfile(sys.argv[2]):
    sys.exit("usage: ros2 launch <file>")
node = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
record({{"node": node.pid}})
open("launched", "w").close()
time.sleep(300)
"""
LAUNCHED = [PYTHON, "-c", "import os, sys; sys.exit(0 if os.path.exists('launched') else 1)"]


@pytest.fixture
def ros2_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_script(bin_dir / "ros2", STANDIN_ROS2)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(PYTHON).parent}:/usr/bin:/bin")
    log = tmp_path / "ros2.log"
    monkeypatch.setenv("ROS2_STANDIN_LOG", str(log))
    return log


def overlay_release(
    tmp_path: Path, launch_file: str | None, version: str = "1.0.0"
) -> tuple[StackRelease, dict[str, Path]]:
    archive = make_archive(
        tmp_path / f"overlay-{version}.tar.gz",
        {
            "install/setup.bash": "# overlay\n",
            "install/nav/share/nav/launch/nav.launch.py": "# a launch description\n",
        },
    )
    rel = stack_release(
        "nav",
        version,
        [artifact_for(archive, ArtifactType.ARCHIVE)],
        launch=Launch(launch_file=launch_file),
        health=HealthModel(readiness_probe=LAUNCHED, readiness_timeout_sec=20),
    )
    return rel, cache_of(archive)


def entries(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_runs_ros2_launch_in_the_overlay_and_stop_ends_every_node(
    tmp_path: Path, ros2_log: Path
) -> None:
    launch_file = "install/nav/share/nav/launch/nav.launch.py"
    rel, cache = overlay_release(tmp_path, launch_file)
    rt = Ros2LaunchRuntime(tmp_path / "runtime", poll_sec=0.05, grace_sec=2)

    async def main() -> None:
        try:
            await rt.apply(rel, cache)
            await rt.wait_ready(HealthModel(readiness_probe=LAUNCHED, readiness_timeout_sec=20))
            started, node = entries(ros2_log)
            assert started["argv"] == ["launch", launch_file]
            assert started["cwd"] == str(rt.running_directory())
            family = [int(str(started["pid"])), int(str(node["node"]))]
            assert all(pid_alive(pid) for pid in family)
            await rt.stop()
            assert not any(pid_alive(pid) for pid in family)
        finally:
            await rt.stop()

    asyncio.run(main())


@pytest.mark.parametrize("launch_file", [None, "missing.launch.py", "../../../etc/passwd"])
def test_a_launch_file_that_is_not_in_the_overlay_is_an_apply_failure(
    tmp_path: Path, ros2_log: Path, launch_file: str | None
) -> None:
    rel, cache = overlay_release(tmp_path, launch_file)
    rt = Ros2LaunchRuntime(tmp_path / "runtime")

    async def main() -> None:
        with pytest.raises(ReasonError) as failure:
            await rt.apply(rel, cache)
        assert failure.value.code == ReasonCode.APPLY_FAILED
        assert not ros2_log.exists()

    asyncio.run(main())


def test_without_the_ros2_cli_apply_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    rel, cache = overlay_release(tmp_path, "install/setup.bash")
    rt = Ros2LaunchRuntime(tmp_path / "runtime")

    async def main() -> None:
        with pytest.raises(ReasonError) as failure:
            await rt.apply(rel, cache)
        assert failure.value.code == ReasonCode.APPLY_FAILED
        assert "not on PATH" in failure.value.detail

    asyncio.run(main())


class TestRos2LaunchRuntimeContract(RuntimeContract):
    @pytest.fixture
    def runtime(self, tmp_path: Path, ros2_log: Path) -> RuntimeAdapter:
        return Ros2LaunchRuntime(tmp_path / "runtime", poll_sec=0.05, grace_sec=2)

    @pytest.fixture
    def runnable(self, tmp_path: Path) -> Callable[[str], Built]:
        launch_file = "install/nav/share/nav/launch/nav.launch.py"
        return lambda version: overlay_release(tmp_path, launch_file, version)

    @pytest.fixture
    def unpreparable(self, tmp_path: Path) -> Built:
        return overlay_release(tmp_path, "missing.launch.py", "9.0.0")  # not in the overlay
