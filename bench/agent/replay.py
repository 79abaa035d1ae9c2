"""Journal replay: a 100,000-event journal left as a killed agent leaves it; start-up,
full replay and the sqlite3 baseline."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import tempfile
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from bench import timed
from bench.agent.common import EVENTS, SNAPSHOT_TAIL, median_s
from bench.agent.life import life
from muto.agent.journal import Journal, JournalState
from muto.agent.journal.journal import fold_records
from muto.agent.journal.store import JOURNAL_ID


def write_journal(data_dir: Path) -> None:
    """Append EVENTS events and exit without closing, as a killed agent would: the last
    SNAPSHOT_TAIL events are after the newest snapshot. Runs in a child process."""
    journal = Journal.open(data_dir)
    events = life()
    head = EVENTS - SNAPSHOT_TAIL
    first = head % 500 or 500
    journal.append(*islice(events, first))
    while journal.state.position < head:
        journal.append(*islice(events, 500))
    journal.append(*islice(events, SNAPSHOT_TAIL))
    assert journal.state.position == EVENTS
    os._exit(0)  # no close(): close() would snapshot


def raw_rows(db: Path) -> int:
    """Baseline: the same rows read with sqlite3 alone, no decoding."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        query = (
            "SELECT originator_version, state FROM stored_events "
            "WHERE originator_id = ? ORDER BY originator_version"
        )
        return sum(1 for _ in connection.execute(query, (JOURNAL_ID.hex,)))
    finally:
        connection.close()


def open_journal(data_dir: Path) -> JournalState:
    """As start-up does: newest snapshot, then the records after it."""
    with Journal.read_only(data_dir) as journal:
        return journal.state


def replay_from_zero(data_dir: Path) -> JournalState:
    with Journal.read_only(data_dir) as journal:
        return fold_records(journal.records())


@dataclass(frozen=True)
class ReplayFigures:
    build_s: float
    db_mb: float
    full_s: float
    raw_s: float
    decode_s: float
    crashed_s: float
    replayed: int
    clean_s: float


def measure_replay() -> ReplayFigures:
    with tempfile.TemporaryDirectory(prefix="muto-bench-journal-") as tmp:
        data = Path(tmp)
        writer = multiprocessing.get_context("fork").Process(target=write_journal, args=(data,))
        build_s = timed(lambda: (writer.start(), writer.join()))
        if writer.exitcode != 0:
            raise RuntimeError(f"the journal writer exited {writer.exitcode}")
        db = data / "journal.db"
        assert raw_rows(db) == EVENTS
        with Journal.read_only(data) as journal:
            replayed = journal.replayed
            decode_s = median_s(lambda: sum(1 for _ in journal.records()), 3)
        full = replay_from_zero(data)
        if full != open_journal(data):
            raise AssertionError("a replay from zero differs from snapshot + tail")
        crashed_s = median_s(lambda: open_journal(data), 5)
        full_s = median_s(lambda: replay_from_zero(data), 3)
        raw_s = median_s(lambda: raw_rows(db), 3)
        Journal.open(data).close()  # a clean stop: snapshot at the end
        clean_s = median_s(lambda: open_journal(data), 5)
        size = sum(f.stat().st_size for f in data.iterdir() if f.name.startswith("journal.db"))
    return ReplayFigures(build_s, size / 1e6, full_s, raw_s, decode_s, crashed_s, replayed, clean_s)
