"""`journal verify`: positions without gaps, every record decodes, the hash chain links,
and every snapshot equals the state replayed up to its position."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from muto.agent.journal.journal import Journal, decode_record, fold_records, link
from muto.agent.journal.state import GENESIS, JournalState
from muto.agent.journal.store import sqlite_error


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
        damage = sqlite_error(exc)
        if damage is None:
            raise
        where = journal.path or "the journal"
        found.problems.append(f"{where} is damaged ({damage}) after {found.events} events")
    return found


def _check(journal: Journal, found: Verification) -> None:
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
        chain = link(chain, record.raw)
        if record.chain != chain:
            found.problems.append(f"position {position}: chain broken (edited or reordered)")
            chain = record.chain  # judge the records after it on their own links
        fold_records([record], state)
        if position in snapshots:
            _compare_snapshot(found, position, snapshots[position], state)
    for position in sorted(p for p in snapshots if p >= expected):
        found.problems.append(f"snapshot at {position} is past the last event ({expected - 1})")


def _compare_snapshot(
    found: Verification, position: int, snapshot: JournalState | None, state: JournalState
) -> None:
    if snapshot is None:
        found.problems.append(f"snapshot at {position} does not decode (ignored on start)")
    elif msgspec.json.encode(snapshot) != msgspec.json.encode(state):
        found.problems.append(f"snapshot at {position} differs from the replayed state")
