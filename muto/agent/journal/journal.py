"""The agent's journal: append-only events, folded into the state the agent runs on."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import zlib
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
    out_of_space,
    sqlite_code,
    sqlite_error,
)
from muto.trust.files import PRIVATE_FILE_MODE, private_dir, private_file

SNAPSHOT_EVERY = 500
# v2: JournalState.release_digests; v3: Running.sequence, JournalState.restate, and a
# running release's failures judged under the revision it runs under; v4: a rejection
# keeps no ETag (JournalState.rejected), blocked applies condemn nothing; v5: a planned
# stop (AgentStopped) ends the step in flight (a v4 snapshot taken at a stop kept it);
# v6: stopping the runtime keeps `halted` (a failed rollback's RuntimeStopped cleared
# it), and a rollback target refused for want of disk stays known good, the rollback
# due (RollbackDue.blocked).
SNAPSHOT_TOPIC = "muto.agent.journal-state.v6"
# Snapshots of an older state shape: ignored on start (the journal is replayed instead)
# and by `journal verify`, which would otherwise see them differ from the replay.
PAST_SNAPSHOT_TOPICS = frozenset({f"muto.agent.journal-state.v{n}" for n in (1, 2, 3, 4, 5)})
DB_NAME = "journal.db"
LOCK_NAME = "journal.lock"

logger = logging.getLogger(__name__)


class Entry(msgspec.Struct, frozen=True):
    chain: str  # sha256(previous chain + event bytes): any edit breaks every later link
    event: msgspec.Raw


@dataclass(frozen=True)
class Head:
    """The last position committed and its chain link, in a file beside the database
    (`journal.db-head`), overwritten in place after each commit. SQLite takes a WAL frame
    that fails its checksum (one bad byte) for the end of the log and silently drops every
    commit after it: a head further than the journal is how that loss shows.

    Written after the commit is on disk and never fsynced: a power cut can leave it older
    than the journal, or torn (its CRC then fails and it is ignored), never ahead of it.
    One fixed-size line rewritten in place costs ~4 µs; a temporary file renamed over it
    cost 100-1,000 µs on ext4 (which flushes a file renamed over another), as much as
    the commit itself."""

    position: int
    chain: str

    def line(self) -> bytes:
        body = b"%020d %s" % (self.position, self.chain.encode())
        return b"%s %08x\n" % (body, zlib.crc32(body))

    @classmethod
    def parse(cls, line: bytes) -> Head:
        body, _, crc = line.removesuffix(b"\n").rpartition(b" ")
        position, _, chain = body.partition(b" ")
        try:
            if len(line) == HEAD_BYTES and int(crc, 16) == zlib.crc32(body) and int(position):
                return cls(int(position), chain.decode())
        except ValueError:
            pass
        raise ValueError(f"not a journal head (torn?): {line!r}")


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
HEAD_BYTES = 95  # a 20-digit position, a 64-hex-digit chain link, an 8-hex-digit CRC


class JournalLocked(Exception):
    """Another agent already writes this data dir's journal."""


class JournalUnreadable(Exception):
    """The journal file cannot be read: damaged (SQLite finds it corrupt or not a
    database, a record does not decode, or it lost records committed before: see Head),
    or refused by the file system (`full`: the disk is full, the file is fine). The
    message names the file and the way out (docs/agent.md, "The journal")."""

    def __init__(self, path: Path, reason: str, damaged: bool, full: bool = False) -> None:
        self.path, self.reason, self.damaged, self.full = path, reason, damaged, full
        if damaged:
            message = (
                f"journal {path} is damaged ({reason}): move it and its -wal and -shm "
                'files aside to start a new journal (docs/agent.md, "The journal")'
            )
        elif full:
            message = (
                f"the disk holding {path} is full (INSUFFICIENT_DISK): free space; "
                f"the journal is not damaged ({reason})"
            )
        else:
            message = f"journal {path} cannot be read ({reason})"
        super().__init__(message)


def link(chain: str, raw: bytes) -> str:
    return hashlib.sha256(chain.encode() + raw).hexdigest()


def decode_record(position: int, stored: bytes) -> Record:
    """A stored record; msgspec.DecodeError for one that does not decode, whatever byte
    was damaged (a bad UTF-8 byte in a string surfaces as UnicodeDecodeError)."""
    try:
        entry = _ENTRY.decode(stored)
        raw = bytes(entry.event)
        return Record(position, entry.chain, _EVENT.decode(raw), raw)
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(f"not UTF-8: {exc}") from None


def head_path(db: Path) -> Path:
    return db.with_name(f"{db.name}-head")


def read_head(db: Path) -> Head | None:
    """The head written beside `db` after its last commit; None if there is none yet or
    it cannot be read (torn by a power cut: it only ever lags the journal, no finding)."""
    try:
        return Head.parse(head_path(db).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("journal head %s ignored (unreadable: %s)", head_path(db), exc)
        return None


def lost(head: Head | None, last: int, chain: str | None) -> str | None:
    """What a journal whose last position is `last`, with link `chain` at the head's
    position (None: no record there), lost of what `head` says was committed; None: nothing."""
    if head is None:
        return None
    if head.position > last:
        return f"the journal ends at position {last} but position {head.position} was committed"
    if chain != head.chain:
        return f"the record at position {head.position} is not the one committed there"
    return None


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
        self._head = head_path(path) if path is not None and writable else None
        self._head_failing = False  # logged once until a head is written again
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
            path = data_dir / DB_NAME
            if not path.exists():
                _forget_head(path)
            elif head_path(path).exists():
                # Judged read-only first: a writer's connection would checkpoint what is
                # left of a damaged WAL into the file on close and delete the rest.
                _opened(
                    path,
                    lambda: RecordStore.sqlite(path, create=False),
                    lambda s: cls(s, writable=False, fold=False, path=path)._whole(),
                ).close()
            private_file(path)
            return _opened(
                path, lambda: RecordStore.sqlite(path), lambda s: cls(s, fd, path=path)._whole()
            )
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
            self._mark_head()
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

    def head(self) -> Head | None:
        """The head written beside the file after its last commit (see Head)."""
        return read_head(self.path) if self.path is not None else None

    def lost_tail(self) -> str | None:
        """What its head says this journal lost of what was committed, if anything: read
        from the stored records (the last position, the link at the head's), so a
        journal opened without folding (start-up's read-only look) can tell too."""
        head = self.head()
        if head is None:
            return None
        at = head.position
        try:
            chain = next((r.chain for r in self.records(at - 1, at)), None)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return f"the record at position {at} does not decode: {exc}"
        return lost(head, self.last_position(), chain)

    def _whole(self) -> Journal:
        """This journal, unless its head says it lost records that were committed."""
        missing = self.lost_tail()
        if missing is not None and self.path is not None:
            raise JournalUnreadable(self.path, missing, damaged=True)
        return self

    def _mark_head(self) -> None:
        """Write the head beside the file (see Head). A failure (a full disk) leaves the
        old head, which lags: the commit stands, so this never fails an append."""
        if self._head is None:
            return
        try:
            fd = os.open(self._head, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE)
            try:
                os.pwrite(fd, Head(self.state.position, self.state.chain).line(), 0)
            finally:
                os.close(fd)
        except OSError as exc:
            if not self._head_failing:
                logger.warning("journal head %s not written (it lags): %s", self._head, exc)
            self._head_failing = True
        else:
            self._head_failing = False

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
        found = unreadable(path, exc)
        if found is None:
            raise
        raise found from exc


def unreadable(path: Path, exc: BaseException) -> JournalUnreadable | None:
    """`exc` as a JournalUnreadable for `path`, or None when it is not about the file."""
    if isinstance(exc, (msgspec.DecodeError, msgspec.ValidationError)):
        return JournalUnreadable(path, f"a record does not decode: {exc}", damaged=True)
    found = sqlite_error(exc)
    if found is None:
        return None
    if out_of_space(exc, path.parent):
        return JournalUnreadable(path, str(found), damaged=False, full=True)
    damaged = sqlite_code(exc) in (SQLITE_CORRUPT, SQLITE_NOTADB)
    return JournalUnreadable(path, str(found), damaged)


def _forget_head(db: Path) -> None:
    """A new journal (the old one moved aside, as docs/agent.md says): the head left
    beside it was the old journal's."""
    head = head_path(db)
    with contextlib.suppress(FileNotFoundError):
        old = head.read_bytes()
        head.unlink()
        logger.warning("journal %s is new: removed the head of the one before it (%r)", db, old)


def _decode_state(topic: str, data: bytes) -> JournalState | None:
    if topic != SNAPSHOT_TOPIC:
        return None
    try:
        return _STATE.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
