"""The podman runtime's belief against what podman runs, on a fake podman (the commands
the runtime sends, answered from a table of containers): a failed `run --replace` in
either of its two ways, and a container that no longer runs the release the runtime
thinks it does. tests/integration/test_runtime_podman.py proves the same on real podman."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from muto.agent.runtime import podman as podman_module
from muto.agent.runtime import podman_images
from muto.agent.runtime.commands import CommandResult
from muto.agent.runtime.podman import PodmanRuntime
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact, ArtifactType, StackRelease
from tests.support.releases import stack_release

DIGEST = "sha256:" + "1" * 64
A = stack_release("nav", "1.0.0", [Artifact(type=ArtifactType.OCI_IMAGE, ref="r/nav",
                                            digest=DIGEST, size=1)])  # fmt: skip
B = stack_release("nav", "1.1.0", A.artifacts)
OTHER = stack_release("map", "1.0.0", A.artifacts)


@dataclass
class Container:
    running: bool
    release: str
    restarts: int = 0


@dataclass
class FakePodman:
    """`run` fails "before" it replaces (the old container stays) or "after" (the old one
    removed, the new one left `Created`), as real podman does for a missing command."""

    containers: dict[str, Container] = field(default_factory=dict)
    run_fails: str | None = None
    rm_fails: bool = False
    ran: list[str] = field(default_factory=list)

    async def __call__(self, argv: Sequence[str], **_: object) -> CommandResult:
        verb, args = argv[1], list(argv[2:])
        name = args[-1]
        if verb == "inspect":
            found = self.containers.get(name)
            if found is None:
                return CommandResult(125, f"Error: no such container {name}")
            running = "true" if found.running else "false"
            return CommandResult(0, f"{running} {found.restarts} {found.release}")
        if verb == "run":
            return self._run(args)
        if verb == "stop" and name in self.containers:
            self.containers[name].running = False
        if verb == "rm":
            if self.rm_fails:
                return CommandResult(125, "Error: container state improper")
            self.containers.pop(name, None)
        return CommandResult(0, "")  # image exists, stop, healthcheck run

    def _run(self, args: list[str]) -> CommandResult:
        name = args[args.index("--name") + 1]
        label = next(a for a in args if a.startswith("--label=muto.release="))
        release = label.removeprefix("--label=muto.release=")
        if self.run_fails == "before":
            return CommandResult(125, "Error: invalid argument")
        self.containers[name] = Container(running=self.run_fails is None, release=release)
        if self.run_fails == "after":
            return CommandResult(127, "Error: /no/such/binary: no such file or directory")
        self.ran.append(release)
        return CommandResult(0, "0123abcd\n")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePodman:
    fake = FakePodman()
    monkeypatch.setattr(podman_module, "run_command", fake)
    monkeypatch.setattr(podman_images, "run_command", fake)
    monkeypatch.setattr(podman_module, "stop_leftovers", lambda *_: None)
    return fake


def run(tmp_path: Path, body: Callable[[PodmanRuntime], Awaitable[None]]) -> None:
    async def main() -> None:
        rt = PodmanRuntime(tmp_path, poll_sec=0.01, grace_sec=0)
        try:
            await body(rt)
        finally:
            await rt.stop()

    asyncio.run(main())


async def failed_apply(rt: PodmanRuntime, release: StackRelease) -> ReasonError:
    with pytest.raises(ReasonError) as failure:
        await rt.apply(release, {})
    assert failure.value.code == ReasonCode.APPLY_FAILED
    return failure.value


def test_a_replace_that_removed_a_before_b_failed_leaves_nothing_and_a_runs_again(
    tmp_path: Path, fake: FakePodman
) -> None:
    async def body(rt: PodmanRuntime) -> None:
        await rt.apply(A, {})
        fake.run_fails = "after"
        assert "/no/such/binary" in (await failed_apply(rt, B)).detail
        assert rt.status().release is None  # honest: A went with the replace
        assert fake.containers == {}  # B's `Created` container removed
        fake.run_fails = None
        await rt.apply(A, {})  # the rollback
        assert fake.ran == ["nav@1.0.0", "nav@1.0.0"]
        assert fake.containers == {"muto-nav": Container(running=True, release="nav@1.0.0")}
        assert (rt.status().release, rt.status().alive) == ("nav@1.0.0", True)

    run(tmp_path, body)


def test_a_run_that_failed_before_replacing_keeps_a_running_and_watched(
    tmp_path: Path, fake: FakePodman
) -> None:
    async def body(rt: PodmanRuntime) -> None:
        await rt.apply(A, {})
        fake.run_fails = "before"
        await failed_apply(rt, B)
        assert (rt.status().release, rt.status().alive) == ("nav@1.0.0", True)
        await rt.apply(A, {})  # A's container runs A: a no-op
        assert fake.ran == ["nav@1.0.0"]

    run(tmp_path, body)


def test_a_leftover_that_cannot_be_removed_is_named_in_the_failure(
    tmp_path: Path, fake: FakePodman
) -> None:
    async def body(rt: PodmanRuntime) -> None:
        await rt.apply(A, {})
        fake.run_fails, fake.rm_fails = "after", True
        detail = (await failed_apply(rt, B)).detail
        assert "/no/such/binary" in detail and "podman rm muto-nav: Error:" in detail
        assert rt.status().release is None

    run(tmp_path, body)


def test_another_stack_that_fails_to_start_leaves_nothing(tmp_path: Path, fake: FakePodman) -> None:
    async def body(rt: PodmanRuntime) -> None:
        await rt.apply(A, {})
        fake.run_fails = "after"
        await failed_apply(rt, OTHER)
        assert rt.status().release is None
        assert fake.containers == {"muto-nav": Container(running=False, release="nav@1.0.0")}
        fake.run_fails = None
        await rt.apply(A, {})
        assert fake.containers["muto-nav"].running

    run(tmp_path, body)


@pytest.mark.parametrize(
    ("outside", "restarts"),
    [
        # Exited (or `podman stop` outside muto: podman 4 does not tell them apart) and
        # not restarted by podman's policy: starting it again counts as a restart.
        (Container(running=False, release="nav@1.0.0"), 1),
        (Container(running=True, release="nav@0.9.0"), 0),  # the name runs another release
        (None, 0),  # `podman rm -f`: gone, not the release's doing
    ],
)
def test_applying_a_whose_container_does_not_run_a_starts_it_again(
    tmp_path: Path, fake: FakePodman, outside: Container | None, restarts: int
) -> None:
    async def body(rt: PodmanRuntime) -> None:
        await rt.apply(A, {})
        await rt.apply(A, {})  # runs: a no-op
        assert fake.ran == ["nav@1.0.0"]
        if outside is None:
            del fake.containers["muto-nav"]
        else:
            fake.containers["muto-nav"] = outside
        await asyncio.sleep(0.05)  # the watch sees it
        assert not rt.status().alive
        await rt.apply(A, {})
        assert fake.ran == ["nav@1.0.0", "nav@1.0.0"]
        status = rt.status()
        assert (status.release, status.alive, status.restart_count) == ("nav@1.0.0", True, restarts)

    run(tmp_path, body)


@pytest.mark.parametrize("outside", ["removed", "exited"])
def test_only_a_container_that_died_makes_its_restores_a_crash_loop(
    tmp_path: Path, fake: FakePodman, outside: str
) -> None:
    """Three restores in the window (the agent's, after each drift check): a container
    removed each time outside muto is not a crash loop; one that exits each time and
    that podman does not start again is (no restore loop that never rolls back)."""

    async def body(rt: PodmanRuntime) -> None:
        await rt.apply(A, {})
        for _ in range(3):
            if outside == "removed":
                del fake.containers["muto-nav"]
            else:
                fake.containers["muto-nav"].running = False
            await asyncio.sleep(0.05)  # the watch sees it
            assert not rt.status().alive
            await rt.apply(A, {})  # the agent restores it
        assert rt.status().alive
        assert rt.status().crash_looping is (outside == "exited")

    run(tmp_path, body)
