"""The journal: replay equals the live state, snapshots keep start-up fast, integrity."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muto.agent.journal import Journal, JournalLocked, JournalUnreadable
from muto.agent.journal import events as ev
from muto.agent.journal.integrity import verify
from muto.agent.journal.journal import SNAPSHOT_TOPIC, fold_records
from muto.agent.journal.state import JournalState
from muto.agent.journal.store import RecordStore
from muto.domain.desired import AgentConfig
from muto.domain.reasons import ReasonCode
from tests.support.agent_rig import T0, A, B, C, desired_of

POOL = [A, B, C]
KEYS = st.sampled_from([r.key for r in POOL])
REVS = st.sampled_from([None, "dsr_1", "dsr_2"])
SEQS = st.none() | st.integers(1, 3)
CODES = st.lists(st.sampled_from(list(ReasonCode)), max_size=2)
STEPS = st.sampled_from(["apply", "readiness", "rollback"])
IDS = st.sampled_from(["r1", "r2", "r3", "r4"])
AT = st.just(T0)


def built(
    event_type: type[ev.Event], /, **fields: st.SearchStrategy[object]
) -> st.SearchStrategy[ev.Event]:
    return st.builds(event_type, at=AT, **fields)


events = st.one_of(
    st.builds(desired_of, st.sampled_from(POOL), st.integers(1, 3)),
    built(ev.DesiredReceived, revision=REVS, sequence=SEQS, etag=st.none() | IDS),
    built(ev.DesiredRejected, revision=REVS, sequence=SEQS, code=st.sampled_from(list(ReasonCode))),
    built(
        ev.DesiredHeld,
        revision=st.sampled_from(["dsr_1", "dsr_2"]),
        sequence=st.integers(1, 3),
        document_digest=st.sampled_from(["sha256:d1", "sha256:d2"]),
        etag=st.none() | IDS,
    ),
    built(
        ev.ConfigApplied,
        revision=REVS,
        config=st.builds(AgentConfig, heartbeat_s=st.integers(1, 9)),
    ),
    built(ev.GatesEvaluated, revision=st.just("dsr_1"), sequence=st.just(1), codes=CODES),
    built(
        ev.ApplyStarted,
        release_key=KEYS,
        revision=REVS,
        sequence=SEQS,
        replacing=st.none() | KEYS,
        restore=st.booleans(),
    ),
    built(ev.ApplySucceeded, release_key=KEYS, apply_sec=st.just(1.5)),
    built(
        ev.ApplyFailed,
        release_key=KEYS,
        code=st.just(ReasonCode.APPLY_FAILED),
        revision=REVS,
        sequence=SEQS,
    ),
    built(ev.ReadinessPassed, release_key=KEYS, readiness_sec=st.just(2.0)),
    built(ev.ReadinessTimedOut, release_key=KEYS),
    built(
        ev.CrashLoopDetected,
        release_key=KEYS,
        during=st.sampled_from(["readiness", "running"]),
        revision=REVS,
        sequence=SEQS,
    ),
    built(
        ev.GraphDegraded,
        release_key=KEYS,
        detail=st.just("topic /demo/chatter: 0.0 Hz"),
        degraded_sec=st.just(30.0),
        revision=REVS,
        sequence=SEQS,
    ),
    built(ev.RollbackStarted, failed_key=KEYS, target_key=st.none() | KEYS, causes=CODES),
    built(
        ev.RollbackApplied,
        failed_key=KEYS,
        target_key=KEYS,
        causes=CODES,
        readiness_sec=st.just(1.0),
    ),
    built(ev.RollbackFailed, failed_key=KEYS, target_key=st.none() | KEYS, codes=CODES),
    built(ev.RuntimeStopped, reason=st.just("x")),
    built(
        ev.Interrupted,
        step=STEPS,
        release_key=KEYS,
        revision=REVS,
        sequence=SEQS,
        count=st.integers(1, 3),
        gave_up=st.booleans(),
    ),
    built(ev.StepAbandoned, step=STEPS),
    built(ev.AgentStarted, agent_version=st.just("0"), runtime=st.just("x")),
    built(ev.PassCompleted, verdict=st.just("idle")),
    built(ev.AgentStopped),
    built(
        ev.PassFailed,
        code=st.sampled_from([ReasonCode.AGENT_ERROR, ReasonCode.INSUFFICIENT_DISK]),
        error=st.sampled_from(["PermissionError [EPERM]", "OSError [ENOSPC]"]),
    ),
    built(
        ev.ReportQueued,
        report_id=IDS,
        kind=st.just("reconcile"),
        body=st.just(msgspec.Raw(b"{}")),
        revision=REVS,
        status=st.sampled_from(["converged", "blocked", "rolled_back"]),
        codes=CODES,
    ),
    built(
        ev.ReportQueued,
        report_id=IDS,
        kind=st.just("health"),
        body=st.just(msgspec.Raw(b"{}")),
        revision=st.none(),
        status=st.sampled_from(["healthy", "unhealthy"]),
        codes=CODES,
        supersedes=st.none() | IDS,
    ),
    built(ev.ReportDelivered, report_id=IDS, via=st.just("http")),
    built(ev.ReportDropped, report_id=IDS, reason=st.just("422")),
)
batches = st.lists(st.lists(events, min_size=1, max_size=4), max_size=25)


def encoded(state: JournalState) -> bytes:
    return msgspec.json.encode(state)


@given(batches, st.integers(1, 9))
@settings(max_examples=150, deadline=None)
def test_replaying_a_journal_gives_the_state_it_lived_through(
    appended: list[list[ev.Event]], snapshot_every: int
) -> None:
    store = RecordStore.memory()
    live = Journal(store, snapshot_every=snapshot_every)
    states = [encoded(live.state)]
    for batch in appended:
        live.append(*batch)
        states.append(encoded(live.state))
    reopened = Journal(store)
    assert encoded(reopened.state) == encoded(live.state)
    assert encoded(fold_records(live.records())) == encoded(live.state)
    positions = [0]
    for batch in appended:
        positions.append(positions[-1] + len(batch))
    for position, state in zip(positions, states, strict=True):
        assert encoded(reopened.state_at(position)) == state
    assert verify(reopened).ok


def test_a_reopened_sqlite_journal_has_the_same_state(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    started = ev.ApplyStarted(
        at=T0, release_key=POOL[0].key, revision="dsr_1", sequence=1, replacing=None
    )
    journal.append(desired_of(POOL[0], 1), started)
    live = encoded(journal.state)
    journal.close()
    with Journal.open(tmp_path) as again:
        assert encoded(again.state) == live
        assert again.state.in_flight is not None and again.state.in_flight.step == "apply"


def test_start_up_reads_a_snapshot_not_a_hundred_thousand_events(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    for i in range(100):  # 100,000 events, in batches (how a test can afford it)
        at = T0 + timedelta(seconds=i)
        gates = ev.GatesEvaluated(at=at, revision="dsr_1", sequence=1, codes=[])
        journal.append(*[gates] * 1000)
    journal.append(ev.RuntimeStopped(at=T0, reason="last"))
    live = encoded(journal.state)
    journal.close()
    with Journal.open(tmp_path) as again:
        assert again.state.position == 100_001
        assert again.replayed < 1000
        assert encoded(again.state) == live


def test_a_failed_write_changes_nothing() -> None:
    class Full(RecordStore):
        def insert(self, records: object) -> None:
            raise OSError("disk full")

    journal = Journal(Full({"PERSISTENCE_MODULE": "eventsourcing.popo"}))
    with pytest.raises(OSError):
        journal.append(ev.RuntimeStopped(at=T0, reason="x"))
    assert journal.state.position == 0 and journal.state.last_at is None


def test_one_writer_per_data_dir_but_readers_are_welcome(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as journal:
        journal.append(ev.RuntimeStopped(at=T0, reason="x"))
        with pytest.raises(JournalLocked):
            Journal.open(tmp_path)
        with Journal.read_only(tmp_path) as reader:
            assert reader.state.position == 1
            with pytest.raises(PermissionError):
                reader.append(ev.RuntimeStopped(at=T0, reason="y"))


def test_commits_are_synchronous(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as journal:
        journal.append(ev.RuntimeStopped(at=T0, reason="x"))
        recorder = journal._store._events  # the library's recorder: no other way to ask
        with recorder.datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
            cursor.execute("PRAGMA synchronous")
            assert cursor.fetchone()[0] == 2  # FULL: fsync on every commit (WAL)


def test_verify_finds_an_edited_event(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as journal:
        for reason in ("a", "b", "c"):
            journal.append(ev.RuntimeStopped(at=T0, reason=reason))
    db = sqlite3.connect(tmp_path / "journal.db")
    with db:
        db.execute(
            'UPDATE stored_events SET state = replace(state, \'"reason":"b"\', \'"reason":"B"\')'
        )
    db.close()
    with Journal.read_only(tmp_path) as reader:
        found = verify(reader)
    assert found.problems == ["position 2: chain broken (edited or reordered)"]


def test_an_undecodable_snapshot_is_ignored(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    journal.append(ev.RuntimeStopped(at=T0, reason="x"))
    journal._store.put_snapshot(1, SNAPSHOT_TOPIC, b"{not json")
    journal.close()
    with Journal.open(tmp_path) as again:
        assert again.state.position == 1 and again.replayed == 1
        assert not verify(again).ok


def test_a_planned_stop_breaks_a_run_of_deaths_and_a_completed_pass_ends_a_failure() -> None:
    journal = Journal.memory()
    started = ev.AgentStarted(at=T0, agent_version="0", runtime="x")
    journal.append(started, started, ev.AgentStopped(at=T0), started)
    assert journal.state.unfinished_runs == 1  # the stopped run and the two before: gone
    failed = ev.PassFailed(at=T0, code=ReasonCode.AGENT_ERROR, error="PermissionError [EPERM]")
    journal.append(failed)
    assert journal.state.pass_failed == failed
    journal.append(ev.PassCompleted(at=T0, verdict="converged"))
    assert journal.state.pass_failed is None and journal.state.unfinished_runs == 0


def damaged(data_dir: Path, how: str) -> Path:
    """A journal of a few pages, then damaged as a torn write or a bad sector would."""
    with Journal.open(data_dir) as journal:
        for i in range(50):
            journal.append(*[ev.RuntimeStopped(at=T0, reason=f"{i}" * 100)] * 5)
    db = data_dir / "journal.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    if how == "truncated":
        with db.open("r+b") as f:
            f.truncate(5000)
    else:
        db.write_bytes(b"not a database at all " * 300)
    return db


@pytest.mark.parametrize("how", ["truncated", "overwritten"])
def test_a_damaged_journal_file_is_named_not_a_sqlite_traceback(tmp_path: Path, how: str) -> None:
    """Review #10: `sqlite3.DatabaseError: database disk image is malformed` came out of
    Journal.open and read_only as is. Now both say which file is damaged and the way out
    (the CLI prints it in one line), and verify counts it as a problem."""
    db = damaged(tmp_path, how)
    for opening in (Journal.open, Journal.read_only):
        with pytest.raises(JournalUnreadable) as refused:
            opening(tmp_path)
        assert refused.value.damaged and refused.value.path == db
        assert str(db) in str(refused.value) and "aside" in str(refused.value)
    with Journal.read_only(tmp_path, fold=False) as reader:
        found = verify(reader)
    assert not found.ok and [p for p in found.problems if str(db) in p and "damaged" in p]
    db.rename(tmp_path / "journal.db.damaged")  # the way out the message names
    with Journal.open(tmp_path) as fresh:
        assert fresh.state.position == 0
