"""The release directories a process-based runtime keeps are the running one and the
agent's rollback targets (its known good, `keep_releases`): a rollback to one of them,
after a failed release or an agent restart, extracts or installs nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from muto.agent.runtime.process import ProcessRuntime
from muto.agent.runtime.python_wheel import PythonWheelRuntime
from muto.domain.release import ArtifactType, HealthModel, Launch, StackRelease
from tests.support.releases import stack_release
from tests.support.runtime_kit import (
    LIVE_READY,
    PYTHON,
    artifact_for,
    cache_of,
    make_archive,
    make_wheel,
)
from tests.support.waits import until

READY = HealthModel(readiness_probe=LIVE_READY, readiness_timeout_sec=30)
SERVE = "import os, time\nopen('pid', 'w').write(str(os.getpid()))\nopen('ready', 'w').close()\n"
SERVE += "time.sleep(300)\n"

Built = tuple[StackRelease, dict[str, Path]]


def archived(tmp_path: Path, version: str) -> Built:
    archive = make_archive(tmp_path / f"nav-{version}.tar.gz", {"serve.py": SERVE})
    release = stack_release(
        "nav",
        version,
        [artifact_for(archive, ArtifactType.ARCHIVE)],
        launch=Launch(command=[PYTHON, "serve.py"]),
        health=READY,
    )
    return release, cache_of(archive)


def kept(workdir: Path) -> set[str]:
    """The releases whose directory is kept (no key here has a dash)."""
    return {p.name.split("-", 1)[0] for p in (workdir / "releases").iterdir() if p.is_dir()}


def test_the_rollback_after_a_failed_release_keeps_the_known_good_before_it(
    tmp_path: Path,
) -> None:
    """A0 and A ran well, B failed and was rolled back to A: B's directory goes, A0's
    stays, and a further rollback to A0 extracts nothing (its file is the same inode)."""
    rt = ProcessRuntime(tmp_path / "runtime", poll_sec=0.02, grace_sec=2)
    a0, a, b = (archived(tmp_path, v) for v in ("1.0.0", "2.0.0", "3.0.0"))

    async def main() -> None:
        try:
            await rt.apply(*a0)
            await rt.wait_ready(READY)
            dir_a0 = rt.running_directory()
            assert dir_a0 is not None
            inode = (dir_a0 / "serve.py").stat().st_ino
            rt.keep_releases(["nav@1.0.0"])  # as the agent says after each readiness
            await rt.apply(*a)
            await rt.wait_ready(READY)
            rt.keep_releases(["nav@1.0.0", "nav@2.0.0"])
            await rt.apply(*b)  # it fails (crash loop): the agent rolls back to A
            await rt.apply(*a)
            assert kept(rt.workdir) == {"nav@1.0.0", "nav@2.0.0"}
            await rt.apply(*a0)  # A fails too: back to A0, from its kept directory
            await rt.wait_ready(READY)
            assert rt.running_directory() == dir_a0
            assert (dir_a0 / "serve.py").stat().st_ino == inode
        finally:
            await rt.stop()

    asyncio.run(main())


COMPONENT = """
import os, time
def main():
    open("component.json", "w").write('{"pid": %d}' % os.getpid())
    time.sleep(300)
"""


def wheel_release(tmp_path: Path, version: str) -> Built:
    wheels = tmp_path / f"wheels-{version}"
    wheels.mkdir()
    wheel = make_wheel(wheels, version=version, module_body=COMPONENT)
    artifact = artifact_for(wheel, ArtifactType.PYTHON_WHEEL, dist_name="lucid-agent-cpu")
    release = stack_release(
        "lucid", version, [artifact], launch=Launch(entry_points=["lucid-agent-cpu"])
    )
    return release, cache_of(wheel)


def test_after_an_agent_restart_the_rollback_target_s_venv_is_kept_and_reused(
    tmp_path: Path,
) -> None:
    """A then B ran well; the agent restarts and restores B: A's venv stays, and the
    rollback to A, when B fails, installs nothing (no python to build a venv with)."""
    workdir = tmp_path / "runtime"
    a, b = wheel_release(tmp_path, "1.0.0"), wheel_release(tmp_path, "2.0.0")
    known_good = ["lucid@1.0.0", "lucid@2.0.0"]

    def pid_of_a() -> int:
        (directory,) = (workdir / "releases").glob("lucid@1.0.0-*[!s]")  # not its .files
        pid: int = json.loads((directory / "component.json").read_text())["pid"]
        return pid

    async def before_the_restart() -> int:
        rt = PythonWheelRuntime(workdir, poll_sec=0.05, grace_sec=2)
        try:
            await rt.apply(*a)
            first: int = await until(pid_of_a, "A running", tolerate=(OSError, ValueError))
            rt.keep_releases(["lucid@1.0.0"])
            await rt.apply(*b)
            return first
        finally:
            await rt.stop()

    async def after_the_restart(first: int) -> None:
        rt = PythonWheelRuntime(workdir, poll_sec=0.05, grace_sec=2)
        rt.keep_releases(known_good)  # the agent says so before its first apply
        try:
            await rt.apply(*b)  # the restore
            assert kept(workdir) == {"lucid@1.0.0", "lucid@2.0.0"}
            rt.python = str(tmp_path / "no-python")  # a venv or pip run would fail
            await rt.apply(*a)  # B failed: the rollback
            await until(
                lambda: pid_of_a() != first, "A running again", tolerate=(OSError, ValueError)
            )
        finally:
            await rt.stop()

    asyncio.run(after_the_restart(asyncio.run(before_the_restart())))
