"""SupervisedRuntime: the shared shell of the runtimes whose release runs as local
processes (process, python_wheel, ros2_launch). Each subclass only prepares a release:
puts its files in place and says which commands to run there."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from muto.agent.runtime.archive import digest12
from muto.agent.runtime.base import STOPPED, RuntimeStatus
from muto.agent.runtime.commands import run_command
from muto.agent.runtime.crash_loop import is_crash_looping
from muto.agent.runtime.file_list import file_list_path
from muto.agent.runtime.group_ledger import FILE as LEDGER_FILE
from muto.agent.runtime.readiness import poll_until_ready
from muto.agent.runtime.reaper import take_over
from muto.agent.runtime.ros_graph import HELPER, RosGraphWatch
from muto.agent.runtime.supervisor import LOG_CHECK_SEC, LOG_MAX_BYTES, Supervisor
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import HealthModel, StackRelease
from muto.trust.files import private_dir


@dataclass(frozen=True)
class LaunchPlan:
    """What to run for a prepared release: each command supervised in `directory`."""

    directory: Path
    commands: list[list[str]]
    env: dict[str, str] = field(default_factory=dict)
    # One per command, naming its log file; default: the command's program name.
    names: list[str] = field(default_factory=list)


@dataclass
class _Running:
    release: StackRelease
    plan: LaunchPlan
    supervisors: list[Supervisor]
    graph: RosGraphWatch | None = None  # judges healthModel.ros, when the release has one


class SupervisedRuntime:
    """Runs one release at a time as supervised process groups under `workdir/releases`.

    Invariants:
    - after the runtime is constructed, no process it started before a crash is alive:
      construction reaps what the ledger in `workdir` proves a dead agent left running
      (reaper.py), blocking up to `grace_sec` + 5 s when there is something to stop;
    - every process group it starts is in that ledger before it counts as started, and
      every process it starts carries the workdir's mark (MARK_ENV) in its environment;
    - at most one release's processes run at a time;
    - apply of B stops A only after `_prepare(B)` has put B's files in place, so a B that
      cannot be prepared leaves A running untouched; a B that then fails to start leaves
      nothing running (the agent rolls back by applying A, whose files are kept);
    - applying the running release is a no-op; apply and stop never interleave;
    - after `stop()` returns no process of the release is alive;
    - each apply keeps the directories of the release it applies and of the releases the
      agent may roll back to (`keep_releases`: its known good), and removes every other
      release's, a failed one's included (until the agent has said, the one the running
      release replaced is kept instead); it keeps the logs of these and of the release
      replaced. The runtime owns `workdir` alone (two runtimes must not share one);
    - each command's log is bounded (supervisor.py: `log_max_bytes`, and as much again in
      the older `<log>.1`).
    """

    name: str = "supervised"

    def __init__(
        self,
        workdir: Path,
        *,
        grace_sec: float = 5.0,
        backoff_sec: float = 0.1,
        max_backoff_sec: float = 5.0,
        poll_sec: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        ros_helper: Sequence[str] = HELPER,
        log_max_bytes: int = LOG_MAX_BYTES,
        log_check_sec: float = LOG_CHECK_SEC,
    ) -> None:
        self.workdir = workdir
        self.ros_helper = list(ros_helper)  # argv of the ROS graph helper (healthModel.ros)
        self.releases_dir = workdir / "releases"
        self.logs_dir = workdir / "logs"
        self.grace_sec = grace_sec
        self.backoff_sec = backoff_sec
        self.max_backoff_sec = max_backoff_sec
        self.poll_sec = poll_sec
        self.clock = clock
        self.log_max_bytes = log_max_bytes
        self.log_check_sec = log_check_sec
        self._running: _Running | None = None
        self._rollback_targets: frozenset[str] | None = None  # None: not told yet
        self._lock = asyncio.Lock()
        self.ledger = take_over(workdir / LEDGER_FILE, grace_sec)

    async def _prepare(self, release: StackRelease, artifacts: Mapping[str, Path]) -> LaunchPlan:
        """Put the release's files in place; raise ReasonError(APPLY_FAILED) if impossible."""
        raise NotImplementedError

    async def apply(self, release: StackRelease, artifacts: Mapping[str, Path]) -> None:
        async with self._lock:
            previous = self._running
            if previous is not None and previous.release == release:
                return
            private_dir(self.releases_dir)
            private_dir(self.logs_dir)
            plan = self._marked(await self._prepare(release, artifacts))
            if previous is not None:
                self._running = None
                await _stop_all(previous.supervisors, previous.graph)
            names = plan.names or [Path(argv[0]).name for argv in plan.commands]
            supervisors = [
                self._supervisor(release, plan, argv, name)
                for argv, name in zip(plan.commands, names, strict=True)
            ]
            started: list[Supervisor] = []
            try:
                for supervisor in supervisors:
                    await supervisor.start()
                    started.append(supervisor)
            except BaseException:
                await _stop_all(started)
                raise
            graph = None
            if release.health_model.ros is not None:
                graph = RosGraphWatch(
                    release.health_model.ros, plan.env, self.clock, self.ros_helper
                )
                try:
                    await graph.start()
                except OSError as exc:  # nothing of B may run half-watched
                    await _stop_all(started)
                    raise ReasonError(
                        ReasonCode.APPLY_FAILED, f"the ROS graph helper cannot start: {exc}"
                    ) from None
            self._running = _Running(release, plan, supervisors, graph)
            replaced = {previous.release.key} if previous else set()
            targets = replaced if self._rollback_targets is None else self._rollback_targets
            keep = {release.key} | targets
            # The logs of the release replaced stay too: a failed one's say why it failed.
            await asyncio.to_thread(_prune, self, plan.directory, keep, keep | replaced)

    def keep_releases(self, release_keys: Collection[str]) -> None:
        """The releases the agent may roll back to (its known good, which its journal
        bounds): from the next apply on, their directories are kept with the running
        one's (a rollback to one that is intact extracts or installs nothing)."""
        self._rollback_targets = frozenset(release_keys)

    async def stop(self) -> None:
        async with self._lock:
            running, self._running = self._running, None
            if running is not None:
                await _stop_all(running.supervisors, running.graph)

    def running_directory(self) -> Path | None:
        """The directory of the running release, None when nothing runs."""
        return self._running.plan.directory if self._running else None

    def status(self) -> RuntimeStatus:
        running = self._running
        if running is None:
            return STOPPED
        health, graph = running.release.health_model, running.graph
        alive = all(s.alive for s in running.supervisors)
        return RuntimeStatus(
            release=running.release.key,
            alive=alive,
            restart_count=sum(s.restarts.count for s in running.supervisors),
            crash_looping=self._crash_looping(running, health),
            degraded=graph.degraded() if graph else None,
            # A command that exited (or was killed outside muto) is restarted by its
            # supervisor after a backoff, and counted: not down.
            restarting=not alive and all(s.supervising for s in running.supervisors),
        )

    async def wait_ready(self, health: HealthModel) -> None:
        running = self._running
        if running is None:
            raise ReasonError(ReasonCode.READINESS_TIMEOUT, "no release is running")

        async def check() -> str | None:
            dead = [s.argv[0] for s in running.supervisors if not s.alive]
            if dead:
                return f"not running: {', '.join(dead)}"
            if health.readiness_probe:
                try:
                    result = await run_command(
                        health.readiness_probe, cwd=running.plan.directory, env=running.plan.env
                    )
                except OSError as exc:
                    return f"readiness probe cannot start: {exc}"
                if not result.ok:
                    return f"probe exited {result.returncode}: {result.output}"
            return running.graph.why_not_ready() if running.graph else None

        await poll_until_ready(
            check, lambda: self._crash_looping(running, health), health, self.poll_sec
        )
        if running.graph is not None:
            running.graph.ready = True  # from now on, a missing piece is a degradation

    def _marked(self, plan: LaunchPlan) -> LaunchPlan:
        # Probes too: one orphaned by a crash mid-readiness is reaped with the stack.
        return dataclasses.replace(plan, env={**plan.env, **self.ledger.environment})

    def _supervisor(
        self, release: StackRelease, plan: LaunchPlan, argv: list[str], name: str
    ) -> Supervisor:
        log = self.logs_dir / f"{release.key}-{name}.log"
        return Supervisor(
            argv,
            cwd=plan.directory,
            env=plan.env,
            log_path=log,
            log_max_bytes=self.log_max_bytes,
            log_check_sec=self.log_check_sec,
            grace_sec=self.grace_sec,
            backoff_sec=self.backoff_sec,
            max_backoff_sec=self.max_backoff_sec,
            keep_restarts=max(release.health_model.crash_loop_restarts, 64),
            clock=self.clock,
            ledger=self.ledger,
            release=release.key,
        )

    def _crash_looping(self, running: _Running, health: HealthModel) -> bool:
        # One release, one rule: restarts of all its commands count together, and so do
        # the times its ROS graph fell apart after readiness.
        degradations = running.graph.degradations.times if running.graph else []
        return is_crash_looping(
            [t for s in running.supervisors for t in s.restarts.times] + list(degradations),
            restarts=health.crash_loop_restarts,
            window_sec=health.crash_loop_window_sec,
            now=self.clock(),
        )


def release_env(release: StackRelease, directory: Path) -> dict[str, str]:
    """The agent's environment, the release's own variables, and where it runs."""
    return {
        **os.environ,
        **release.launch.env,
        "MUTO_RELEASE": release.key,
        "MUTO_RELEASE_DIR": str(directory),
    }


async def _stop_all(supervisors: list[Supervisor], graph: RosGraphWatch | None = None) -> None:
    if graph is not None:
        await graph.stop()
    await asyncio.gather(*(s.stop() for s in supervisors))


def _prune(
    runtime: SupervisedRuntime, running: Path, keep: Collection[str], keep_logs: Collection[str]
) -> None:
    """Remove the directories (and file lists) of releases not in `keep`, but never the
    `running` one, and the logs of releases not in `keep_logs`. Also staging left by an
    agent killed mid-extract or mid-install, and a damaged directory set aside
    (file_list.py): the lock is held."""
    releases = list(runtime.releases_dir.iterdir())
    kept = {running} | {d for d in releases if _release_of(d.name) in keep}
    kept |= {file_list_path(directory) for directory in kept}
    for entry in releases:
        if entry in kept:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:  # the file list of a directory pruned, or one a crash left half-written
            entry.unlink(missing_ok=True)
    # `<key>-<command>.log` (and `.log.1`): a key is not told from a command by its dashes,
    # so a log that starts like a kept release's is kept (at worst a pre-release's of it).
    prefixes = tuple(f"{key}-" for key in keep_logs)
    for log in runtime.logs_dir.iterdir():
        if not log.name.startswith(prefixes):
            with contextlib.suppress(OSError):
                log.unlink()


def _release_of(name: str) -> str | None:
    """The release key of a directory `<stack>@<version>-<digest12>`, else None."""
    key, dash, digest = name.rpartition("-")
    hexdigits = all(c in "0123456789abcdef" for c in digest)
    return key if dash and len(digest) == _DIGEST12_LEN and hexdigits else None


_DIGEST12_LEN = len(digest12("0" * 64))
