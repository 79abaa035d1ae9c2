"""Catch-up loop: follows the event log and keeps every projection current.

SQLite has no subscriptions (the library's ProjectionRunner needs them), so this loop
pulls `select_notifications` after the lowest recorded position; the same loop serves
PostgreSQL. Each batch of notifications is decoded once and applied to every projection
that has not yet seen it, projection by projection (all of a batch's events to one view,
then the next view; `apply_batch` takes them at once), in one transaction with their
new positions. A view is given only the event types it `reads` (base.py).

Invariants:
- a projection sees every event exactly once, in log order (position recorded in the
  same transaction as its rows; a replay of the same position raises IntegrityError);
- after `catch_up_to(p)` returns, every projection reflects positions <= p
  (read-your-writes for the API);
- `rebuild(name)` from position 0 gives exactly the rows that incremental updates gave.

A projection whose class sets `reads_records = True` is given the stored record (the
`Notification`: id, originator id and version, topic, state bytes) instead of the decoded
event: the audit hash chain must hash exactly what is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import sqlalchemy.exc
from eventsourcing.persistence import IntegrityError, Notification

from muto.projections.base import Projection, event_type
from muto.projections.source import EventSource
from muto.projections.store import ViewStore

BATCH = 2000
logger = logging.getLogger("muto.projections")


class ProjectionRunner:
    def __init__(
        self, log: EventSource, store: ViewStore, projections: Sequence[Projection]
    ) -> None:
        self.log = log
        self.store = store
        self.projections = {p.name: p for p in projections}
        self._reads = {p.name: p.reads for p in projections}  # None: every event
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.processed = 0
        # (monotonic time of the first failure, last error) while catch-ups keep failing.
        self.failing: tuple[float, str] | None = None
        self.turns = 0  # turns of the background thread taken (for tests: a counted pass)
        self._reached = 0  # every projection has processed at least this position
        self._wake = threading.Event()  # work may be waiting: run a step now
        # The highest position a wake asked for (a write of this process, a waiter): a
        # wake for a position already reached takes no step: a step found nothing
        # there, but still read the log to be sure (every batch of re-delivered
        # reports, which stores nothing, woke one); records of other processes are
        # found by the periodic look (`start`) or by the next run with a hole.
        self._wanted = 0
        self._wants = threading.Lock()  # wakes come from any thread
        self._progress = threading.Condition()  # notified whenever _reached moves
        # Request handlers waiting for a position: resolved from the projector thread.
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    # -- positions --------------------------------------------------------------------

    def positions(self) -> dict[str, int]:
        """Each projection's position, in one query (a query each was ~1.6 ms on SQLite
        for seven projections: most of a /healthz probe and of a scrape's positions)."""
        with self.store.reading() as session:
            return self.store.positions(session, self.projections)

    def position(self) -> int:
        """The position every projection has reached."""
        return min(self.positions().values(), default=0)

    def lag(self) -> int:
        return max(0, self.log.position() - self.position())

    # -- catching up ------------------------------------------------------------------

    def catch_up(
        self, limit: int = BATCH, until: int | None = None, wanted: int | None = None
    ) -> int:
        """Process everything available, or only up to position `until` (a replay of
        the views as they stood then); returns the number of notifications read.
        `wanted`: the position this catch-up is for (a write of this process, a
        waiter); if another process's projector has taken the views there already,
        nothing more is done here (see `_apply_batch`)."""
        total = 0
        with self._lock:
            try:
                # A short batch is the end of the log as read: the step that would find
                # nothing (a write transaction and a query, each wake) is not taken. A
                # record stored after the read wakes the background thread again.
                while (n := self._step(limit, until, wanted)) > 0:
                    total += n
                    wanted = None
                    if n < limit:
                        break
            except Exception as exc:
                since = self.failing[0] if self.failing else time.monotonic()
                self.failing = (since, f"{type(exc).__name__}: {exc}")
                raise
            self.failing = None
        return total

    def failing_for(self) -> tuple[float, str] | None:
        """How long every catch-up has failed, in seconds, and the last error; None
        after one that did not fail. A view that fails on an event fails on every pass
        while its lag may stay small: readiness asks this, not only the lag."""
        failing = self.failing
        return None if failing is None else (time.monotonic() - failing[0], failing[1])

    def catch_up_to(self, position: int | None, timeout: float = 10.0) -> None:
        """Return once every projection has processed `position` (read-your-writes).

        With the background thread running, a caller only wakes it and waits: one step
        then serves every waiting request (under load, many writes per batch instead of
        a step per request). Without it, the caller catches up itself."""
        if position is None or self._reached >= position:
            return
        deadline = time.monotonic() + timeout
        background = self._thread is not None and self._thread.is_alive()
        while self._reached < position:
            if time.monotonic() > deadline:
                raise TimeoutError(f"projections at {self._reached}, waited for {position}")
            if background:
                self._want(position)
                with self._progress:
                    self._progress.wait_for(lambda: self._reached >= position, timeout=0.05)
            else:
                self.catch_up()
                if self._reached < position:
                    time.sleep(0.01)  # another process's projector holds the lock

    def _step(self, limit: int, until: int | None = None, wanted: int | None = None) -> int:
        """One batch; 0 when there is nothing to do, or when another process's projector
        applied part of the batch first (SQLite has no projector lock: the loser's
        transaction fails on a unique position and rolls back; the caller tries again
        from the positions as they now stand)."""
        try:
            return self._apply_batch(limit, until, wanted)
        except (IntegrityError, sqlalchemy.exc.IntegrityError):
            for projection in self.projections.values():
                projection.discard()
            if self.store.is_postgres:
                raise  # projectors take turns there: this is not a lost race
            logger.info("another projector applied this batch first; reading positions again")
            return 0
        except BaseException:
            for projection in self.projections.values():
                projection.discard()
            raise

    def _apply_batch(self, limit: int, until: int | None, wanted: int | None = None) -> int:
        with self.store.writing() as session:
            # Read positions inside the (locked) transaction: another projector may
            # have moved them since we last looked.
            positions = self.store.positions(session, self.projections)
            start = min(positions.values(), default=0)
            if wanted is not None and start >= wanted:
                # Another process's projector showed what this step was for while it
                # waited for the lock. What it has not shown yet is theirs to show:
                # with API processes behind round-robin, each projecting the other's
                # latest few records as well made every step a small one (half of
                # each process's CPU went to projecting, a step's fixed cost each).
                self._advance_to(start)
                return 0
            notifications = self._select(start, limit, until)
            if not notifications:
                self._advance_to(start)
                return 0
            last = notifications[-1].id
            events = [self.log.decode(n) for n in notifications]  # decoded once for all
            kinds = [event_type(e) for e in events]
            batch = _Batch(notifications, events, kinds)
            behind = {name: at for name, at in positions.items() if last > at}
            for name, at in behind.items():
                _apply(self.projections[name], session, batch, at, self._reads[name])
            for name in behind:
                self.projections[name].flush(session)
            self.store.advance(session, behind, last)
            if self.store.is_postgres:
                self.store.announce(session, self._changes())
            for projection in self.projections.values():
                projection.committing()
        for projection in self.projections.values():
            projection.committed()
        self.processed += len(notifications)
        self._advance_to(last)
        return len(notifications)

    def _changes(self) -> list[str]:
        return [
            f"{announcer.topic} {key}"
            for projection in self.projections.values()
            for announcer in projection.announcers
            for key in announcer.pending
        ]

    def _advance_to(self, position: int) -> None:
        if position <= self._reached:
            return
        with self._progress:
            self._reached = position
            self._progress.notify_all()
            due = [w for w in self._waiters if w[0] <= position]
            self._waiters = [w for w in self._waiters if w[0] > position]
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for _, loop, future in due:
            by_loop.setdefault(loop, []).append(future)
        for loop, futures in by_loop.items():  # one wake-up of each loop per batch
            with contextlib.suppress(RuntimeError):  # its loop closed: nobody waits there
                loop.call_soon_threadsafe(_resolve_all, futures)

    def following(self) -> bool:
        """Whether the background thread runs (then waiters are resolved by it)."""
        return self._thread is not None and self._thread.is_alive()

    def resolve_at(
        self, position: int, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]
    ) -> None:
        """Resolve `future` on `loop` once every projection has processed `position`;
        callable from any thread (the writer's, right after its commit: the request then
        wakes once, when its views show the write). Needs the background thread."""
        with self._progress:
            waiting = self._reached < position
            if waiting:
                self._waiters.append((position, loop, future))
        if waiting:
            self._want(position)
        else:
            loop.call_soon_threadsafe(_resolve_all, [future])

    async def reach(self, position: int | None, timeout: float = 10.0) -> None:
        """Async `catch_up_to`, for request handlers (read-your-writes): with the
        background thread running, an awaited future, not a parked thread."""
        if position is None or self._reached >= position:
            return
        if self._thread is None or not self._thread.is_alive():
            await asyncio.to_thread(self.catch_up_to, position, timeout)
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._progress:
            if self._reached >= position:
                return
            self._waiters.append((position, loop, future))
        self._want(position)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(f"projections at {self._reached}, waited for {position}") from None

    def _select(self, start: int, limit: int, stop: int | None = None) -> Sequence[Any]:
        # eventsourcing_sqlalchemy keeps the current transaction in one ContextVar that
        # every datastore shares: inside the view store's transaction the event recorder
        # would run its query on the views' session (another database on SQLite). An
        # empty context makes it open a transaction of its own on the event store.
        return contextvars.Context().run(self.log.select, start, limit, stop)

    def rebuild(self, name: str) -> None:
        """Drop one projection's rows and position, then replay it from the start."""
        projection = self.projections[name]
        with self._lock, self.store.writing() as session:
            projection.clear(session)
            self.store.forget_position(session, name)
        self.catch_up()

    # -- background -------------------------------------------------------------------

    def start(
        self, interval: float = 0.1, follow: Callable[[], bool] | None = lambda: True
    ) -> None:
        """Catch up at once when a writer or a waiting reader wakes the thread, and
        every `interval` while `follow()` says this process follows the log (the
        projector duty: one process of a deployment). Without `follow`, only on
        demand (an API process projects its own writes, for read-your-writes)."""

        def loop() -> None:
            while not self._stop.is_set():
                woken = self._wake.wait(interval)
                if woken:  # cleared only when seen: a wake that lands just after a wait
                    self._wake.clear()  # timed out stays set for the next turn
                with self._wants:
                    wanted = self._wanted
                try:
                    # Woken: only for a position not shown yet. Timed out: the process
                    # that follows the log (it holds the duty's lease) looks for other
                    # processes' records, and steps only if there are any.
                    if woken:
                        due = wanted > self._reached
                    else:
                        due = follow is not None and follow() and self.behind()
                    if due:
                        self.catch_up(wanted=wanted if woken else None)
                except Exception:  # logged, retried next tick
                    logger.exception("catch-up failed")
                self.turns += 1

        self._thread = threading.Thread(target=loop, name="muto-projections", daemon=True)
        self._thread.start()

    def behind(self) -> bool:
        """Whether the log holds records past what the views showed when this process
        last looked: one query, where a step that finds nothing is a write transaction
        and three more (on PostgreSQL, ten of those a second took an idle server from
        ~2.2 to ~2.9 % of a core). The views only move forward outside `rebuild`, which
        catches up itself."""
        return self.log.position() > self._reached

    def wake(self, position: int | None) -> None:
        """New events were saved, up to `position` (the writer calls this after each
        commit; None: it has stored nothing yet): project them now."""
        self._want(position)

    def _want(self, position: int | None) -> None:
        with self._wants:
            if position is not None and position > self._wanted:
                self._wanted = position
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()


class _Batch(NamedTuple):
    notifications: Sequence[Notification]
    events: Sequence[Any]  # decoded, one per notification
    kinds: Sequence[str]  # each event's type (`event_type`)


def _apply(
    projection: Projection,
    session: Any,
    batch: _Batch,
    seen: int,
    reads: frozenset[str] | None,
) -> None:
    """Give one projection the batch's events after `seen` that it reads, in log order:
    all at once to a projection that defines `apply_batch(session, [(event, position),
    ...])` (it may then read and write each row once per batch instead of once per
    event), else one by one to `apply`."""
    notifications = batch.notifications
    subjects = notifications if getattr(projection, "reads_records", False) else batch.events
    if reads is None:
        items = [(subject, n.id) for subject, n in zip(subjects, notifications, strict=True)]
        if seen >= notifications[0].id:
            items = [item for item in items if item[1] > seen]
    else:
        items = [
            (subject, n.id)
            for subject, n, kind in zip(subjects, notifications, batch.kinds, strict=True)
            if kind in reads and n.id > seen
        ]
    apply_batch: Callable[[Any, list[tuple[Any, int]]], None] | None = getattr(
        projection, "apply_batch", None
    )
    if apply_batch is not None:
        apply_batch(session, items)
        return
    for subject, position in items:
        projection.apply(session, subject, position)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _resolve_all(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        _resolve(future)
