"""The single writer: the commands of this process run one at a time, and concurrent
commands are saved together in one transaction (group commit).

Invariants:
- Commands run one at a time, in submission order, on the writer thread (or on an idle
  writer's waiting caller's, below); so within one process two commands never race on
  the same aggregate.
- A batch commits atomically or not at all. If any command of a batch raises, every
  command of the batch is re-run alone against freshly loaded aggregates, so one bad
  command never takes its neighbours' writes down with it. A save that conflicts with
  another process (optimistic concurrency) is first run once more together on fresh
  loads, then, if it conflicts again, alone. After a conflict, batches first bring
  the cached aggregates they name up to what the store holds, in one query, for
  OTHERS_WRITING_S (`_refresh`): a process that writes alone never pays it.
- A command that still conflicts after MAX_ATTEMPTS fresh re-runs fails with Conflict.
- A command must only mutate aggregates obtained from its UnitOfWork. Those are the
  event log's cached aggregates themselves (no copy per command): whatever a failed
  command or save touched is evicted, and every aggregate a batch read is checked at
  its save against what other processes stored since (`UnitOfWork.save`); a command
  refused (raised) on an aggregate another process has moved since is run again on
  fresh loads (`UnitOfWork.read_stale`).
- Nothing runs until `start()`; `close()` finishes every queued command either way.
- A caller that waits (`execute`) while the writer has nothing queued or running, and
  its last batch was a single command, runs its command on its own thread, under the
  same batch lock: a lone write then costs no hand-off to the writer thread and back
  (about four context switches, as much as the command and its save). Commands
  submitted meanwhile queue for the writer thread, which batches them after it; a
  caller's earlier submissions are finished before (nothing is outstanding), so its
  own commands keep their order. After a batch of several, callers queue: concurrent
  callers come back together, and one of them running alone split their batches in
  two (16 callers: mean batch 14.6 -> 8.0 commands, a commit more each round).

`WritePath` is the one rule every caller that writes follows: store through the writer,
then wait until the views show the write (read-your-writes). A write is never reported
failed because the views are slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Recording

from muto.cloud.errors import Conflict
from muto.cloud.eventlog import EventLog
from muto.projections.runner import ProjectionRunner

T = TypeVar("T")
A = TypeVar("A", bound=Aggregate)
MAX_BATCH = 512
MAX_ATTEMPTS = 5
LINGER_S = 0.002  # the longest a batch waits for callers of the previous one
# After a conflict with another process's writes, batches bring their cached aggregates
# up to date before running, for this long (`Writer._refresh`).
OTHERS_WRITING_S = 30.0
logger = logging.getLogger("muto.cloud")


class UnitOfWork:
    """Aggregates loaded by the commands of one batch, shared between them."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self._aggregates: dict[UUID, Aggregate] = {}
        # The version each aggregate had when loaded: checked when the batch saves.
        self.read_versions: dict[UUID, int] = {}
        # Aggregates found absent by `preload`: `find` answers None without a query.
        self._absent: set[UUID] = set()

    def find(self, kind: type[A], aggregate_id: UUID) -> A | None:
        if aggregate_id in self._aggregates:
            found = self._aggregates[aggregate_id]
            assert isinstance(found, kind)
            return found
        if aggregate_id in self._absent:
            return None
        try:
            # The cached aggregate itself, not a copy: `forget` evicts it if the
            # command or the save fails (eventlog.WriterRepository).
            aggregate: Aggregate = self.log.repository.get(aggregate_id, deepcopy_from_cache=False)
        except AggregateNotFoundError:
            return None
        assert isinstance(aggregate, kind), f"{aggregate_id} is a {type(aggregate).__name__}"
        self._aggregates[aggregate_id] = aggregate
        self.read_versions[aggregate_id] = aggregate.version
        return aggregate

    def preload(self, aggregate_ids: Sequence[UUID]) -> None:
        """Load, in one go, those of `aggregate_ids` that are neither found here nor in
        the log's cache, into that cache (the writer's, under its batch lock), and learn
        which have no events. After a restart every vehicle's first report finds its
        vehicle uncached: loaded one by one, two queries each on the writer's thread,
        a fleet reporting at once waited on that (about 450 health transitions a second
        on PostgreSQL, measured). One aggregate is left to `find`. An aggregate found
        absent here is answered None by `find` without a query; the batch's save still
        collides (IntegrityError) with another process that creates it meanwhile."""
        cache = self.log.repository.cache
        if cache is None:  # the event log always configures one (EventLog.cache_env)
            return
        missing = [
            i
            for i in dict.fromkeys(aggregate_ids)
            if i not in cache.cache and i not in self._aggregates and i not in self._absent
        ]  # `cache.cache`: the library's Cache keeps its entries in that dict
        if len(missing) < 2:
            return
        loaded = self.log.load_many(missing)
        if loaded is None:
            return
        for aggregate_id in missing:
            if aggregate_id in loaded:
                cache.put(aggregate_id, loaded[aggregate_id])
            else:
                self._absent.add(aggregate_id)

    def add(self, aggregate: Aggregate) -> None:
        if aggregate.id in self._aggregates:
            raise Conflict(f"{type(aggregate).__name__} {aggregate.id} already exists")
        self._aggregates[aggregate.id] = aggregate
        self._absent.discard(aggregate.id)

    def pending(self) -> list[Aggregate]:
        return list(self._aggregates.values())

    def read_stale(self) -> bool:
        """Whether another process has stored events, since this unit read them, for
        any aggregate it read (a refusal decided on a cached version must be decided
        again). The in-memory store has no other process."""
        moved_since = getattr(self.log.recorder, "moved_since", None)
        if moved_since is None or not self.read_versions:
            return False
        try:
            return bool(moved_since(self.read_versions))
        except Exception:  # the refusal stands; the database error is not the answer
            return False

    def save(self) -> list[Recording[UUID]]:
        """Store every pending event in one transaction; IntegrityError if any aggregate
        read here was moved by another process since (or a version collides)."""
        return self.log.save(*self.pending(), read_versions=self.read_versions)

    def forget(self) -> None:
        """Drop this unit's aggregates from the log's cache: a failed command or save
        may have left them changed but not stored, or another process has since moved
        past their version (on SQLite the cache does not fast-forward). The next
        attempt loads them from the store."""
        cache = self.log.repository.cache
        if cache is None:
            return
        for aggregate_id in self._aggregates:
            with contextlib.suppress(KeyError):
                cache.get(aggregate_id, evict=True)


Command = Callable[[UnitOfWork], T]
Item = tuple[Command[Any], Future["Written[Any]"]]


@dataclass(frozen=True)
class Touching(Generic[T]):
    """A command that names the aggregates it will find, so that the writer loads those
    a batch lacks in one go (`UnitOfWork.preload`) before running it."""

    aggregates: tuple[UUID, ...]
    command: Command[T]

    def __call__(self, uow: UnitOfWork) -> T:
        return self.command(uow)


def _touched(batch: Sequence[Item]) -> list[UUID]:
    return [i for command, _ in batch if isinstance(command, Touching) for i in command.aggregates]


@dataclass(frozen=True)
class Written(Generic[T]):
    value: T
    position: int | None  # the log position a reader must reach to see this write
    # False when the views had not caught up with this write when it returned (a very
    # large write under load): the write itself is stored.
    views_current: bool = True


class Writer:
    def __init__(
        self,
        log: EventLog,
        max_batch: int = MAX_BATCH,
        on_saved: Callable[[int | None], None] | None = None,
    ) -> None:
        self.log = log
        self.max_batch = max_batch
        # Called after each batch with the last position this writer has stored (None:
        # nothing yet): e.g. wake the projector.
        self.on_saved = on_saved
        self.position: int | None = None
        self._queue: queue.SimpleQueue[Item | None] = queue.SimpleQueue()
        # Called with (commands, seconds) after each batch, on the thread that ran it.
        self.batch_observers: list[Callable[[int, float], None]] = []
        self._thread = threading.Thread(target=self._loop, name="muto-writer", daemon=True)
        # Commands submitted or run on a caller's thread and not yet finished; guarded
        # by `_outstanding_lock`. None once closing: every command then queues.
        self._outstanding: int | None = 0
        self._outstanding_lock = threading.Lock()
        self._last = 1  # commands in the last batch
        self._others_until = 0.0  # monotonic time until which batches refresh first
        self.batches = 0
        self.commands = 0

    def start(self) -> None:
        """Start the writer thread: queued commands run from now on."""
        self._thread.start()

    def submit(self, command: Command[T]) -> Future[Written[T]]:
        future: Future[Written[T]] = Future()
        with self._outstanding_lock:
            if self._outstanding is not None:
                self._outstanding += 1
            self._queue.put((command, future))
        return future

    def execute(self, command: Command[T]) -> Written[T]:
        """Store `command` and wait for it: on this thread when the writer is idle and
        nothing suggests other callers (its last batch was one command)."""
        if self._thread.is_alive() and self._claim():
            future: Future[Written[T]] = Future()
            try:
                self._run([(command, future)])
            finally:
                self._finished(1)
            return future.result()
        return self.submit(command).result()

    async def run(self, command: Command[T]) -> Written[T]:
        return await asyncio.wrap_future(self.submit(command))

    def close(self) -> None:
        """Finish every queued command, then stop the thread (never started: the
        queued commands run on the caller's thread)."""
        with self._outstanding_lock:
            self._outstanding = None
            self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join()
        elif self._thread.ident is None:
            self._loop()

    # -- writer thread ----------------------------------------------------------------

    def _claim(self) -> bool:
        """Whether a caller may run its command itself (nothing outstanding, the last
        batch alone); if so, one command is outstanding until `_finished`."""
        if self._last > 1:
            return False
        with self._outstanding_lock:
            if self._outstanding != 0:
                return False
            self._outstanding = 1
            return True

    def _finished(self, commands: int) -> None:
        with self._outstanding_lock:
            if self._outstanding is not None:
                self._outstanding -= commands

    def _loop(self) -> None:
        while True:
            batch, stopping = self._take(self._last)
            if batch:
                try:
                    self._run(batch)
                finally:
                    self._finished(len(batch))
            if stopping:
                return

    def _run(self, batch: list[Item]) -> None:
        """One batch, on whichever thread runs it (the writer's, or an idle caller's)."""
        started = time.perf_counter()
        with self.log.writer_repository.batch_lock:
            self._last = len(batch)
            self._write(batch)
        for observe in self.batch_observers:
            observe(len(batch), time.perf_counter() - started)
        if self.on_saved is not None:
            self.on_saved(self.position)

    def _take(self, last: int) -> tuple[list[Item], bool]:
        """The next batch: everything queued, up to max_batch. After a batch of several
        commands, wait up to LINGER_S for as many again: their callers are likely to
        come straight back, and one commit then serves them all (a commit costs more
        than the wait). After a single command, no wait: a lone caller is not delayed."""
        item = self._queue.get()
        if item is None:
            return [], True
        batch = [item]
        target = min(self.max_batch, max(1, last))
        deadline = time.monotonic() + LINGER_S
        while len(batch) < self.max_batch:
            try:
                if len(batch) < target:
                    more = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                else:
                    more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                return batch, True
            batch.append(more)
        return batch, False

    def _write(self, batch: list[tuple[Command[Any], Future[Written[Any]]]]) -> None:
        self.batches += 1
        self.commands += len(batch)
        if len(batch) > 1 and self._write_together(batch):
            return
        for command, future in batch:
            try:
                future.set_result(self._write_alone(command))
            except Exception as exc:  # delivered to the caller, never swallowed
                future.set_exception(exc)

    def _write_together(self, batch: list[tuple[Command[Any], Future[Written[Any]]]]) -> bool:
        """The batch in one transaction; False to re-run each command alone. A save that
        another process's writes made conflict (its aggregates were cached at older
        versions: with API processes behind a round-robin balancer, most batches of a
        fleet's reports) is run together once more on fresh loads, before anything is
        run alone: alone, each command cost a load and a commit of its own (two API
        processes on PostgreSQL made ~320 reconcile reports a second, against ~3,000
        for one)."""
        touched = _touched(batch)
        self._refresh(touched)
        for _ in range(2):
            uow = UnitOfWork(self.log)
            try:
                uow.preload(touched)
                values = [command(uow) for command, _ in batch]
                recordings = uow.save()
                break
            except IntegrityError:
                self._others_writing()
                uow.forget()  # reloaded by the next attempt's preload, in one go
            except Exception:
                uow.forget()
                return False  # re-run each alone: errors and conflicts stay with their command
        else:
            return False
        position = self._stored(recordings)
        for (_, future), value in zip(batch, values, strict=True):
            future.set_result(Written(value, position))
        return True

    def _write_alone(self, command: Command[T]) -> Written[T]:
        if isinstance(command, Touching):
            self._refresh(list(command.aggregates))
        for _ in range(MAX_ATTEMPTS):
            uow = UnitOfWork(self.log)
            try:
                value = command(uow)
                recordings = uow.save()
            except IntegrityError:
                self._others_writing()
                uow.forget()  # another process wrote first: reload and decide again
                continue
            except Exception:
                uow.forget()  # refused: leave no changed aggregate in the cache
                if uow.read_stale():
                    self._others_writing()
                    continue  # refused on a version another process has moved past
                raise
            except BaseException:
                uow.forget()
                raise
            return Written(value, self._stored(recordings))
        raise Conflict(f"gave up after {MAX_ATTEMPTS} concurrent-write conflicts")

    def _others_writing(self) -> None:
        self._others_until = time.monotonic() + OTHERS_WRITING_S

    def _refresh(self, aggregate_ids: list[UUID]) -> None:
        """While other processes write the same aggregates (a conflict within
        OTHERS_WRITING_S), bring the cached ones among `aggregate_ids` up to date before
        the commands run, in one query (`EventLog.fast_forward`). Otherwise a stale one
        is found only by the save, which fails: a save, a reload of every aggregate of
        the batch and a second run of its commands. With API processes behind a
        round-robin balancer a vehicle's reports land on each in turn, and most batches
        conflicted so. Alone, a process never conflicts and never pays the query. A
        failed refresh only costs the conflict it would have spared: the save still
        checks every version it read."""
        if not aggregate_ids or time.monotonic() >= self._others_until:
            return
        try:
            self.log.fast_forward(aggregate_ids)
        except Exception:
            logger.debug("refreshing cached aggregates failed; the save checks them", exc_info=True)

    def _stored(self, recordings: Sequence[Recording[UUID]]) -> int | None:
        """The last position of a save (None: it stored nothing), kept as the writer's."""
        position = max((r.notification.id for r in recordings), default=None)
        if position is not None and (self.position is None or position > self.position):
            self.position = position
        return position


class WritePath:
    """Store a command through the writer, then wait until every view shows it
    (read-your-writes). A write is never reported failed because the views are slow:
    it is stored, and `Written.views_current` says whether they caught up in time (a
    handler that must read the view back answers 503 then, saying the write is kept)."""

    def __init__(
        self, writer: Writer, projector: ProjectionRunner, views_timeout: float = 10.0
    ) -> None:
        self.writer = writer
        self.projector = projector
        self.views_timeout = views_timeout

    def execute(self, command: Command[T], views_timeout: float | None = None) -> Written[T]:
        written = self.writer.execute(command)
        try:
            self.projector.catch_up_to(written.position, self._timeout(views_timeout))
        except TimeoutError:
            return _views_behind(written)
        return written

    async def run(self, command: Command[T], views_timeout: float | None = None) -> Written[T]:
        """With the projector's thread running, the caller wakes once: the writer's
        thread, right after the commit, hands the caller's future to the projector,
        which resolves it when the views show the write (one wake-up of the event loop
        per batch, not two per request). The views' timeout still counts from the
        commit, so a write slow to commit is not reported behind."""
        timeout = self._timeout(views_timeout)
        if not self.projector.following():
            written = await self.writer.run(command)
            try:
                await self.projector.reach(written.position, timeout)
            except TimeoutError:
                return _views_behind(written)
            return written
        loop = asyncio.get_running_loop()
        shown: asyncio.Future[None] = loop.create_future()
        deadline = _ViewsDeadline(loop, shown, timeout)

        def handed(future: Future[Written[T]]) -> None:
            deadline.committed = time.monotonic()
            position = None if future.exception() else future.result().position
            if position is None:  # failed, or nothing stored: nothing to wait for
                loop.call_soon_threadsafe(_resolve, shown)
            else:
                self.projector.resolve_at(position, loop, shown)

        stored = self.writer.submit(command)
        stored.add_done_callback(handed)
        try:
            await shown  # cancelled with the request: the write goes on all the same
        finally:
            deadline.cancel()
        return _views_behind(stored.result()) if deadline.behind else stored.result()

    def _timeout(self, views_timeout: float | None) -> float:
        return self.views_timeout if views_timeout is None else views_timeout


class _ViewsDeadline:
    """A write's wait for its views, timed out `timeout` after its commit: one timer a
    request, re-armed until the commit (`asyncio.wait_for` and `shield` made futures
    and callbacks each time: 17 against 7.5 µs of the event loop, in isolation). No
    closure refers to itself here: a reference cycle per request is garbage only the
    collector frees, and its collections were 200 ms pauses in the server."""

    __slots__ = ("_timer", "behind", "committed", "loop", "shown", "timeout")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, shown: asyncio.Future[None], timeout: float
    ) -> None:
        self.loop, self.shown, self.timeout = loop, shown, timeout
        self.committed: float | None = None  # set by the writer's thread
        self.behind = False  # the timeout ran out after the commit
        self._timer = loop.call_later(timeout, self._expire)

    def _expire(self) -> None:
        if self.shown.done():
            return
        committed = self.committed
        if committed is None:
            self._timer = self.loop.call_later(self.timeout, self._expire)
            return
        left = self.timeout - (time.monotonic() - committed)
        if left > 0:
            self._timer = self.loop.call_later(left, self._expire)
            return
        self.behind = True
        self.shown.set_result(None)

    def cancel(self) -> None:
        """Also drops the timer's hold on this object (a cancelled handle lets go of
        its callback), whether it ran or not."""
        self._timer.cancel()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _views_behind(written: Written[T]) -> Written[T]:
    logger.warning("stored at position %s; the views had not caught up in time", written.position)
    return Written(written.value, written.position, views_current=False)
