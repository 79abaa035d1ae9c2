"""The journal's head (`journal.db-head`: the last position committed and its chain link,
written after each commit) makes a lost committed tail a refusal, not a silent rewind.

Review, defect 2: one flipped byte in `journal.db-wal` (a bad sector) after a kill -9.
SQLite takes the WAL frame whose checksum fails for the end of the log and drops every
commit after it, silently: `journal verify` said ok with 12 of ~30 events, and the agent
started believing an old release ran and numbered its reports again from 2 under the
same incarnation. Now `muto agent run` refuses (exit 2, one line) and `journal verify`
reports it (exit 1). A head that lags (a power cut, a failed write) or is torn or
missing is never a refusal.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from muto.agent.journal import Journal, JournalUnreadable
from muto.agent.journal import events as ev
from muto.agent.journal.integrity import verify
from muto.agent.journal.journal import HEAD_BYTES, Head
from muto.cli import main
from muto.trust import KeySet, Signer, TrustConfig, TrustStore
from tests.support.agent_rig import T0

COMMITTED = 30
# Appends COMMITTED events, one commit each, then is killed as `kill -9` would: the
# records stay in journal.db-wal (journal.db is not checkpointed), -shm stays behind.
KILLED_WRITER = f"""
import os, signal, sys
from datetime import UTC, datetime
from pathlib import Path
from muto.agent.journal import Journal
from muto.agent.journal import events as ev
journal = Journal.open(Path(sys.argv[1]))
for i in range({COMMITTED}):
    journal.append(ev.RuntimeStopped(at=datetime(2026, 3, 1, tzinfo=UTC), reason=f"stop {{i}}"))
os.kill(os.getpid(), signal.SIGKILL)
"""
TIMEOUT_S = 30  # an agent that starts instead of refusing runs until killed: a failure


def killed_after_commits(data_dir: Path) -> Path:
    data_dir.mkdir(mode=0o700)
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(data_dir)], timeout=60)
    assert done.returncode == -9
    wal = data_dir / "journal.db-wal"
    assert wal.stat().st_size > (data_dir / "journal.db").stat().st_size  # the WAL holds it
    return wal


def bad_sector(wal: Path, how: str) -> None:
    """As the reviewer's walloss.sh: one byte at 40 % of the WAL flipped (or the WAL cut
    there, as a torn file would be)."""
    at = int(wal.stat().st_size * 0.4)
    with wal.open("r+b") as f:
        if how == "truncated":
            f.truncate(at)
            return
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ 0xFF]))


def refusal(data_dir: Path) -> JournalUnreadable:
    with pytest.raises(JournalUnreadable) as refused:
        Journal.open(data_dir)
    return refused.value


@pytest.mark.parametrize("how", ["flipped", "truncated"])
def test_a_bad_sector_in_the_wal_that_drops_commits_is_refused(tmp_path: Path, how: str) -> None:
    data = tmp_path / "data"
    bad_sector(killed_after_commits(data), how)
    with Journal.read_only(data) as reader:  # what SQLite still shows: a shorter journal
        left = reader.state.position
    assert 0 <= left < COMMITTED
    lost = f"the journal ends at position {left} but position {COMMITTED} was committed"
    db = data / "journal.db"
    for _ in range(2):  # opening checkpoints what is left: the refusal stays
        refused = refusal(data)
        assert refused.damaged and refused.path == db
        assert lost in str(refused) and str(db) in str(refused) and "aside" in str(refused)
    with Journal.read_only(data, fold=False) as reader:
        found = verify(reader)
    assert found.problems == [f"{db}: {lost}"]


def test_records_deleted_from_the_end_are_refused(tmp_path: Path) -> None:
    """The same loss, made through SQLite: the last records gone, the head kept."""
    with Journal.open(tmp_path) as journal:
        for i in range(12):
            journal.append(ev.RuntimeStopped(at=T0, reason=f"{i}"))
    db = sqlite3.connect(tmp_path / "journal.db")
    with db:
        db.execute("DELETE FROM stored_events WHERE originator_version > 9")
        db.execute("DELETE FROM stored_snapshots")  # the one at close, past the end now
    db.close()
    assert "the journal ends at position 9 but position 12 was committed" in str(refusal(tmp_path))


def test_a_different_record_at_the_head_position_is_refused(tmp_path: Path) -> None:
    """Another journal put in the place of this one (restored from an older copy, say)."""
    with Journal.open(tmp_path) as journal:
        journal.append(ev.RuntimeStopped(at=T0, reason="a"), ev.RuntimeStopped(at=T0, reason="b"))
    head = tmp_path / "journal.db-head"
    head.write_bytes(Head(1, "0" * 64).line())
    assert "the record at position 1 is not the one committed there" in str(refusal(tmp_path))
    with Journal.read_only(tmp_path, fold=False) as reader:
        assert not verify(reader).ok


def test_a_lagging_head_is_no_finding(tmp_path: Path) -> None:
    """A power cut can leave the head older than the journal (it is never fsynced)."""
    head = tmp_path / "journal.db-head"
    with Journal.open(tmp_path) as journal:
        for i in range(5):
            journal.append(ev.RuntimeStopped(at=T0, reason=f"{i}"))
        older = head.read_bytes()
        for i in range(5):
            journal.append(ev.RuntimeStopped(at=T0, reason=f"{i}"))
    head.write_bytes(older)
    with Journal.read_only(tmp_path, fold=False) as reader:
        assert verify(reader).ok
    with Journal.open(tmp_path) as journal:
        assert journal.state.position == 10
        journal.append(ev.RuntimeStopped(at=T0, reason="on"))
    assert Head.parse(head.read_bytes()).position == 11


@pytest.mark.parametrize(
    "torn",
    [b"", b"\0" * HEAD_BYTES, b"00000000000000000003 ab", b"garbage", "flip"],
    ids=["empty", "zeros", "cut", "garbage", "flipped-digit"],
)
def test_a_torn_or_missing_head_is_no_finding(
    tmp_path: Path, torn: bytes | str, caplog: pytest.LogCaptureFixture
) -> None:
    head = tmp_path / "journal.db-head"
    with Journal.open(tmp_path) as journal:
        journal.append(ev.RuntimeStopped(at=T0, reason="a"), ev.RuntimeStopped(at=T0, reason="b"))
    line = head.read_bytes()
    assert len(line) == HEAD_BYTES and Head.parse(line).position == 2
    # A digit that says more than was committed, its CRC unchanged: torn, not a loss.
    head.write_bytes(line.replace(b"02 ", b"09 ", 1) if isinstance(torn, str) else torn)
    with caplog.at_level(logging.WARNING), Journal.open(tmp_path) as journal:
        assert journal.state.position == 2
    assert any(
        "journal head" in r.getMessage() and "ignored" in r.getMessage() for r in caplog.records
    )
    head.unlink()
    with Journal.read_only(tmp_path, fold=False) as reader:
        assert verify(reader).ok
    with Journal.open(tmp_path) as journal:
        assert journal.state.position == 2


def test_a_journal_moved_aside_starts_anew_past_its_old_head(tmp_path: Path) -> None:
    """The documented way out of a refusal: journal.db, -wal, -shm moved aside (the head
    left where it was) and the agent started again on a new journal."""
    with Journal.open(tmp_path) as journal:
        journal.append(*[ev.RuntimeStopped(at=T0, reason="x")] * 7)
    aside = tmp_path / "aside"
    aside.mkdir()
    for name in ("journal.db", "journal.db-wal", "journal.db-shm"):
        if (tmp_path / name).exists():
            (tmp_path / name).rename(aside / name)
    with Journal.open(tmp_path) as fresh:
        assert fresh.state.position == 0
        fresh.append(ev.RuntimeStopped(at=T0, reason="new"))
    with Journal.open(tmp_path) as again:
        assert again.state.position == 1


def test_a_head_that_cannot_be_written_never_fails_an_append(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The commit stands: a failed head write (a full disk) leaves an older head, logged."""
    with Journal.open(tmp_path) as journal:
        journal.append(ev.RuntimeStopped(at=T0, reason="a"))
        head = tmp_path / "journal.db-head"
        head.unlink()
        head.mkdir()  # os.open(..., O_WRONLY) on it fails as a full disk would
        with caplog.at_level(logging.WARNING):
            assert journal.append(ev.RuntimeStopped(at=T0, reason="b")) == 2
            journal.append(ev.RuntimeStopped(at=T0, reason="c"))
        assert journal.state.position == 3
    said = [r for r in caplog.records if "not written" in r.getMessage()]
    assert len(said) == 1  # once, not once per append
    head.rmdir()
    with Journal.open(tmp_path) as again:
        assert again.state.position == 3


def test_run_refuses_and_verify_reports_a_lost_tail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    bad_sector(killed_after_commits(data), "flipped")
    keys = KeySet(keys=[Signer.generate().public_pem])
    TrustStore.create(data / "trust.json", TrustConfig(release_keys=keys, control_plane_keys=keys))
    assert main(["agent", "journal", "verify", "--data-dir", str(data), "--json"]) == 1
    found = json.loads(capsys.readouterr().out)
    assert not found["ok"] and found["events"] < COMMITTED
    assert [p for p in found["problems"] if f"position {COMMITTED} was committed" in p]
    done = subprocess.run(
        [sys.executable, "-m", "muto.cli", "agent", "run", "--vehicle-id", "car-1",
         "--data-dir", str(data)],
        capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    [line] = done.stderr.splitlines()
    assert str(data / "journal.db") in line
    assert f"but position {COMMITTED} was committed" in line


def test_looking_at_a_damaged_journal_keeps_its_wal(tmp_path: Path) -> None:
    """The refusal says to keep the files to inspect: the frames after the bad one are
    the only copy of what was lost. A writer's connection checkpointed what SQLite could
    read into journal.db on close and deleted the WAL, and so did the read-only tools."""
    data = tmp_path / "data"
    wal = killed_after_commits(data)
    bad_sector(wal, "flipped")
    damaged = wal.read_bytes()
    refusal(data)
    with Journal.read_only(data) as seen:
        assert seen.state.position < COMMITTED
    assert verify(Journal.read_only(data, fold=False)).problems
    assert wal.read_bytes() == damaged


def test_a_record_that_is_not_utf8_is_named_damaged(tmp_path: Path) -> None:
    """A bad byte inside a stored string surfaced as UnicodeDecodeError: a traceback
    from `journal verify` and `list`, and a start-up refusal that named no file."""
    data = tmp_path / "data"
    with Journal.open(data) as journal:
        for i in range(3):
            journal.append(ev.RuntimeStopped(at=T0, reason=f"stop {i}"))
    with sqlite3.connect(data / "journal.db") as db:
        db.execute("DELETE FROM stored_snapshots")  # opening replays every record
        (state,) = db.execute(
            "SELECT state FROM stored_events WHERE originator_version = 2"
        ).fetchone()
        assert b"stop 1" in state
        db.execute(
            "UPDATE stored_events SET state = ? WHERE originator_version = 2",
            (bytes(state).replace(b"stop 1", b"stop \xe9"),),
        )
    found = refusal(data)
    assert found.damaged and "does not decode" in str(found) and "journal.db" in str(found)
    with Journal.read_only(data, fold=False) as reader:
        problems = verify(reader).problems
    assert any(p.startswith("position 2: does not decode") for p in problems), problems


def test_the_journal_tools_say_a_tail_was_lost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`list` showed what SQLite still had, exit 0, with no sign that the rest was lost."""
    data = tmp_path / "data"
    bad_sector(killed_after_commits(data), "flipped")
    assert main(["agent", "journal", "list", "--data-dir", str(data)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("muto agent journal: warning: ") and "was committed" in err
    assert f"position {COMMITTED} was committed" in err
