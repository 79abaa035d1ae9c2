"""The `podman` runtime: a release's `oci_image` artifact as one container per stack,
driven through the podman CLI."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from muto.agent.runtime.archive import single_artifact
from muto.agent.runtime.base import STOPPED, RuntimeStatus
from muto.agent.runtime.commands import CommandResult, run_command
from muto.agent.runtime.crash_loop import RestartHistory, is_crash_looping
from muto.agent.runtime.podman_images import (
    PULL_STALL_SEC,
    PULL_TOTAL_SEC,
    PodmanImages,
    image_ref,
)
from muto.agent.runtime.podman_leftovers import owner_label, stop_leftovers
from muto.agent.runtime.readiness import poll_until_ready
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import ArtifactType, HealthModel, StackRelease

# ROS 2 discovery (DDS multicast, shared memory) needs the vehicle's network and IPC.
ROS_RUN_ARGS = ("--network=host", "--ipc=host")
# The label says which release the container under the stack's name runs: podman's
# state, not the runtime's memory, decides whether a release runs.
INSPECT = '--format={{.State.Running}} {{.RestartCount}} {{index .Config.Labels "muto.release"}}'
# What `podman healthcheck run` says for an image without a HEALTHCHECK (exit 125).
NO_HEALTHCHECK = "has no defined healthcheck"
# How long the apply may pull an image removed since the agent fetched it: an apply is
# never cut short, so this pull is bounded short; the next pass fetches it as a download.
APPLY_PULL_SEC = 60.0


class PodmanRuntime:
    """Runs `podman run -d --name muto-<stack> --replace <ref>@<digest>` with podman's
    `--restart=always`, and watches it with `podman inspect` every `poll_sec`.

    Invariants: after the runtime is constructed, no container it started before a
    crash runs: every container it starts is labelled `muto.runtime=<workdir>`, and
    construction stops those it finds (podman_leftovers.py), so `status()` is honest from
    the start (nothing runs until `apply`); B's image is pulled (pinned by digest) before
    A is touched; `--replace` swaps the container under the stack's one name, and a
    release of another stack stops A's container first, so at most one release's
    container runs at a time; applying the running release is a no-op only while its
    container runs it (`inspect`: running, labelled with its key), else it is run again,
    which counts as a restart only when its own container was still there, exited (a
    container removed or replaced outside muto is not the release failing);
    after a failed `run` the name holds A still running (kept) or nothing: `--replace`
    may already have removed A, and B's never-started container is removed, so the
    rollback's apply(A) starts A again. The image store is podman's own: the agent's
    artifact cache is not used for oci_image artifacts; the agent pulls them before the
    apply through `fetcher` (podman_images.py), and the apply pulls only an image removed
    since, within `apply_pull_sec`.
    """

    name: str = "podman"

    def __init__(
        self,
        workdir: Path,
        *,
        podman: str = "podman",
        run_args: Sequence[str] = ROS_RUN_ARGS,
        grace_sec: float = 10.0,
        poll_sec: float = 1.0,
        command_timeout_sec: float = 600.0,
        pull_stall_sec: float = PULL_STALL_SEC,
        pull_total_sec: float = PULL_TOTAL_SEC,
        apply_pull_sec: float = APPLY_PULL_SEC,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.workdir = workdir  # podman keeps its own state; this names our containers
        self.podman = podman
        self.run_args = list(run_args)
        self.grace_sec = grace_sec
        self.poll_sec = poll_sec
        self.command_timeout_sec = command_timeout_sec
        self.apply_pull_sec = apply_pull_sec
        self.fetcher = PodmanImages(podman, stall_sec=pull_stall_sec, total_sec=pull_total_sec)
        self.clock = clock
        self._running: StackRelease | None = None
        self._alive = False
        self._seen_restarts = 0
        self._restarts = RestartHistory(64)
        self._watch: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        stop_leftovers(podman, workdir, _secs(grace_sec), command_timeout_sec)

    async def apply(self, release: StackRelease, artifacts: Mapping[str, Path]) -> None:
        async with self._lock:
            previous = self._running
            seen = await self._inspect(release) if previous == release else None
            if seen is not None and seen.runs(release):
                return
            artifact = single_artifact(release, ArtifactType.OCI_IMAGE)
            image = image_ref(artifact)
            await self.fetcher.ensure(artifact, self.apply_pull_sec)
            if previous is not None and previous.stack_name != release.stack_name:
                await self._stop_watching()
                self._running = None
                await self._podman(
                    "stop", "--ignore", "--time", _secs(self.grace_sec), _name(previous)
                )
            env = [f"--env={k}={v}" for k, v in sorted(release.launch.env.items())]
            try:
                await self._podman(
                    "run", "-d", "--name", _name(release), "--replace", "--restart=always",
                    f"--label=muto.release={release.key}", f"--label={owner_label(self.workdir)}",
                    *self.run_args, *env,
                    image, *release.launch.command,
                )  # fmt: skip
            except ReasonError as failure:
                raise await self._after_failed_run(_name(release), failure) from None
            await self._stop_watching()
            self._running = release
            self._alive, self._seen_restarts = True, 0
            if seen is not None:  # its container had stopped or gone: started again
                if seen.release == release.key:
                    # Still there, exited, and podman's policy did not start it again: the
                    # release died (or was stopped; podman 4 does not say which), and this
                    # start counts like one of podman's restarts, for the crash-loop rule.
                    # Removed, or replaced by another container, outside muto: the release
                    # did nothing, and a run that only puts it back is not a restart.
                    self._restarts.record(self.clock())
            else:
                self._restarts = RestartHistory(max(release.health_model.crash_loop_restarts, 64))
            self._watch = asyncio.create_task(self._watch_container(), name="podman inspect")

    async def _after_failed_run(self, name: str, failure: ReasonError) -> ReasonError:
        """Make the runtime's belief match podman after `run --replace` failed. It may have
        failed before replacing (A still runs: keep watching it) or after removing A and
        creating B's container, left `Created` (nothing runs: forget A, remove B's)."""
        kept = self._running  # A of the same stack; None if another stack was stopped
        if kept is not None and (await self._inspect(kept)).runs(kept):
            return failure
        await self._stop_watching()
        self._running = None
        try:
            removed = await self._run("rm", "--force", "--ignore", "--time",
                                      _secs(self.grace_sec), name)  # fmt: skip
            problem = None if removed.ok else removed.output.strip()
        except ReasonError as exc:
            problem = exc.detail
        if problem is None:
            return failure
        return ReasonError(failure.code, f"{failure.detail}; podman rm {name}: {problem}")

    async def stop(self) -> None:
        async with self._lock:
            running, self._running = self._running, None
            await self._stop_watching()
            if running is not None:
                await self._podman(
                    "stop", "--ignore", "--time", _secs(self.grace_sec), _name(running)
                )

    def status(self) -> RuntimeStatus:
        if self._running is None:
            return STOPPED
        return RuntimeStatus(
            release=self._running.key,
            alive=self._alive,
            restart_count=self._restarts.count,
            crash_looping=self._crash_looping(self._running.health_model),
        )

    async def wait_ready(self, health: HealthModel) -> None:
        running = self._running
        if running is None:
            raise ReasonError(ReasonCode.READINESS_TIMEOUT, "no release is running")

        restarts_seen: list[int] = []  # by the previous check

        async def check() -> str | None:
            await self._observe(running)
            if not self._alive:
                return f"container {_name(running)} is not running {running.key}"
            # Up at two checks in a row with no restart between them: a container that
            # keeps exiting is otherwise caught "running" between two of its restarts.
            before, restarts_seen[:] = restarts_seen[:], [self._seen_restarts]
            if before != restarts_seen:
                return f"container {_name(running)} has not stayed up for one check yet"
            if health.readiness_probe:
                probe = await self._run("exec", _name(running), *health.readiness_probe)
                return None if probe.ok else f"probe exited {probe.returncode}: {probe.output}"
            # No probe in the release: the image's own HEALTHCHECK, if it declares one.
            checked = await self._run("healthcheck", "run", _name(running))
            if checked.ok or NO_HEALTHCHECK in checked.output:
                return None
            return f"image healthcheck: {checked.output or checked.returncode}"

        await poll_until_ready(check, lambda: self._crash_looping(health), health, self.poll_sec)

    async def _watch_container(self) -> None:
        while (running := self._running) is not None:
            await self._observe(running)
            await asyncio.sleep(self.poll_sec)

    async def _observe(self, running: StackRelease) -> None:
        """Refresh liveness and restarts from `podman inspect`; a restart counts when seen."""
        seen = await self._inspect(running)
        if self._running is not running:
            return
        self._alive = seen.runs(running)
        if seen.release != running.key:
            return  # another container holds the name: its restarts are not ours
        now = self.clock()
        for _ in range(seen.restarts - self._seen_restarts):
            self._restarts.record(now)
        self._seen_restarts = max(seen.restarts, self._seen_restarts)

    async def _inspect(self, release: StackRelease) -> Inspected:
        """The container under the release's stack name; a podman that cannot be asked
        proves nothing runs."""
        try:
            result = await self._run("inspect", "--type", "container", INSPECT, _name(release))
        except ReasonError:
            return GONE
        return _inspected(result)

    def _crash_looping(self, health: HealthModel) -> bool:
        return is_crash_looping(
            self._restarts.times,
            restarts=health.crash_loop_restarts,
            window_sec=health.crash_loop_window_sec,
            now=self.clock(),
        )

    async def _stop_watching(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None

    async def _podman(self, *args: str) -> None:
        result = await self._run(*args)
        if not result.ok:
            raise ReasonError(ReasonCode.APPLY_FAILED, f"podman {args[0]}: {result.output}")

    async def _run(self, *args: str) -> CommandResult:
        try:
            return await run_command([self.podman, *args], timeout_sec=self.command_timeout_sec)
        except (OSError, TimeoutError) as exc:
            raise ReasonError(ReasonCode.APPLY_FAILED, f"podman {args[0]}: {exc!r}") from None


def _name(release: StackRelease) -> str:
    return f"muto-{release.stack_name}"


def _secs(seconds: float) -> str:
    return str(max(int(seconds), 0))


@dataclass(frozen=True)
class Inspected:
    """What INSPECT shows of the container under a stack's name."""

    running: bool
    restarts: int
    release: str  # its muto.release label; "" without one

    def runs(self, release: StackRelease) -> bool:
        return self.running and self.release == release.key


GONE = Inspected(running=False, restarts=0, release="")


def _inspected(result: CommandResult) -> Inspected:
    """INSPECT's output; a missing container (inspect fails) is GONE."""
    fields = result.output.split() if result.ok else []
    if len(fields) not in (2, 3) or not fields[1].isdigit():
        return GONE
    label = fields[2] if len(fields) == 3 else ""
    return Inspected(running=fields[0] == "true", restarts=int(fields[1]), release=label)
