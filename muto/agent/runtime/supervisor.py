"""Supervisor: keeps one command of a release running, the way the process-based
runtimes (process, python_wheel, ros2_launch) share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from asyncio.subprocess import Process
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from muto.agent.runtime.crash_loop import RestartHistory
from muto.agent.runtime.group_ledger import GroupLedger
from muto.agent.runtime.process_group import signal_group, terminate_group
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.trust.files import PRIVATE_FILE_MODE

logger = logging.getLogger("muto.agent.runtime")

LOG_MAX_BYTES = 8 * 1024 * 1024  # a command's log; as much again in the older `<log>.1`
LOG_CHECK_SEC = 1.0  # how often a command's log is measured, at most
LOG_CHECK_MIN_SEC = 0.05  # ... and at least, while it keeps filling up
_COPY_CHUNK = 1024 * 1024
_LINE_SEARCH = 64 * 1024  # how far a rotation looks for a line start


class Supervisor:
    """Starts `argv` (in `cwd`, with `env`) as the leader of a new process group and
    restarts it whenever it exits, after a backoff that doubles from `backoff_sec` up to
    `max_backoff_sec` and resets once a run lasted `stable_sec`. Each restart is recorded
    in `restarts` on a monotonic clock (the crash-loop rule reads it).

    Invariants: at most one process group of this supervisor exists at a time (what is
    left of an exited group is killed before the restart); after `stop()` returns no
    process of the group is alive (SIGTERM to the group, SIGKILL after `grace_sec`);
    once stopped it never starts anything again. With a `ledger`, every group is
    recorded there (as `release`) before it counts as started, and forgotten once it
    is killed: a group that cannot be recorded is killed at once, as a failed start.

    The command's stdout and stderr go to `log_path`, opened for append: the command
    writes the file itself, so an agent that stalls cannot block it and one that dies
    cannot kill it. The log is kept bounded beside it: measured every `log_check_sec`
    (more often while it keeps filling up), and once it holds `log_max_bytes` it is
    rotated (`rotate_log`).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        log_path: Path | None = None,
        grace_sec: float = 5.0,
        backoff_sec: float = 0.1,
        max_backoff_sec: float = 5.0,
        stable_sec: float = 10.0,
        keep_restarts: int = 16,
        clock: Callable[[], float] = time.monotonic,
        ledger: GroupLedger | None = None,
        release: str = "",
        log_max_bytes: int = LOG_MAX_BYTES,
        log_check_sec: float = LOG_CHECK_SEC,
    ) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.env = dict(env)
        self.log_path = log_path
        self.log_max_bytes = log_max_bytes
        self.log_check_sec = log_check_sec
        self.grace_sec = grace_sec
        self.backoff_sec = backoff_sec
        self.max_backoff_sec = max_backoff_sec
        self.stable_sec = stable_sec
        self.restarts = RestartHistory(keep_restarts)
        self._clock = clock
        self._ledger = ledger
        self._release = release
        self._proc: Process | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._log_task: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def supervising(self) -> bool:
        """Started and not stopped: whatever exits is started again."""
        return self._task is not None and not self._task.done() and not self._stopping.is_set()

    @property
    def pid(self) -> int | None:
        """The current leader's pid (also its process group id)."""
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Start the first run; ReasonError(APPLY_FAILED) if the command cannot start."""
        if self._task is not None:
            return
        try:
            self._proc = await self._spawn()
        except OSError as exc:
            detail = f"cannot start {self.argv[0]}: {exc}"
            raise ReasonError(ReasonCode.APPLY_FAILED, detail) from None
        self._task = asyncio.create_task(self._watch(), name=f"supervise {self.argv[0]}")
        if self.log_path is not None:
            self._log_task = asyncio.create_task(
                self._bound_log(self.log_path), name=f"bound the log of {self.argv[0]}"
            )

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            # Shielded: a cancelled caller must not cut the group's termination short.
            await asyncio.shield(self._task)
        if self._log_task is not None:  # no rotation outlives the stop (a prune follows)
            await asyncio.shield(self._log_task)

    async def _spawn(self) -> Process:
        proc = await self._exec()
        if self._ledger is not None:
            try:  # synchronous (an fsync): the group is durable before anything goes on
                self._ledger.started(self._release, proc.pid)
            except OSError:
                await terminate_group(proc, 0)
                raise
        return proc

    def _forget(self, proc: Process) -> None:
        if self._ledger is not None:
            self._ledger.stopped(proc.pid)

    async def _exec(self) -> Process:
        log = _append(self.log_path) if self.log_path else None
        try:
            return await asyncio.create_subprocess_exec(
                *self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log or asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.STDOUT if log else asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            if log is not None:
                log.close()

    async def _watch(self) -> None:
        delay = self.backoff_sec
        try:
            while True:
                began = self._clock()
                if self._proc is not None:
                    if not await self._exited(self._proc):
                        return
                    signal_group(self._proc.pid, signal.SIGKILL)
                    self._forget(self._proc)
                self.restarts.record(self._clock())
                if self._clock() - began >= self.stable_sec:
                    delay = self.backoff_sec
                if await self._stop_requested_within(delay):
                    return
                delay = min(delay * 2, self.max_backoff_sec)
                try:
                    self._proc = await self._spawn()
                except OSError:
                    self._proc = None  # counted as a crash on the next turn
        finally:
            if self._proc is not None:
                await terminate_group(self._proc, self.grace_sec)
                self._forget(self._proc)

    async def _bound_log(self, path: Path) -> None:
        delay = self.log_check_sec
        while not await self._stop_requested_within(delay):
            rotated = False
            try:
                if path.stat().st_size >= self.log_max_bytes:
                    rotated = await asyncio.to_thread(rotate_log, path, self.log_max_bytes)
            except FileNotFoundError:
                pass
            except OSError as exc:
                logger.warning("cannot rotate %s: %s", path, exc)
            # A command that filled its log is measured more often: it overshoots less.
            soon = min(LOG_CHECK_MIN_SEC, self.log_check_sec)
            delay = soon if rotated else min(delay * 2, self.log_check_sec)

    async def _exited(self, proc: Process) -> bool:
        """Wait until the process exits (True) or stop is requested (False)."""
        exited = asyncio.ensure_future(proc.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            stopping.cancel()
        return not self._stopping.is_set()

    async def _stop_requested_within(self, delay: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):  # not wait_for: it can lose a cancel
                await self._stopping.wait()
        return self._stopping.is_set()


def rotate_log(path: Path, max_bytes: int) -> bool:
    """If the log at `path` holds `max_bytes` or more, make its newest `max_bytes` (from a
    line start) the older log `<path>.1`, replacing the one there, and empty it; True if
    so. The command writing it goes on: it appends, so its next write lands at the start
    of the emptied file (a line written between the copy and the emptying, microseconds,
    is lost). A copy the disk has no room for is dropped, the log emptied all the same,
    and the OSError raised."""
    older = path.with_name(path.name + ".1")
    staging = path.with_name(path.name + ".1.tmp")  # named by the log: pruned with it
    with open(path, "r+b") as log:
        size = os.fstat(log.fileno()).st_size
        if size < max_bytes:
            return False
        try:
            _copy_newest(log, size - max_bytes, staging, limit=2 * max_bytes)
        except OSError:
            log.truncate(0)
            staging.unlink(missing_ok=True)
            raise
        log.truncate(0)
    os.replace(staging, older)
    return True


def _copy_newest(log: BinaryIO, start: int, to: Path, limit: int) -> None:
    """Copy `log` from `start` (the next line start after it) to its last whole line,
    including what is appended meanwhile, at most `limit` bytes (a writer faster than
    the copy). What follows the last newline is a line cut short: by the limit, or being
    written; the emptying that follows loses it anyway."""
    log.seek(start)
    if start > 0:
        log.readline(_LINE_SEARCH)
    with _create(to) as out:
        copied = whole = 0
        while copied < limit and (chunk := log.read(min(_COPY_CHUNK, limit - copied))):
            out.write(chunk)
            if (newline := chunk.rfind(b"\n")) >= 0:
                whole = copied + newline + 1
            copied += len(chunk)
        if 0 < whole < copied:
            out.truncate(whole)


def _create(path: Path) -> BinaryIO:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    return os.fdopen(fd, "wb")


def _append(path: Path) -> BinaryIO:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE_MODE)
    return os.fdopen(fd, "ab")
