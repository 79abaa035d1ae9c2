"""The python_wheel runtime's installer (venv and pip): reaped with the stack when its
agent dies mid-install, and out of reach of the agent's own pip settings. Real processes,
a real venv and a real pip; no process outlives a test."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
from pathlib import Path

import pytest

from muto.agent.runtime.procfs import ProcessEntry, read_entry, signal_process
from muto.agent.runtime.python_wheel import PythonWheelRuntime
from muto.domain.release import ArtifactType, HealthModel, Launch, StackRelease
from muto.domain.wire import encode
from tests.support import subreaper
from tests.support.releases import stack_release
from tests.support.runtime_kit import PYTHON, artifact_for, cache_of, make_wheel, write_script
from tests.support.subreaper import INIT

ROOT = Path(__file__).resolve().parents[2]

COMPONENT = """
import time
def main():
    open("component-ran", "w").close()
    time.sleep(300)
"""
PROBE = [PYTHON, "-c", "import os, sys; sys.exit(0 if os.path.exists('component-ran') else 1)"]
READY = HealthModel(readiness_probe=PROBE, readiness_timeout_sec=30)

# The agent's interpreter, except that one step (`-m venv` or `-m pip`) hangs once it has
# said who it is: an installer busy with a large wheel when its agent is killed.
HANGING_PYTHON = """#!/bin/sh
if [ "$2" = "{step}" ]; then
  echo $$ > "{started}.tmp"; mv "{started}.tmp" "{started}"; exec sleep 300
fi
exec "{python}" "$@"
"""

# An agent in miniature: apply the release and, once the installer has started, die as
# `kill -9` would kill it.
AGENT = """
import asyncio, os, signal, sys
from pathlib import Path
from muto.agent.runtime.python_wheel import PythonWheelRuntime
from muto.domain.release import StackRelease
from muto.domain.wire import decode
workdir, release_file, wheel, python, started = sys.argv[1:]
release = decode(Path(release_file).read_bytes(), StackRelease)
async def main():
    runtime = PythonWheelRuntime(Path(workdir), python=python, agent_pip=True)
    cache = {release.artifacts[0].digest: Path(wheel)}
    apply = asyncio.ensure_future(runtime.apply(release, cache))
    while not Path(started).exists():
        if apply.done():
            apply.result()
            sys.exit("the install finished: it never hung")
        await asyncio.sleep(0.02)
    os.kill(os.getpid(), signal.SIGKILL)
asyncio.run(main())
"""


def wheel_release(tmp_path: Path) -> tuple[StackRelease, Path]:
    (tmp_path / "wheels").mkdir()
    wheel = make_wheel(tmp_path / "wheels", module_body=COMPONENT)
    artifact = artifact_for(wheel, ArtifactType.PYTHON_WHEEL)
    rel = stack_release(
        "lucid", "1.0.0", [artifact], launch=Launch(entry_points=["lucid-agent-cpu"])
    )
    return rel, wheel


@pytest.mark.parametrize("step", ["venv", "pip"])
def test_an_installer_left_by_a_killed_agent_is_reaped_by_the_next_runtime(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, step: str
) -> None:
    workdir, started = tmp_path / "runtime", tmp_path / "installer-started"
    rel, wheel = wheel_release(tmp_path)
    (tmp_path / "release.json").write_bytes(encode(rel))
    python = write_script(
        tmp_path / "python", HANGING_PYTHON.format(step=step, started=started, python=PYTHON)
    )
    init = subprocess.Popen(
        [PYTHON, "-c", INIT, PYTHON, "-c", AGENT, str(workdir), str(tmp_path / "release.json"),
         str(wheel), str(python), str(started)],
        stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    orphan: ProcessEntry | None = None
    try:
        assert init.stdout is not None
        assert init.stdout.readline().strip() == b"-9"  # the agent is gone, SIGKILLed
        orphan = read_entry(int(started.read_text()))
        assert orphan is not None and orphan.alive  # its installer outlived it

        caplog.set_level(logging.WARNING, "muto.agent.runtime")
        PythonWheelRuntime(workdir, grace_sec=5)

        now = read_entry(orphan.pid)
        assert now is None or now.start != orphan.start or not now.alive
        assert init.wait(timeout=60) == 0  # its last descendant is gone, and reaped
    finally:
        subreaper.close(init)
        if orphan is not None:  # only if the test failed
            signal_process(orphan, signal.SIGKILL)
    assert "reaped lucid@1.0.0 left running by an agent that died" in caplog.text


def test_the_agents_pip_settings_do_not_reach_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("PIP_TARGET", str(elsewhere))  # the install would land here
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens
    monkeypatch.setenv("PIP_FIND_LINKS", str(elsewhere))
    monkeypatch.setenv("PYTHONPATH", str(elsewhere))
    rel, wheel = wheel_release(tmp_path)
    rt = PythonWheelRuntime(tmp_path / "runtime", poll_sec=0.05, grace_sec=2)

    async def main() -> None:
        try:
            await rt.apply(rel, cache_of(wheel))
            await rt.wait_ready(READY)
            directory = rt.running_directory()
            assert directory is not None
            assert (directory / "venv" / "bin" / "lucid-agent-cpu").is_file()
            assert list(rt.components()) == ["lucid-agent-cpu"]
        finally:
            await rt.stop()

    asyncio.run(main())
    assert list(elsewhere.iterdir()) == []
