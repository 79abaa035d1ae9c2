"""An agent process with the podman runtime, against the real cloud, real podman and a real
registry on loopback: the images are released as `oci_image` artifacts (`ref@digest`),
pulled by digest, judged ready by their HEALTHCHECK, rolled back on failure; kill -9 of the
agent leaves one container, and a restarted agent converges again without the registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from muto.domain.release import Artifact, ArtifactType, HealthModel, Launch, StackRelease
from muto.trust import Signer
from tests.conftest import Mosquitto
from tests.support.podman import (
    PodmanWorld,
    Pushed,
    podman_env_fixture,  # noqa: F401 (fixture)
    podman_world_fixture,  # noqa: F401 (fixture)
)
from tests.support.processes import AgentProcess, CloudProcess, status
from tests.support.releases import stack_release
from tests.support.waits import eventually

pytestmark = pytest.mark.mqtt


@pytest.fixture
def cloud(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[CloudProcess]:
    cloud = CloudProcess(tmp_path, mosquitto.url)
    cloud.start()
    try:
        yield cloud
    finally:
        cloud.stop()


def image_release(pushed: Pushed, version: str, launch: Launch | None = None) -> StackRelease:
    image = Artifact(type=ArtifactType.OCI_IMAGE, ref=pushed.repo, digest=pushed.digest, size=1)
    health = HealthModel(readiness_timeout_sec=8)
    return stack_release("nav", version, [image], launch=launch, health=health)


def started_agent(
    tmp_path: Path,
    cloud: CloudProcess,
    world: PodmanWorld,
    vehicle: str,
    model: str,
    *releases: StackRelease,
) -> tuple[AgentProcess, str]:
    """A podman agent for `vehicle` (of `model`) running, trusting the key that signed
    `releases` (published); with the label of its containers."""
    signer = Signer.generate()
    for release in releases:
        cloud.publish(release, signer)
    cloud.register(vehicle, model=model)
    agent = AgentProcess(tmp_path, vehicle, cloud, cloud.token("--vehicle", vehicle), "podman")
    ours = world.label(agent.data / "runtime")
    agent.start(trust=agent.provision(signer))
    return agent, ours


def test_pull_by_digest_roll_back_survive_kill9_and_converge_offline(
    tmp_path: Path, cloud: CloudProcess, podman_env: PodmanWorld
) -> None:
    world = podman_env
    for pushed in (world.good, world.never_ready):
        world.rig.forget_image(pushed.pinned)  # this test pulls them
    good, bad = image_release(world.good, "1.0.0"), image_release(world.never_ready, "2.0.0")
    agent, ours = started_agent(tmp_path, cloud, world, "car-p", "m5", good, bad)
    try:
        first = cloud.desire("model=m5", good)["desiredStateRevision"]
        status(cloud, "car-p", first, "converged")
        assert world.rig.running(ours) == [("muto-nav", world.good.digest)]

        second = cloud.desire("model=m5", bad)["desiredStateRevision"]
        seen = status(cloud, "car-p", second, "rolled_back")
        assert seen["lastReasonCodes"] == ["READINESS_TIMEOUT", "ROLLBACK_APPLIED"]
        assert world.rig.running(ours) == [("muto-nav", world.good.digest)]

        assert agent.proc is not None
        agent.proc.kill()
        assert agent.wait_exit() == -9
        assert world.rig.running(ours) == [("muto-nav", world.good.digest)]  # left running
        before = world.rig.podman("inspect", "--format", "{{.Id}}", "muto-nav").stdout.strip()
        world.registry.stop()  # offline: the image is only in the vehicle's store
        agent.start()
        eventually(
            lambda: "stopped container muto-nav (nav@1.0.0) left running" in agent.log.read_text(),
            "the leftover container stopped",
        )
        after = eventually(
            lambda: (
                [c for c in world.rig.containers(ours) if c[1] == "running"]
                and world.rig.podman("inspect", "--format", "{{.Id}}", "muto-nav").stdout.strip()
            ),
            "the restored container",
        )
        assert after != before  # stopped, then started again: never two copies
        assert world.rig.containers(ours) == [("muto-nav", "running", world.good.digest)]
        eventually(lambda: agent.journal().running_key == good.key, "restored offline")
    finally:
        world.registry.start()
        assert agent.stop() == 0
    assert world.rig.running(ours) == []  # SIGTERM: the agent stopped its container


def test_a_release_of_the_same_stack_that_cannot_start_is_rolled_back_to_a_running_again(
    tmp_path: Path, cloud: CloudProcess, podman_env: PodmanWorld
) -> None:
    """`run --replace` removes A's container before B's fails to start: the rollback has
    to start A again, not trust that it still runs."""
    world = podman_env
    good = image_release(world.good, "1.0.0")
    broken = image_release(world.good, "1.1.0", Launch(command=["/no/such/binary"]))
    agent, ours = started_agent(tmp_path, cloud, world, "car-q", "m6", good, broken)
    try:
        status(cloud, "car-q", cloud.desire("model=m6", good)["desiredStateRevision"], "converged")
        second = cloud.desire("model=m6", broken)["desiredStateRevision"]
        seen = status(cloud, "car-q", second, "rolled_back")
        assert seen["lastReasonCodes"] == ["APPLY_FAILED", "ROLLBACK_APPLIED"]
        assert world.rig.containers(ours) == [("muto-nav", "running", world.good.digest)]
        assert agent.journal().running_key == good.key
    finally:
        assert agent.stop() == 0
    assert world.rig.running(ours) == []


def test_an_image_whose_registry_is_down_is_pulled_when_it_is_back(
    tmp_path: Path, cloud: CloudProcess, podman_env: PodmanWorld
) -> None:
    """The agent pulls the image as a download, before the apply: a registry down then
    is a download that failed, `failed` ARTIFACT_DOWNLOAD_FAILED and tried again at the
    next poll; the release is not condemned (it was, for good, on a vehicle that had
    nothing to roll back to)."""
    world = podman_env
    world.rig.forget_image(world.good.pinned)  # not in the vehicle's store
    good = image_release(world.good, "1.0.0")
    agent, ours = started_agent(tmp_path, cloud, world, "car-r", "m7", good)
    world.registry.stop()
    try:
        revision = cloud.desire("model=m7", good)["desiredStateRevision"]
        seen = status(cloud, "car-r", revision, "failed")
        assert seen["lastReasonCodes"] == ["ARTIFACT_DOWNLOAD_FAILED"]
        assert good.key not in agent.journal().failed
        world.registry.start()
        status(cloud, "car-r", revision, "converged")
        assert world.rig.containers(ours) == [("muto-nav", "running", world.good.digest)]
    finally:
        if world.registry.proc is None:  # the next test needs it
            world.registry.start()
        assert agent.stop() == 0
    assert world.rig.running(ours) == []
