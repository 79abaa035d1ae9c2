"""`journal verify`: positions without gaps, every record decodes, the hash chain links,
every snapshot equals the state replayed up to its position, and nothing the journal's
head says was committed is missing (journal.Head)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from muto.agent.journal.journal import (
    DB_NAME,
    Journal,
    decode_record,
    fold_records,
    link,
    lost,
    unreadable,
)
from muto.agent.journal.state import GENESIS, JournalState


@dataclass
class Verification:
    events: int = 0
    snapshots: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(journal: Journal) -> Verification:
    found = Verification()
    try:
        _check(journal, found)
    except Exception as exc:  # SQLite met a damaged page: what was read so far stands
        failed = unreadable(journal.path or Path(DB_NAME), exc)
        if failed is None:
            raise
        if failed.full:  # not the journal's fault: say so, not "damaged"
            found.problems.append(str(failed))
        else:
            where = journal.path or "the journal"
            found.problems.append(
                f"{where} is damaged ({failed.reason}) after {found.events} events"
            )
    return found


def _check(journal: Journal, found: Verification) -> None:
    # Read before the records: written after each commit, it cannot be ahead of them.
    head = journal.head()
    at_head: str | None = None
    snapshots = dict(journal.snapshots())
    found.snapshots = len(snapshots)
    state, chain, expected = JournalState(), GENESIS, 1
    for position, stored in journal.stored():
        found.events += 1
        if position != expected:
            found.problems.append(f"position {position}: expected {expected} (a gap)")
        expected = position + 1
        try:
            record = decode_record(position, stored)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            found.problems.append(f"position {position}: does not decode: {exc}")
            continue
        if head is not None and position == head.position:
            at_head = record.chain
        chain = link(chain, record.raw)
        if record.chain != chain:
            found.problems.append(f"position {position}: chain broken (edited or reordered)")
            chain = record.chain  # judge the records after it on their own links
        fold_records([record], state)
        if position in snapshots:
            _compare_snapshot(found, position, snapshots[position], state)
    for position in sorted(p for p in snapshots if p >= expected):
        found.problems.append(f"snapshot at {position} is past the last event ({expected - 1})")
    missing = lost(head, expected - 1, at_head)
    if missing is not None:
        found.problems.append(f"{journal.path or 'the journal'}: {missing}")


def _compare_snapshot(
    found: Verification, position: int, snapshot: JournalState | None, state: JournalState
) -> None:
    if snapshot is None:
        found.problems.append(f"snapshot at {position} does not decode (ignored on start)")
    elif msgspec.json.encode(snapshot) != msgspec.json.encode(state):
        found.problems.append(f"snapshot at {position} differs from the replayed state")
