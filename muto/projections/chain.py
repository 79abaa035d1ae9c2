"""Audit hash chain: one link per stored event, each link's hash covering the previous.

    hash(n) = sha256(hash(n-1) || canonical(record n)),  hash(0) = 32 zero bytes

`canonical` frames the stored record's columns exactly as they are stored (notification
id, originator id, originator version, topic, state bytes), each with its length, so no
two different records share canonical bytes. The chain is kept by the projector in the
same transaction as its position; `muto audit verify` recomputes it from the raw event
table and names the first position where the two disagree.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from typing import Protocol, cast
from uuid import UUID

from eventsourcing.persistence import IntegrityError
from sqlalchemy import Column, MetaData, String, Table, select
from sqlalchemy.orm import Session

from muto.projections.base import LogPosition, Projection, Update, id_text
from muto.projections.rows import DriverInsert

GENESIS = bytes(32)


class StoredRecord(Protocol):
    """What the event table holds for one event (eventsourcing's `Notification`)."""

    @property
    def id(self) -> int: ...
    @property
    def originator_id(self) -> UUID | str: ...
    @property
    def originator_version(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def state(self) -> bytes: ...


def canonical(record: StoredRecord) -> bytes:
    position = b"%d" % record.id
    originator = id_text(record.originator_id).encode()
    version = b"%d" % record.originator_version
    topic = record.topic.encode()
    state = record.state  # bytes, or a memoryview of them: joined as they are
    return b"".join(
        (
            _length(len(position)), position,
            _length(len(originator)), originator,
            _length(len(version)), version,
            _length(len(topic)), topic,
            _length(memoryview(state).nbytes), state,
        )
    )  # fmt: skip


_length = struct.Struct(">Q").pack  # each field's length, 8 bytes big-endian


def link(previous: bytes, record: StoredRecord) -> bytes:
    digest = hashlib.sha256(previous)
    digest.update(canonical(record))
    return digest.digest()


class HashChain(Projection):
    name = "audit_chain"
    reads_records = True  # the runner hands over stored records, not decoded events

    def __init__(self, metadata: MetaData) -> None:
        super().__init__(metadata)
        # The last link this projection wrote and the transaction it wrote it in. Inside
        # that transaction no one else adds links (the projector holds the lock), so the
        # head is read once per batch, not once per event.
        self._written: tuple[object, int, bytes] | None = None
        self._pending: list[tuple[int, str]] = []  # links written at flush, in one go
        # The last link this process committed. A link's hash is a function of the log
        # up to its position, so it is the head for a batch that starts right after it:
        # the batch's first record follows the chain's position, which is then this one
        # (a gap in the log's ids, or another projector's links, read the head instead).
        self._committed: tuple[int, bytes] | None = None

    def define(self, metadata: MetaData) -> list[Table]:
        self.links = Table(
            "view_audit_chain",
            metadata,
            Column("position", LogPosition, primary_key=True, autoincrement=False),
            Column("hash", String(64), nullable=False),
        )
        self._insert = DriverInsert(self.links)
        return [self.links]

    @property
    def updates(self) -> Mapping[str, Update]:
        return {}

    def head(self, session: Session) -> tuple[int, bytes]:
        """The last link: (position, hash), or (0, GENESIS) for an empty chain."""
        t = self.links
        found = session.execute(
            select(t.c.position, t.c.hash).order_by(t.c.position.desc()).limit(1)
        ).first()
        return (0, GENESIS) if found is None else (found.position, bytes.fromhex(found.hash))

    def apply(self, session: Session, event: object, position: int) -> None:
        transaction = session.get_transaction()
        if self._written is not None and self._written[0] is transaction:
            _, head, previous = self._written
        elif self._committed is not None and position == self._committed[0] + 1:
            head, previous = self._committed
        else:
            head, previous = self.head(session)
        if position <= head:  # links only ever extend the chain
            raise IntegrityError(f"position {position} is already chained (head {head})")
        record = cast(StoredRecord, event)  # reads_records: the runner passes the record
        digest = link(previous, record)
        self._pending.append((position, digest.hex()))
        self._written = (transaction, position, digest)

    def flush(self, session: Session) -> None:
        if self._pending:
            self._insert.execute(session, self._pending)
            self._pending = []

    def committed(self) -> None:
        if self._written is not None:
            self._committed = self._written[1:]
        self._written = None
        super().committed()

    def discard(self) -> None:
        """The batch rolled back: its links were never stored, and the head is the
        stored one again."""
        self._pending = []
        self._written = None

    def clear(self, session: Session) -> None:
        super().clear(session)
        self._committed = None
