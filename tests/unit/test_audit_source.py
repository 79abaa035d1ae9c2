"""The audit opens the event log so that nothing can be written through it, and reads
times the way operators write them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from muto.audit.source import AuditError, parse_instant, read_only_url


def test_sqlite_files_open_read_only(tmp_path: Path) -> None:
    events = tmp_path / "a dir" / "events.db"
    events.parent.mkdir()
    events.touch()
    url = read_only_url(f"sqlite:///{events}")
    assert url.startswith("sqlite:///file:") and url.endswith("?mode=ro&uri=true")
    assert "a%20dir/events.db" in url
    with pytest.raises(AuditError, match="no event log at"):
        read_only_url(f"sqlite:///{tmp_path / 'missing.db'}")
    assert read_only_url("sqlite:///:memory:") == "sqlite:///:memory:"


def test_postgres_sessions_are_read_only_and_keep_given_options() -> None:
    url = make_url(read_only_url("postgresql+psycopg://postgres:pw@db:5432/muto"))
    assert url.query["options"] == "-c default_transaction_read_only=on"
    assert url.password == "pw"
    given = "postgresql+psycopg://db/muto?options=-c%20search_path%3Dfleet"
    assert make_url(read_only_url(given)).query["options"] == (
        "-c search_path=fleet -c default_transaction_read_only=on"
    )


def test_times_need_their_offset() -> None:
    assert parse_instant("2026-03-03T14:02:00Z") == datetime(2026, 3, 3, 14, 2, tzinfo=UTC)
    cet = parse_instant("2026-03-03T15:02+01:00")
    assert cet.tzinfo == timezone(timedelta(hours=1))
    assert cet == parse_instant("2026-03-03T14:02Z")
    with pytest.raises(AuditError, match="no UTC offset"):
        parse_instant("2026-03-03T14:02")
    with pytest.raises(AuditError, match="not an ISO 8601 time"):
        parse_instant("14:02 on 3 March")
