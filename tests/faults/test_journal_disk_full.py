"""The agent's data dir is full when it starts: SQLite cannot grow the journal's -shm
file and says only "disk I/O error". The agent and `journal verify` say the disk is full
(INSUFFICIENT_DISK) and that the journal is not damaged; space back, it opens as it was.

Review, defect 6b: they said the journal "cannot be read" and "is damaged", whose
documented remedy (move it aside) throws the history away for nothing.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from muto.agent.journal import Journal, JournalUnreadable
from muto.agent.journal import events as ev
from muto.agent.journal.store import out_of_space
from muto.cli import main
from muto.trust import KeySet, Signer, TrustConfig, TrustStore
from tests.faults.disk import fill, make_room, small_fs
from tests.support.agent_rig import T0


def test_a_full_disk_at_start_is_said_and_the_journal_is_not_called_damaged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with small_fs(tmp_path / "fs", size_mb=2) as fs:
        data = fs / "agent"
        with Journal.open(data) as journal:
            journal.append(*[ev.RuntimeStopped(at=T0, reason=f"{i}") for i in range(20)])
        keys = KeySet(keys=[Signer.generate().public_pem])
        trust = TrustConfig(release_keys=keys, control_plane_keys=keys)
        TrustStore.create(data / "trust.json", trust)
        fill(fs)
        said = (
            f"the disk holding {data / 'journal.db'} is full (INSUFFICIENT_DISK): free space; "
            "the journal is not damaged"
        )
        for opening in (Journal.open, Journal.read_only):
            with pytest.raises(JournalUnreadable) as refused:
                opening(data)
            assert refused.value.full and not refused.value.damaged
            assert str(refused.value).startswith(said), str(refused.value)
        assert main(["agent", "journal", "verify", "--data-dir", str(data)]) == 1
        problems = capsys.readouterr().out.splitlines()[1:]
        assert [p.strip() for p in problems] == [f"{said} (disk I/O error)"]
        run = [sys.executable, "-m", "muto.cli", "agent", "run", "--vehicle-id", "car-1",
               "--data-dir", str(data)]  # fmt: skip
        done = subprocess.run(run, capture_output=True, text=True, timeout=30)
        assert done.returncode == 2 and done.stderr.splitlines() == [
            f"muto agent: {said} (disk I/O error)"
        ]
        assert not list(data.glob(".space-probe-*"))  # the probe left nothing behind
        make_room(fs)
        with Journal.open(data) as journal:
            assert journal.state.position == 20


def test_an_io_error_with_room_on_the_disk_is_not_called_full(tmp_path: Path) -> None:
    error = sqlite3.OperationalError("disk I/O error")
    error.sqlite_errorcode = 4874  # SQLITE_IOERR_SHMSIZE
    assert not out_of_space(error, tmp_path)
    error.sqlite_errorcode = 13  # SQLITE_FULL: said outright
    assert out_of_space(error, tmp_path)
    error.sqlite_errorcode = 11  # SQLITE_CORRUPT
    assert not out_of_space(error, tmp_path)
    assert not list(tmp_path.iterdir())
