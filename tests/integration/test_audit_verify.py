"""Tamper evidence (issue 7): rows of the event table edited, deleted, swapped or
inserted directly with SQL, on SQLite and PostgreSQL; `muto audit verify` fails (exit 1)
naming the first bad position, and on a clean log prints the head hash that an
independent recomputation from the raw rows also gives."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import PersistenceError, StoredEvent
from sqlalchemy import Engine, create_engine, text

import muto.audit.verify as verify_module
from muto.cli import main
from muto.cloud.auditing import open_event_log
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import assign_desired_state, record_reconcile
from muto.cloud.settings import Settings
from tests.support.releases import signed_release
from tests.support.services import fresh_database, postgres_admin
from tests.support.spine import (
    cause,
    desired_request,
    fleet,
    postgres_settings,
    reconcile_report,
    register_fleet,
    sqlite_settings,
)

EVENTS, CHAIN = "muto_events", "view_audit_chain"


@dataclass
class Stored:
    settings: Settings
    events: Engine  # straight to the event table, as an intruder would
    views: Engine
    head: int

    @property
    def cli(self) -> list[str]:
        where = ["--data-dir", str(self.settings.data_dir)]
        if self.settings.database_url:
            where += ["--database-url", self.settings.database_url]
        return where

    def sql(self, statement: str, engine: Engine | None = None, **params: Any) -> list[Any]:
        with (engine or self.events).begin() as conn:
            result = conn.execute(text(statement), params)
            return list(result) if result.returns_rows else []

    def row(self, position: int) -> Any:
        found = self.sql(f"SELECT * FROM {EVENTS} WHERE id = :p", p=position)
        return found[0]


def write_history(settings: Settings) -> int:
    """Eleven events: three vehicles, a release, an assignment, three reports."""
    cp = ControlPlane.open(settings)
    try:
        ids = register_fleet(cp, fleet(3))
        release = signed_release()
        cp.execute(release.register())
        revision = cp.execute(
            assign_desired_state(desired_request("model=m3", release), ids, cause(), cp.sign)
        ).value.revision
        for n, vehicle in enumerate(ids):
            report = reconcile_report(vehicle, f"r{n}", revision=revision, running=release.ref)
            cp.execute(record_reconcile(report, f"vehicle:{vehicle}"))
        return cp.log.position()
    finally:
        cp.close()


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The history is written once per backend; each test tampers with a copy."""
    data_dir = tmp_path_factory.mktemp("template")
    return data_dir, write_history(sqlite_settings(data_dir))


@pytest.fixture(scope="module")
def postgres_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    with fresh_database() as url:
        settings = postgres_settings(url, tmp_path_factory.mktemp("pg"))
        head = write_history(settings)
        name = url.rpartition("/")[2]
        # A template must have no connection left (CREATE DATABASE ... TEMPLATE refuses).
        with postgres_admin() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
        yield name, head


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def stored(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Stored]:
    monkeypatch.delenv("MUTO_DATABASE_URL", raising=False)
    with ExitStack() as stack:
        if request.param == "sqlite":
            template, head = request.getfixturevalue("sqlite_template")
            shutil.copytree(template, tmp_path / "data")
            settings = sqlite_settings(tmp_path / "data")
        else:
            template, head = request.getfixturevalue("postgres_template")
            copy = stack.enter_context(fresh_database(template=template))
            settings = postgres_settings(copy, tmp_path)
        events, views = create_engine(settings.events_url), create_engine(settings.views_url)
        stack.callback(views.dispose)
        stack.callback(events.dispose)
        yield Stored(settings, events, views, head)


def verify(capsys: pytest.CaptureFixture[str], stored: Stored, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["audit", "verify", *stored.cli, *extra])
    return code, capsys.readouterr().out


def recomputed_head(stored: Stored) -> str:
    """The chain as docs/audit.md defines it, from the raw rows, without muto's code."""
    digest = bytes(32)
    for r in stored.sql(f"SELECT * FROM {EVENTS} ORDER BY id"):
        originator = r.originator_id
        if isinstance(originator, bytes):  # SQLite stores the UUID's 16 bytes
            originator = uuid.UUID(bytes=originator)
        fields = [str(r.id), str(originator), str(r.originator_version), r.topic]
        framed = [f.encode() for f in fields] + [bytes(r.state)]
        digest = hashlib.sha256(
            digest + b"".join(len(f).to_bytes(8, "big") + f for f in framed)
        ).digest()
    return digest.hex()


def test_a_clean_log_verifies_and_prints_its_head_hash(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = verify(capsys, stored)
    assert code == 0
    head = recomputed_head(stored)
    assert f"intact: {stored.head} events chained, head position {stored.head}" in out
    assert f"head hash {head}" in out

    code, out = verify(capsys, stored, "--json", "--anchor", f"{stored.head}:{head}")
    assert code == 0
    assert json.loads(out) == {
        "intact": True,
        "checked": stored.head,
        "headPosition": stored.head,
        "headHash": head,
        "badPosition": None,
        "reason": None,
        "anchorsChecked": [stored.head],
        "unchained": 0,
    }


def assert_broken_at(
    capsys: pytest.CaptureFixture[str],
    stored: Stored,
    position: int,
    reason: str,
    last_good: int | None = None,
) -> None:
    """Exit 1, the first bad position named; positions 1..last_good verified."""
    good = position - 1 if last_good is None else last_good
    code, out = verify(capsys, stored)
    assert code == 1
    assert out.startswith(f"BROKEN at position {position}: {reason}")
    assert f"intact before it: {good} events, up to position {good}" in out
    found = json.loads(verify(capsys, stored, "--json")[1])
    assert (found["intact"], found["badPosition"]) == (False, position)


def test_an_edited_payload_is_named(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    state = bytes(stored.row(5).state)
    stored.sql(f"UPDATE {EVENTS} SET state = :s WHERE id = 5", s=state + b" ")  # still JSON
    assert_broken_at(capsys, stored, 5, "differs from its chained hash")


def test_an_edit_with_sql_string_functions_is_named(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    """The edit an intruder would type: a report's status rewritten in place. On SQLite
    `replace()` also turns the BLOB into TEXT; the row is reported, not read blindly."""
    last = stored.head  # a reconcile report
    if stored.events.dialect.name == "sqlite":
        edit = "replace(state, 'converged', 'rejected')"
        reason = "is not a well-formed record"
    else:
        edit = "convert_to(replace(convert_from(state, 'UTF8'), 'converged', 'rejected'), 'UTF8')"
        reason = "differs from its chained hash"
    stored.sql(f"UPDATE {EVENTS} SET state = {edit} WHERE id = :p", p=last)
    assert "rejected" in str(stored.row(last).state)
    assert_broken_at(capsys, stored, last, reason)


def test_a_deleted_row_is_named(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    stored.sql(f"DELETE FROM {EVENTS} WHERE id = 6")
    assert_broken_at(capsys, stored, 6, "in the chain but missing from the log: deleted")


def test_a_deleted_last_row_is_named(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    stored.sql(f"DELETE FROM {EVENTS} WHERE id = :p", p=stored.head)
    assert_broken_at(capsys, stored, stored.head, "in the chain but missing from the log")


def test_swapped_payloads_are_named(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    two, three = stored.row(2), stored.row(3)
    assert two.topic == three.topic  # two registrations: both rows still decode
    stored.sql(f"UPDATE {EVENTS} SET state = :s WHERE id = 2", s=bytes(three.state))
    stored.sql(f"UPDATE {EVENTS} SET state = :s WHERE id = 3", s=bytes(two.state))
    assert_broken_at(capsys, stored, 2, "differs from its chained hash")


def insert_copy(stored: Stored, position: int, of: int) -> None:
    """A forged event: a copy of another row's event under a new aggregate id."""
    source = stored.row(of)
    forged = uuid.uuid4()
    originator: Any = forged.bytes if stored.events.dialect.name == "sqlite" else forged
    stored.sql(
        f"INSERT INTO {EVENTS} (id, originator_id, originator_version, topic, state) "
        "VALUES (:id, :o, 1, :t, :s)",
        id=position,
        o=originator,
        t=source.topic,
        s=bytes(source.state),
    )


def test_a_row_appended_after_the_chains_position_is_counted_not_chained_yet(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    """Past the position the projector has chained through, a row is what a running
    control plane chains next: counted, and said, but no finding."""
    insert_copy(stored, stored.head + 1, of=1)
    code, out = verify(capsys, stored)
    assert code == 0 and f"intact: {stored.head} events chained" in out
    assert f"1 events logged after position {stored.head} are not chained yet" in out
    assert json.loads(verify(capsys, stored, "--json")[1])["unchained"] == 1


def test_a_deleted_link_below_the_chains_position_is_named(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    stored.sql(f"DELETE FROM {CHAIN} WHERE position = :p", stored.views, p=stored.head)
    assert_broken_at(capsys, stored, stored.head, "in the log but not in the chain")


def test_a_control_plane_writing_while_verify_reads_is_no_finding(
    stored: Stored, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log and the chain are read page by page, in separate transactions: events
    stored and chained between the two reads (a live control plane) were reported
    "deleted". Here they are written right after verify has read the log's rows."""
    real = verify_module.raw_records
    cp = ControlPlane.open(stored.settings)

    def racing(*args: Any, **kwargs: Any) -> Iterator[Any]:
        rows = real(*args, **kwargs)
        first = next(rows)  # the log's first page is read
        register_fleet(cp, fleet(3, prefix="meanwhile"))  # stored and chained
        yield first
        yield from rows

    monkeypatch.setattr(verify_module, "raw_records", racing)
    try:
        code, out = verify(capsys, stored)
    finally:
        cp.close()
    assert code == 0, out
    assert f"intact: {stored.head} events chained" in out
    assert f"3 events logged after position {stored.head} are not chained yet" in out


@pytest.mark.postgres
def test_a_row_inserted_into_a_gap_is_named(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """PostgreSQL leaves gaps in positions (a rolled-back insert still takes its id):
    a row slipped into one is not in the chain."""
    settings = postgres_settings(postgres_url, tmp_path)
    head = write_history(settings)
    engine = create_engine(postgres_url)
    stored = Stored(settings, engine, engine, head)
    try:
        stored.sql(f"SELECT setval(pg_get_serial_sequence('{EVENTS}', 'id'), {head + 5})")
        cp = ControlPlane.open(settings)
        try:
            register_fleet(cp, fleet(1, prefix="late"))
            assert cp.log.position() == head + 6  # head+1 .. head+5: a gap
        finally:
            cp.close()
        insert_copy(stored, head + 2, of=1)
        assert_broken_at(capsys, stored, head + 2, "in the log but not in the chain", head)
    finally:
        engine.dispose()


def test_an_edited_chain_link_is_named(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    stored.sql(f"UPDATE {CHAIN} SET hash = :h WHERE position = 4", stored.views, h="0" * 64)
    assert_broken_at(capsys, stored, 4, "differs from its chained hash")


def test_a_rewrite_of_both_tables_is_caught_only_by_an_anchor(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    anchor = f"{stored.head}:{recomputed_head(stored)}"
    state = bytes(stored.row(5).state)
    stored.sql(f"UPDATE {EVENTS} SET state = :s WHERE id = 5", s=state + b" ")
    cp = ControlPlane.open(stored.settings)  # an intruder who can also re-chain
    try:
        cp.projector.rebuild("audit_chain")
    finally:
        cp.close()
    code, out = verify(capsys, stored)
    assert code == 0 and anchor.split(":")[1] not in out
    code, out = verify(capsys, stored, "--anchor", anchor)
    assert code == 1
    assert out.startswith(f"BROKEN at position {stored.head}: differs from the anchored hash")


def test_the_audit_cannot_write_to_the_log(stored: Stored) -> None:
    log = open_event_log(stored.settings.events_url)
    try:
        record = log.recorder.select_notifications(start=1, limit=1)[0]
        copy = StoredEvent(uuid.uuid4(), 1, record.topic, record.state)
        with pytest.raises(PersistenceError, match=r"(?i)read-?only"):
            log.recorder.insert_events([copy])
    finally:
        log.close()
    assert stored.sql(f"SELECT max(id) FROM {EVENTS}")[0][0] == stored.head


def test_other_audit_commands_name_an_unreadable_row(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    stored.sql(f"UPDATE {EVENTS} SET state = :s WHERE id = 3", s=b"\x00not json")
    capsys.readouterr()
    assert main(["audit", "export", *stored.cli]) == 2
    assert "the event at position 3 cannot be decoded" in capsys.readouterr().err
    assert_broken_at(capsys, stored, 3, "differs from its chained hash")
