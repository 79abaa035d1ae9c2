"""The podman runtime against real podman (runc, cgroupfs) and a real registry on loopback:
images are built locally from busybox-static, pushed, and pulled by digest."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from muto.agent.runtime.base import RuntimeAdapter
from muto.agent.runtime.podman import PodmanRuntime
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact, ArtifactType, HealthModel, Launch, StackRelease
from muto.domain.wire import encode
from tests.support.podman import (
    PodmanWorld,
    Pushed,
    podman_env_fixture,  # noqa: F401 (fixture)
    podman_world_fixture,  # noqa: F401 (fixture)
)
from tests.support.releases import stack_release
from tests.support.runtime_contract import Built, RuntimeContract

FAST = HealthModel(readiness_timeout_sec=20)


def image_release(
    pushed: Pushed,
    version: str = "1.0.0",
    stack: str = "nav",
    launch: Launch | None = None,
    health: HealthModel | None = None,
    ref: str | None = None,
) -> StackRelease:
    image = Artifact(type=ArtifactType.OCI_IMAGE, ref=ref or pushed.repo, digest=pushed.digest,
                     size=1)  # fmt: skip
    return stack_release(stack, version, [image], launch=launch, health=health or FAST)


DIE_AFTER_APPLY = """
import asyncio, os, signal, sys
from pathlib import Path
from muto.agent.runtime.podman import PodmanRuntime
from muto.domain.release import StackRelease
from muto.domain.wire import decode

async def main() -> None:
    release = decode(sys.stdin.buffer.read(), StackRelease)
    await PodmanRuntime(Path(sys.argv[1])).apply(release, {})
    os.kill(os.getpid(), signal.SIGKILL)  # an agent that dies with its stack running

asyncio.run(main())
"""


def die_after_apply(workdir: Path, rel: StackRelease) -> None:
    done = subprocess.run([sys.executable, "-c", DIE_AFTER_APPLY, str(workdir)],
                          input=encode(rel), capture_output=True, timeout=120)  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()


def run(workdir: Path, body: Callable[[PodmanRuntime], Awaitable[None]]) -> None:
    rt = PodmanRuntime(workdir, poll_sec=0.1, grace_sec=2)

    async def main() -> None:
        try:
            await body(rt)
        finally:
            await rt.stop()

    asyncio.run(main())


def test_pulls_by_digest_runs_and_is_ready_by_the_image_healthcheck(
    tmp_path: Path, podman_env: PodmanWorld
) -> None:
    world, workdir = podman_env, tmp_path / "runtime"
    world.rig.forget_image(world.good.pinned)
    rel = image_release(world.good, launch=Launch(env={"ROS_DOMAIN_ID": "7"}))

    async def body(rt: PodmanRuntime) -> None:
        await rt.apply(rel, {})
        await rt.wait_ready(rel.health_model)
        assert world.rig.running(world.label(workdir)) == [("muto-nav", world.good.digest)]
        env = world.rig.podman("exec", "muto-nav", "sh", "-c", "echo $ROS_DOMAIN_ID").stdout
        assert env.strip() == "7"
        status = rt.status()
        assert (status.release, status.alive, status.restart_count) == ("nav@1.0.0", True, 0)
        await rt.apply(rel, {})  # the running release: a no-op
        await rt.stop()
        assert world.rig.running(world.label(workdir)) == []
        assert rt.status().release is None

    run(workdir, body)


def test_an_image_healthcheck_that_never_passes_is_a_readiness_timeout(
    tmp_path: Path, podman_env: PodmanWorld
) -> None:
    rel = image_release(podman_env.never_ready, health=HealthModel(readiness_timeout_sec=2))

    async def body(rt: PodmanRuntime) -> None:
        await rt.apply(rel, {})
        with pytest.raises(ReasonError) as failure:
            await rt.wait_ready(rel.health_model)
        assert failure.value.code == ReasonCode.READINESS_TIMEOUT
        assert "image healthcheck" in failure.value.detail

    run(tmp_path / "runtime", body)


def test_the_readiness_probe_runs_inside_the_container(
    tmp_path: Path, podman_env: PodmanWorld
) -> None:
    probe = ["test", "-f", "/tmp/flag"]

    async def body(rt: PodmanRuntime) -> None:
        await rt.apply(image_release(podman_env.good), {})
        with pytest.raises(ReasonError) as failure:
            await rt.wait_ready(HealthModel(readiness_probe=probe, readiness_timeout_sec=5))
        assert failure.value.code == ReasonCode.READINESS_TIMEOUT
        assert "probe exited 1" in failure.value.detail
        podman_env.rig.podman("exec", "muto-nav", "touch", "/tmp/flag")
        await rt.wait_ready(HealthModel(readiness_probe=probe, readiness_timeout_sec=20))

    run(tmp_path / "runtime", body)


def test_a_container_that_keeps_exiting_trips_the_crash_loop_rule(
    tmp_path: Path, podman_env: PodmanWorld
) -> None:
    health = HealthModel(crash_loop_restarts=3, crash_loop_window_sec=60, readiness_timeout_sec=30)
    rel = image_release(podman_env.crashing, health=health)

    async def body(rt: PodmanRuntime) -> None:
        await rt.apply(rel, {})
        with pytest.raises(ReasonError) as failure:
            await rt.wait_ready(health)  # podman's restart policy restarts it, inspect counts
        assert failure.value.code == ReasonCode.CRASH_LOOP_DETECTED, failure.value.detail
        assert failure.value.code == ReasonCode.CRASH_LOOP_DETECTED
        assert rt.status().crash_looping and rt.status().restart_count >= 3

    run(tmp_path / "runtime", body)


def test_a_registry_serving_other_content_is_refused_and_the_running_stack_stays(
    tmp_path: Path, podman_env: PodmanWorld
) -> None:
    world, workdir = podman_env, tmp_path / "runtime"

    async def body(rt: PodmanRuntime) -> None:
        await rt.apply(image_release(world.good), {})
        with pytest.raises(ReasonError) as failure:
            await rt.apply(image_release(world.tampered, "2.0.0"), {})
        assert failure.value.code == ReasonCode.ARTIFACT_DOWNLOAD_FAILED
        assert "does not match" in failure.value.detail
        assert rt.status().release == "nav@1.0.0"
        assert world.rig.running(world.label(workdir)) == [("muto-nav", world.good.digest)]
        found = world.rig.podman("image", "exists", world.tampered.pinned, check=False)
        assert found.returncode == 1  # nothing of it was stored

    run(workdir, body)


def test_an_image_pulled_before_runs_again_without_the_registry(
    tmp_path: Path, podman_env: PodmanWorld
) -> None:
    world, workdir = podman_env, tmp_path / "runtime"
    run(workdir, lambda rt: rt.apply(image_release(world.good), {}))  # pulled, then stopped
    world.rig.forget_image(world.other_stack.pinned)  # another test may have pulled it
    world.registry.stop()
    try:

        async def offline(rt: PodmanRuntime) -> None:
            await rt.apply(image_release(world.good), {})
            await rt.wait_ready(FAST)
            with pytest.raises(ReasonError) as failure:  # never pulled: needs the registry
                await rt.apply(image_release(world.other_stack, stack="perception"), {})
            assert failure.value.code == ReasonCode.ARTIFACT_DOWNLOAD_FAILED
            assert world.rig.running(world.label(workdir)) == [("muto-nav", world.good.digest)]

        run(workdir, offline)
    finally:
        world.registry.start()


def test_a_release_that_cannot_start_leaves_nothing_and_the_previous_one_runs_again(
    tmp_path: Path, podman_env: PodmanWorld
) -> None:
    """`run --replace` removes A's container before B's fails to start: the runtime must
    not go on believing A runs, or the rollback (apply A) would do nothing."""
    world, workdir = podman_env, tmp_path / "runtime"
    good = image_release(world.good)
    broken = image_release(world.good, "1.1.0", launch=Launch(command=["/no/such/binary"]))

    async def body(rt: PodmanRuntime) -> None:
        await rt.apply(good, {})
        await rt.wait_ready(good.health_model)
        with pytest.raises(ReasonError) as failure:
            await rt.apply(broken, {})
        assert failure.value.code == ReasonCode.APPLY_FAILED
        assert "/no/such/binary" in failure.value.detail
        assert rt.status().release is None  # A's container went with the replace
        assert world.rig.containers(world.label(workdir)) == []  # no `Created` B left
        await rt.apply(good, {})  # the agent's rollback
        await rt.wait_ready(good.health_model)
        assert world.rig.containers(world.label(workdir)) == [
            ("muto-nav", "running", world.good.digest)
        ]
        assert rt.status().release == "nav@1.0.0"

    run(workdir, body)


@pytest.mark.parametrize("outside", ["stop", "rm", "other-release"])
def test_applying_the_running_release_starts_it_again_when_its_container_does_not_run_it(
    tmp_path: Path, podman_env: PodmanWorld, outside: str
) -> None:
    world, workdir = podman_env, tmp_path / "runtime"
    rel = image_release(world.good)

    async def body(rt: PodmanRuntime) -> None:
        await rt.apply(rel, {})
        await rt.wait_ready(rel.health_model)
        if outside == "other-release":  # muto-nav now runs something else
            world.rig.podman("run", "-d", "--name", "muto-nav", "--replace",
                             "--label=muto.release=nav@0.9.0", world.good.pinned)  # fmt: skip
        else:
            world.rig.podman(outside, "--force" if outside == "rm" else "--ignore", "--time", "0",
                             "muto-nav")  # fmt: skip
        await rt.apply(rel, {})  # no longer a no-op: what podman runs is not the release
        await rt.wait_ready(rel.health_model)
        assert world.rig.containers(world.label(workdir)) == [
            ("muto-nav", "running", world.good.digest)
        ]
        status = rt.status()
        # Only its own container, still there and exited, makes this a restart: podman 4
        # cannot tell a `podman stop` from an exit its restart policy did not follow.
        restarts = 1 if outside == "stop" else 0
        assert (status.release, status.alive, status.restart_count) == ("nav@1.0.0", True, restarts)

    run(workdir, body)


def test_a_container_removed_outside_muto_again_and_again_is_no_crash_loop(
    tmp_path: Path, podman_env: PodmanWorld
) -> None:
    """Each `podman rm -f` is followed by the agent's restore (apply of the running
    release): three within the crash-loop window are not the release crashing."""
    world, workdir = podman_env, tmp_path / "runtime"
    rel = image_release(world.good)

    async def body(rt: PodmanRuntime) -> None:
        await rt.apply(rel, {})
        await rt.wait_ready(rel.health_model)
        for _ in range(rel.health_model.crash_loop_restarts):
            world.rig.podman("rm", "--force", "--time", "0", "muto-nav")
            await rt.apply(rel, {})
            await rt.wait_ready(rel.health_model)
        status = rt.status()
        assert (status.alive, status.restart_count, status.crash_looping) == (True, 0, False)

    run(workdir, body)


def test_another_stack_stops_the_previous_container_first(
    tmp_path: Path, podman_env: PodmanWorld
) -> None:
    world, workdir = podman_env, tmp_path / "runtime"

    async def body(rt: PodmanRuntime) -> None:
        await rt.apply(image_release(world.good), {})
        await rt.apply(image_release(world.other_stack, stack="perception"), {})
        running = world.rig.running(world.label(workdir))
        assert running == [("muto-perception", world.other_stack.digest)]
        assert rt.status().release == "perception@1.0.0"

    run(workdir, body)


def test_containers_a_dead_agent_left_are_stopped_when_the_runtime_is_built(
    tmp_path: Path, podman_env: PodmanWorld, caplog: pytest.LogCaptureFixture
) -> None:
    world, workdir, elsewhere = podman_env, tmp_path / "runtime", tmp_path / "another-agent"

    die_after_apply(workdir, image_release(world.good))
    die_after_apply(elsewhere, image_release(world.good, stack="map"))
    caplog.set_level(logging.WARNING, "muto.agent.runtime")
    assert world.rig.running(world.label(workdir)) == [("muto-nav", world.good.digest)]

    async def body(rt: PodmanRuntime) -> None:
        assert world.rig.running(world.label(workdir)) == []
        assert "stopped container muto-nav (nav@1.0.0) left running" in caplog.text
        assert rt.status().release is None  # honest: nothing of ours runs
        # The journal may restore another stack: the old one does not run beside it.
        await rt.apply(image_release(world.other_stack, stack="perception"), {})
        assert [n for n, _ in world.rig.running(world.label(workdir))] == ["muto-perception"]

    run(workdir, body)
    assert world.rig.running(world.label(elsewhere)) == [("muto-map", world.good.digest)]


@pytest.mark.parametrize("problem", ["pinned-elsewhere", "no-image", "no-podman"])
def test_apply_failures(tmp_path: Path, podman_env: PodmanWorld, problem: str) -> None:
    world = podman_env
    rel = image_release(world.good)
    binary = "podman"
    if problem == "pinned-elsewhere":
        rel = image_release(world.good, ref=f"{world.good.repo}@{world.never_ready.digest}")
    elif problem == "no-image":
        rel = stack_release("nav", "1.0.0", [])
    else:
        binary = "podman-not-installed"
    rt = PodmanRuntime(tmp_path / "runtime", podman=binary)

    async def main() -> None:
        with pytest.raises(ReasonError) as failure:
            await rt.apply(rel, {})
        assert failure.value.code == ReasonCode.APPLY_FAILED
        assert world.rig.containers(world.label(tmp_path / "runtime")) == []

    asyncio.run(main())


class TestPodmanRuntimeContract(RuntimeContract):
    """Images pushed to the session's registry and pulled by digest (tests/support/podman.py);
    ready by the image's healthcheck."""

    @pytest.fixture
    def runtime(self, tmp_path: Path, podman_env: PodmanWorld) -> RuntimeAdapter:
        return PodmanRuntime(tmp_path / "runtime", poll_sec=0.1, grace_sec=2)

    @pytest.fixture
    def runnable(self, podman_env: PodmanWorld) -> Callable[[str], Built]:
        return lambda version: (image_release(podman_env.good, version), {})

    @pytest.fixture
    def unpreparable(self, podman_env: PodmanWorld) -> Built:
        world = podman_env  # the good image's name pinned to another image's digest
        return image_release(
            world.good, "9.0.0", ref=f"{world.good.repo}@{world.never_ready.digest}"
        ), {}
