"""A reconcile pass that fails unexpectedly is reported with a reason code, logged once per
distinct failure, and over when a pass completes (review #8, and #7 while running).

A data dir that takes no new file (`chattr +i`, a full disk) made every pass die in the
trust store's atomic write: a traceback per poll in the log, nothing reported, the fleet
view stale. Now the failure is journaled once (PassFailed: AGENT_ERROR, or
INSUFFICIENT_DISK for a full disk) and health carries its code until a pass completes;
a journal that cannot take the event either is left as it was."""

from __future__ import annotations

import errno
import logging
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError

from muto.agent.journal import Journal
from muto.agent.journal import events as ev
from muto.agent.journal.integrity import verify
from muto.agent.journal.store import RecordStore
from muto.agent.journal_cli import describe
from muto.agent.reports import pass_failure
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.wire import WireError
from muto.trust import TrustStore
from muto.trust import store as trust_store
from tests.support.agent_rig import T0, A, B, Rig, make_rig, run
from tests.support.waits import until

FAILED = "reconcile pass failed"


def cannot_create(code: int) -> Any:
    """atomic_write in a data dir that takes no new file: its temp file is refused (each
    attempt under a new random name, as mkstemp's)."""

    def refuse(path: Path, data: bytes, mode: int = 0o600) -> None:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        raise OSError(code, os.strerror(code), str(tmp))

    return refuse


def test_a_failure_is_known_by_its_kind_not_its_temp_file_name() -> None:
    first, again = (
        pass_failure(PermissionError(errno.EPERM, "no", f".t.{n}.tmp"), T0) for n in (1, 2)
    )
    assert first.code == again.code == ReasonCode.AGENT_ERROR
    assert first.error == again.error == "PermissionError [EPERM]" and first.detail != again.detail
    full = pass_failure(OSError(errno.ENOSPC, "No space left on device"), T0)
    assert full.code == ReasonCode.INSUFFICIENT_DISK
    damaged = WireError("Expected `int`, got `str` - at `$.config.releaseKeys.threshold`")
    assert pass_failure(damaged, T0).code == ReasonCode.AGENT_ERROR
    coded = ReasonError(ReasonCode.APPLY_FAILED, "x")
    assert pass_failure(coded, T0).code == ReasonCode.APPLY_FAILED


def test_a_full_sqlite_file_is_insufficient_disk_raw_or_wrapped() -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (x BLOB)")
    db.execute("PRAGMA max_page_count = 2")
    with pytest.raises(sqlite3.OperationalError) as full:
        db.execute("INSERT INTO t VALUES (?)", (b"x" * 100_000,))
    assert pass_failure(full.value, T0).code == ReasonCode.INSUFFICIENT_DISK
    try:
        raise OperationalError(full.value) from full.value  # as the library's datastore does
    except OperationalError as wrapped:
        assert pass_failure(wrapped, T0).code == ReasonCode.INSUFFICIENT_DISK


async def one_pass(rig: Rig) -> None:
    before = rig.agent.passes
    rig.agent.trigger("poll")
    await until(lambda: rig.agent.passes > before and rig.agent.idle, "a pass", in_thread=False)


def health(rig: Rig) -> list[tuple[str, list[str]]]:
    return [(r["status"], r["reasonCodes"]) for r in rig.cloud.reports if r["kind"] == "health"]


@pytest.mark.parametrize(
    ("code", "reason"),
    [(errno.EPERM, ReasonCode.AGENT_ERROR), (errno.ENOSPC, ReasonCode.INSUFFICIENT_DISK)],
)
def test_a_data_dir_that_takes_no_new_file_is_reported_once_with_a_code(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    code: int,
    reason: ReasonCode,
) -> None:
    caplog.set_level(logging.INFO, "muto.agent")

    async def scenario() -> None:
        rig = make_rig(poll_s=3600, drift_check_s=3600, health_every_s=3600)
        store = TrustStore.create(tmp_path / "trust.json", rig.signers.trust)
        monkeypatch.setattr(rig.agent.parts.trust, "accept", store.accept)  # the real file
        rig.cloud.serve(rig.signers.bundle(A, 1))
        await rig.agent.start()
        await until(lambda: rig.cloud.reconcile_reports(), "converged on A", in_thread=False)
        monkeypatch.setattr(trust_store, "atomic_write", cannot_create(code))
        rig.cloud.serve(rig.signers.bundle(B, 2))
        for _ in range(3):
            await one_pass(rig)
        failed = [r.event for r in rig.journal.records() if isinstance(r.event, ev.PassFailed)]
        assert [(f.code, "trust.json" in f.detail) for f in failed] == [(reason, True)]
        assert f"passes failing {reason}" in "\n".join(describe(rig.journal.state))
        wanted = ("degraded", [str(reason)])
        await until(lambda: wanted in health(rig), "the health report", in_thread=False)
        assert [r.message for r in caplog.records].count(
            f"{FAILED} ({reason}), retried at the next poll"
        ) == 1
        assert rig.journal.state.running_key == A.key and verify(rig.journal).ok
        monkeypatch.undo()  # writable again (the rig's trust takes the document)
        await one_pass(rig)
        assert rig.journal.state.pass_failed is None and rig.journal.state.running_key == B.key
        await until(lambda: health(rig)[-1] == ("healthy", []), "healthy again", in_thread=False)
        assert rig.cloud.reconcile_reports()[-1] == ("dsr_2", "converged", [])
        await rig.agent.stop()

    run(scenario)


class Fillable(RecordStore):
    """A record store on a disk that fills up on request: it refuses every write whole."""

    full = False

    def insert(self, records: Any) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        super().insert(records)


def test_a_journal_that_cannot_take_the_failure_either_is_left_as_it_was(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "muto.agent")
    store = Fillable({"PERSISTENCE_MODULE": "eventsourcing.popo"})
    journal = Journal(store)

    async def scenario() -> None:
        rig = make_rig(journal=journal, poll_s=3600, drift_check_s=3600, health_every_s=3600)
        rig.cloud.serve(rig.signers.bundle(A, 1))
        await rig.agent.start()
        await until(lambda: rig.cloud.reconcile_reports(), "converged on A", in_thread=False)
        rig.cloud.serve(rig.signers.bundle(B, 2))
        store.full = True
        position = journal.state.position
        for _ in range(3):
            await one_pass(rig)
        assert journal.state.position == position and verify(journal).ok
        messages = [r.message for r in caplog.records]
        assert [m for m in messages if m.startswith(FAILED)] == [
            f"{FAILED} (INSUFFICIENT_DISK), retried at the next poll"
        ]
        assert [m for m in messages if m.startswith("could not journal")] == [
            "could not journal the failure either: [Errno 28] No space left on device"
        ]
        store.full = False
        await one_pass(rig)
        assert journal.state.running_key == B.key and verify(journal).ok
        await rig.agent.stop()

    run(scenario)
