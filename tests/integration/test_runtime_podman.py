"""The podman runtime, with a stand-in `podman` (the real CLI is not installable here):
a script on PATH that records every call and keeps container state in files, answering
`pull`, `run`, `ps`, `inspect --format`, `exec` and `stop` the way podman does."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from muto.agent.runtime.podman import PodmanRuntime
from muto.agent.runtime.podman_leftovers import FORMAT
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact, ArtifactType, HealthModel, Launch, StackRelease
from tests.support.runtime_kit import PYTHON, release, write_script

STANDIN_PODMAN = f"""#!{PYTHON}
import json, os, subprocess, sys
state = os.environ["PODMAN_STANDIN_STATE"]
args = sys.argv[1:]
with open(os.path.join(state, "calls.jsonl"), "a") as f:
    f.write(json.dumps(args) + "\\n")
def path(name):
    return os.path.join(state, name + ".json")
def load(name):
    with open(path(name)) as f:
        return json.load(f)
def save(name, c):
    with open(path(name), "w") as f:
        json.dump(c, f)
command = args[0]
if command == "pull":
    if "unpullable" in args[1]:
        sys.exit("Error: initializing source: manifest unknown")
elif command == "run":
    name = args[args.index("--name") + 1]
    if any("unrunnable" in a for a in args):
        sys.exit("Error: crun: executable file not found in $PATH")
    if os.path.exists(path(name)) and "--replace" not in args:
        sys.exit(f"Error: the container name {{name}} is already in use")
    labels = dict(a[len("--label="):].split("=", 1) for a in args if a.startswith("--label="))
    image = [a for a in args if "@sha256:" in a][0]
    save(name, {{"image": image, "running": True, "restarts": 0, "labels": labels}})
    print("5f1c2e9a0b7d")
elif command == "ps":
    wanted = [a.removeprefix("label=").split("=", 1) for a in args if a.startswith("label=")]
    template = args[args.index("--format") + 1]
    for file in sorted(os.listdir(state)):
        if not file.endswith(".json"):
            continue
        c = load(file.removesuffix(".json"))
        labels = c.get("labels", {{}})
        if all(labels.get(k) == v for k, v in wanted) and (c["running"] or "-a" in args):
            print(template.replace("{{{{.Names}}}}", file.removesuffix(".json"))
                  .replace("{{{{.State}}}}", "running" if c["running"] else "exited")
                  .replace('{{{{index .Labels "muto.release"}}}}', labels.get("muto.release", "")))
elif command == "inspect":
    name = args[-1]
    if not os.path.exists(path(name)):
        sys.exit(f"Error: no such container {{name}}")
    c = load(name)
    template = [a for a in args if a.startswith("--format=")][0].removeprefix("--format=")
    print(template.replace("{{{{.State.Running}}}}", "true" if c["running"] else "false")
          .replace("{{{{.RestartCount}}}}", str(c["restarts"])))
elif command == "exec":
    if not os.path.exists(path(args[1])) or not load(args[1])["running"]:
        sys.exit(f"Error: container {{args[1]}} is not running")
    sys.exit(subprocess.call(args[2:]))
elif command == "stop":
    name = args[-1]
    if os.path.exists(path(name)):
        save(name, {{**load(name), "running": False}})
    elif "--ignore" not in args:
        sys.exit(f"Error: no such container {{name}}")
else:
    sys.exit(f"Error: unknown command {{command}}")
"""
DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


class Podman:
    """The stand-in's state, as the test sees it."""

    def __init__(self, state: Path) -> None:
        self.state = state

    def calls(self) -> list[list[str]]:
        log = self.state / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def commands(self) -> list[str]:
        return [call[0] for call in self.calls()]

    def container(self, name: str) -> dict[str, object]:
        return dict(json.loads((self.state / f"{name}.json").read_text()))

    def leave(self, name: str, release: str, owner: Path) -> None:
        """A running container, as an agent that died leaves it."""
        labels = {"muto.release": release, "muto.runtime": str(owner.resolve())}
        container = {"image": "x", "running": True, "restarts": 0, "labels": labels}
        (self.state / f"{name}.json").write_text(json.dumps(container))

    def set(self, name: str, **changes: object) -> None:
        (self.state / f"{name}.json").write_text(json.dumps({**self.container(name), **changes}))


@pytest.fixture
def podman(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Podman:
    bin_dir, state = tmp_path / "bin", tmp_path / "podman-state"
    bin_dir.mkdir()
    state.mkdir()
    write_script(bin_dir / "podman", STANDIN_PODMAN)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(PYTHON).parent}:/usr/bin:/bin")
    monkeypatch.setenv("PODMAN_STANDIN_STATE", str(state))
    return Podman(state)


def image_release(
    version: str = "1.0.0",
    stack: str = "nav",
    ref: str = "registry.example/nav:1",
    launch: Launch | None = None,
    health: HealthModel | None = None,
) -> StackRelease:
    image = Artifact(type=ArtifactType.OCI_IMAGE, ref=ref, digest=DIGEST, size=1)
    return release(version, [image], stack=stack, launch=launch, health=health)


def run(tmp_path: Path, body: Callable[[PodmanRuntime], Awaitable[None]]) -> None:
    rt = PodmanRuntime(tmp_path / "runtime", poll_sec=0.02, grace_sec=3)

    async def main() -> None:
        try:
            await body(rt)
        finally:
            await rt.stop()

    asyncio.run(main())


async def eventually(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never held")


def test_pulls_by_digest_then_replaces_the_stack_container(tmp_path: Path, podman: Podman) -> None:
    rel = image_release(launch=Launch(command=["ros2", "launch", "nav", "nav.launch.py"],
                                      env={"ROS_DOMAIN_ID": "7"}))  # fmt: skip

    async def body(rt: PodmanRuntime) -> None:
        await rt.apply(rel, {})
        await rt.wait_ready(HealthModel(readiness_timeout_sec=10))
        image, owner = f"registry.example/nav:1@{DIGEST}", f"muto.runtime={rt.workdir.resolve()}"
        assert podman.calls()[:3] == [
            ["ps", "-a", "--filter", f"label={owner}", "--format", FORMAT],  # leftovers
            ["pull", image],
            ["run", "-d", "--name", "muto-nav", "--replace", "--restart=always",
             "--label=muto.release=nav@1.0.0", f"--label={owner}", "--network=host",
             "--ipc=host", "--env=ROS_DOMAIN_ID=7", image, "ros2", "launch", "nav",
             "nav.launch.py"],
        ]  # fmt: skip
        assert "inspect" in podman.commands()
        status = rt.status()
        assert (status.release, status.alive, status.restart_count) == ("nav@1.0.0", True, 0)
        calls = len(podman.calls())
        await rt.apply(rel, {})  # the running release: no pull, no run
        assert "run" not in podman.commands()[calls:] and "pull" not in podman.commands()[calls:]
        await rt.stop()
        assert podman.calls()[-1] == ["stop", "--ignore", "--time", "3", "muto-nav"]
        assert rt.status().release is None

    run(tmp_path, body)


def test_restarts_seen_by_inspect_trip_the_crash_loop_rule(tmp_path: Path, podman: Podman) -> None:
    health = HealthModel(crash_loop_restarts=3, crash_loop_window_sec=60, readiness_timeout_sec=10)

    async def body(rt: PodmanRuntime) -> None:
        await rt.apply(image_release(health=health), {})
        podman.set("muto-nav", restarts=1)
        await eventually(lambda: rt.status().restart_count == 1)
        assert not rt.status().crash_looping
        podman.set("muto-nav", restarts=3, running=False)  # restarting again and again
        with pytest.raises(ReasonError) as failure:
            await rt.wait_ready(health)
        assert failure.value.code == ReasonCode.CRASH_LOOP_DETECTED
        assert rt.status().crash_looping and not rt.status().alive

    run(tmp_path, body)


def test_the_readiness_probe_runs_inside_the_container(tmp_path: Path, podman: Podman) -> None:
    flag = tmp_path / "ready-flag"
    probe = [PYTHON, "-c", f"import os, sys; sys.exit(0 if os.path.exists({str(flag)!r}) else 1)"]

    async def body(rt: PodmanRuntime) -> None:
        await rt.apply(image_release(), {})
        with pytest.raises(ReasonError) as failure:
            await rt.wait_ready(HealthModel(readiness_probe=probe, readiness_timeout_sec=0.5))
        assert failure.value.code == ReasonCode.READINESS_TIMEOUT
        flag.touch()
        await rt.wait_ready(HealthModel(readiness_probe=probe, readiness_timeout_sec=10))
        assert ["exec", "muto-nav", *probe] in podman.calls()

    run(tmp_path, body)


def test_a_stopped_container_is_not_ready(tmp_path: Path, podman: Podman) -> None:
    async def body(rt: PodmanRuntime) -> None:
        await rt.apply(image_release(), {})
        podman.set("muto-nav", running=False)
        with pytest.raises(ReasonError) as failure:
            await rt.wait_ready(HealthModel(readiness_timeout_sec=0.3))
        assert failure.value.code == ReasonCode.READINESS_TIMEOUT
        assert "not running" in failure.value.detail

    run(tmp_path, body)


def test_a_failed_pull_leaves_the_running_release_alone(tmp_path: Path, podman: Podman) -> None:
    async def body(rt: PodmanRuntime) -> None:
        await rt.apply(image_release(), {})
        before = len(podman.calls())
        with pytest.raises(ReasonError) as failure:
            await rt.apply(image_release("2.0.0", ref="registry.example/unpullable:2"), {})
        assert failure.value.code == ReasonCode.APPLY_FAILED
        assert "manifest unknown" in failure.value.detail
        after = [c for c in podman.commands()[before:] if c != "inspect"]
        assert after == ["pull"]
        assert rt.status().release == "nav@1.0.0"
        assert podman.container("muto-nav")["running"] is True

    run(tmp_path, body)


def test_a_failed_run_keeps_watching_the_previous_container(tmp_path: Path, podman: Podman) -> None:
    async def body(rt: PodmanRuntime) -> None:
        await rt.apply(image_release(), {})
        with pytest.raises(ReasonError) as failure:
            await rt.apply(image_release("2.0.0", ref="registry.example/unrunnable:2"), {})
        assert failure.value.code == ReasonCode.APPLY_FAILED
        assert rt.status().release == "nav@1.0.0"
        podman.set("muto-nav", running=False)  # what inspect reports is what status says
        await eventually(lambda: not rt.status().alive)

    run(tmp_path, body)


def test_another_stack_stops_the_previous_container_first(tmp_path: Path, podman: Podman) -> None:
    async def body(rt: PodmanRuntime) -> None:
        await rt.apply(image_release(), {})
        await rt.apply(image_release(stack="perception", ref="registry.example/perc:1"), {})
        switch = [c for c in podman.calls() if c[0] in ("pull", "stop", "run")][2:]
        assert [c[0] for c in switch] == ["pull", "stop", "run"]
        assert switch[1][-1] == "muto-nav" and podman.container("muto-nav")["running"] is False
        assert rt.status().release == "perception@1.0.0"

    run(tmp_path, body)


def test_containers_a_dead_agent_left_are_stopped_when_the_runtime_is_built(
    tmp_path: Path, podman: Podman, caplog: pytest.LogCaptureFixture
) -> None:
    workdir = tmp_path / "runtime"
    podman.leave("muto-nav", "nav@1.0.0", workdir)
    podman.leave("muto-map", "map@2.0.0", tmp_path / "another-agent")  # not ours
    caplog.set_level(logging.WARNING, "muto.agent.runtime")

    async def body(rt: PodmanRuntime) -> None:
        assert podman.container("muto-nav")["running"] is False
        assert podman.container("muto-map")["running"] is True
        assert "stopped container muto-nav (nav@1.0.0) left running" in caplog.text
        assert rt.status().release is None  # honest: nothing of ours runs
        # The journal may restore another stack: the old one does not run beside it.
        await rt.apply(image_release(stack="perception", ref="registry.example/perc:1"), {})
        ours = [n for n in ("muto-nav", "muto-perception") if podman.container(n)["running"]]
        assert ours == ["muto-perception"]

    run(tmp_path, body)


@pytest.mark.parametrize("problem", ["pinned-elsewhere", "no-image", "no-podman"])
def test_apply_failures(tmp_path: Path, podman: Podman, problem: str) -> None:
    rel = image_release()
    binary = "podman"
    if problem == "pinned-elsewhere":
        rel = image_release(ref=f"registry.example/nav@{OTHER}")
    elif problem == "no-image":
        rel = release("1.0.0", [])
    else:
        binary = "podman-not-installed"
    rt = PodmanRuntime(tmp_path / "runtime", podman=binary)

    async def main() -> None:
        with pytest.raises(ReasonError) as failure:
            await rt.apply(rel, {})
        assert failure.value.code == ReasonCode.APPLY_FAILED
        assert "run" not in podman.commands()

    asyncio.run(main())
