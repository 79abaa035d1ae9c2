"""The agent's journal: append-only events, folded into the state the agent runs on."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
from eventsourcing.persistence import IntegrityError

from muto.agent.journal.events import Event, JournalEvent
from muto.agent.journal.fold import evolve
from muto.agent.journal.state import JournalState
from muto.agent.journal.store import (
    SQLITE_CORRUPT,
    SQLITE_NOTADB,
    RecordStore,
    sqlite_code,
    sqlite_error,
)
from muto.trust.files import PRIVATE_FILE_MODE, private_dir, private_file

SNAPSHOT_EVERY = 500
# v2: JournalState.release_digests; v3: Running.sequence, JournalState.restate, and a
# running release's failures judged under the revision it runs under.
SNAPSHOT_TOPIC = "muto.agent.journal-state.v3"
# Snapshots of an older state shape: ignored on start (the journal is replayed instead)
# and by `journal verify`, which would otherwise see them differ from the replay.
PAST_SNAPSHOT_TOPICS = frozenset({"muto.agent.journal-state.v1", "muto.agent.journal-state.v2"})
DB_NAME = "journal.db"
LOCK_NAME = "journal.lock"


class Entry(msgspec.Struct, frozen=True):
    chain: str  # sha256(previous chain + event bytes): any edit breaks every later link
    event: msgspec.Raw


@dataclass(frozen=True)
class Record:
    position: int
    chain: str
    event: Event
    raw: bytes  # the event exactly as stored


_ENCODER = msgspec.json.Encoder()
_EVENT = msgspec.json.Decoder(JournalEvent)
_ENTRY = msgspec.json.Decoder(Entry)
_STATE = msgspec.json.Decoder(JournalState)


class JournalLocked(Exception):
    """Another agent already writes this data dir's journal."""


class JournalUnreadable(Exception):
    """The journal file cannot be read: damaged (SQLite finds it corrupt or not a
    database, or a record does not decode), or refused by the file system. The message
    names the file and, for damage, the way out (docs/agent.md, "The journal")."""

    def __init__(self, path: Path, reason: str, damaged: bool) -> None:
        self.path, self.reason, self.damaged = path, reason, damaged
        if damaged:
            message = (
                f"journal {path} is damaged ({reason}): move it and its -wal and -shm "
                'files aside to start a new journal (docs/agent.md, "The journal")'
            )
        else:
            message = f"journal {path} cannot be read ({reason})"
        super().__init__(message)


def link(chain: str, raw: bytes) -> str:
    return hashlib.sha256(chain.encode() + raw).hexdigest()


def decode_record(position: int, stored: bytes) -> Record:
    entry = _ENTRY.decode(stored)
    raw = bytes(entry.event)
    return Record(position, entry.chain, _EVENT.decode(raw), raw)


def fold_records(records: Iterable[Record], state: JournalState | None = None) -> JournalState:
    state = state if state is not None else JournalState()
    for record in records:
        state.position, state.chain = record.position, record.chain
        evolve(state, record.event)
    return state


class Journal:
    """Invariants:
    - append-only: positions run 1..N without gaps and a record never changes;
    - `append(*events)` stores all of them in one transaction, committed before it
      returns, and only then folds them into `state`: a failed write changes nothing;
    - `state` equals folding every record from the start; snapshots are a cache of it
      (one that does not decode is ignored and the records are replayed instead);
    - one writer per data dir: an exclusive lock is held while a writable journal is open.
    """

    def __init__(
        self,
        store: RecordStore,
        lock_fd: int | None = None,
        writable: bool = True,
        snapshot_every: int = SNAPSHOT_EVERY,
        fold: bool = True,
        path: Path | None = None,
    ) -> None:
        self._store = store
        self.path = path  # the SQLite file (None: in memory)
        self.snapshot_every = snapshot_every
        self._lock_fd = lock_fd
        self._writable = writable
        # replayed: records after the snapshot. fold=False: the records only (verify).
        self.state, self.replayed = self._load(None) if fold else (JournalState(), 0)
        self._snapshot_at = self.state.position - self.replayed

    @classmethod
    def open(cls, data_dir: Path) -> Journal:
        private_dir(data_dir)
        fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalLocked(f"{data_dir} is in use by another agent") from None
        try:
            path = private_file(data_dir / DB_NAME)
            return _opened(path, lambda: RecordStore.sqlite(path), lambda s: cls(s, fd, path=path))
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def read_only(cls, data_dir: Path, fold: bool = True) -> Journal:
        """For inspection while an agent may be running: never writes, takes no lock.
        fold=False reads no record yet (`journal verify` judges them one by one)."""
        path = data_dir / DB_NAME
        return _opened(
            path,
            lambda: RecordStore.sqlite(path, create=False),
            lambda s: cls(s, writable=False, fold=fold, path=path),
        )

    @classmethod
    def memory(cls, snapshot_every: int = SNAPSHOT_EVERY) -> Journal:
        return cls(RecordStore.memory(), snapshot_every=snapshot_every)

    def append(self, *events: Event) -> int:
        """Store `events` atomically and fold them in; returns the last position."""
        if not self._writable:
            raise PermissionError("this journal was opened read-only")
        position, chain = self.state.position, self.state.chain
        rows, folded = [], []
        for event in events:
            raw = _ENCODER.encode(event)
            position += 1
            chain = link(chain, raw)
            rows.append(
                (
                    position,
                    type(event).__name__,
                    b'{"chain":"%s","event":%s}' % (chain.encode(), raw),
                )
            )
            # Fold what was stored, decoded: live state equals replayed state to the byte
            # (an int in a float field, say, comes back as a float on replay).
            folded.append(Record(position, chain, _EVENT.decode(raw), raw))
        if rows:
            self._store.insert(rows)
            fold_records(folded, self.state)
            if position - self._snapshot_at >= self.snapshot_every:
                self.snapshot()
        return position

    def records(self, after: int = 0, upto: int | None = None) -> Iterator[Record]:
        for position, stored in self.stored(after, upto):
            yield decode_record(position, stored)

    def stored(self, after: int = 0, upto: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(position, stored bytes), undecoded: for `journal verify`."""
        yield from self._store.select(after, upto)

    def state_at(self, position: int) -> JournalState:
        """The derived state right after `position` (0: before anything happened)."""
        return self._load(position)[0]

    def snapshot(self) -> None:
        if self._writable and self.state.position > self._snapshot_at:
            # One there already (an undecodable one we ignored on start): keep it.
            with contextlib.suppress(IntegrityError):
                self._store.put_snapshot(
                    self.state.position, SNAPSHOT_TOPIC, _ENCODER.encode(self.state)
                )
            self._snapshot_at = self.state.position

    def snapshots(self) -> list[tuple[int, JournalState | None]]:
        """Every stored snapshot, decoded (None: undecodable), for `journal verify`."""
        return [
            (s.originator_version, _decode_state(s.topic, s.state))
            for s in self._store.snapshots()
            if s.topic not in PAST_SNAPSHOT_TOPICS
        ]

    def last_position(self) -> int:
        return self._store.last_position()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.snapshot()
        self._store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _load(self, upto: int | None) -> tuple[JournalState, int]:
        snap = self._store.snapshot(upto)
        state = _decode_state(snap.topic, snap.state) if snap else None
        start = state.position if state else 0
        loaded = fold_records(self.records(start, upto), state)
        return loaded, loaded.position - start


def _opened(
    path: Path, store: Callable[[], RecordStore], journal: Callable[[RecordStore], Journal]
) -> Journal:
    """The journal on `path`. Opening reads it (from the newest snapshot): SQLite's
    errors and a record that does not decode become JournalUnreadable, naming the file."""
    opened: RecordStore | None = None
    try:
        opened = store()
        return journal(opened)
    except Exception as exc:
        if opened is not None:
            with contextlib.suppress(Exception):
                opened.close()
        unreadable = _unreadable(path, exc)
        if unreadable is None:
            raise
        raise unreadable from exc


def _unreadable(path: Path, exc: BaseException) -> JournalUnreadable | None:
    """`exc` as a JournalUnreadable for `path`, or None when it is not about the file."""
    if isinstance(exc, (msgspec.DecodeError, msgspec.ValidationError)):
        return JournalUnreadable(path, f"a record does not decode: {exc}", damaged=True)
    found = sqlite_error(exc)
    if found is None:
        return None
    damaged = sqlite_code(exc) in (SQLITE_CORRUPT, SQLITE_NOTADB)
    return JournalUnreadable(path, str(found), damaged)


def _decode_state(topic: str, data: bytes) -> JournalState | None:
    if topic != SNAPSHOT_TOPIC:
        return None
    try:
        return _STATE.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
