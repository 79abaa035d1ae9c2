"""`muto audit` on a database it cannot read (none by that name, nothing listening, no
muto tables in it, a file that is no database): one line naming what could not be read,
without its password, and exit status 2, never a traceback. Exit 1 is a broken chain
only, so a monitoring script never reads "database down" as tampering (docs/audit.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from eventsourcing.persistence import OperationalError as StoreOperationalError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from muto.audit.source import AuditError
from muto.cli import main
from muto.cloud.auditing import ReadLog
from tests.support.services import PG_ADMIN_URL

NO_TABLE = "muto audit: no event table muto_events in the database"
PASSWORD = "s3cr3t-pw"


def verbs(where: list[str], tmp_path: Path) -> Iterator[list[str]]:
    yield ["audit", "explain", "--vehicle", "car-1", *where]
    yield ["audit", "export", *where]
    yield ["audit", "replay", "--out", str(tmp_path / "replayed.db"), *where]
    yield ["audit", "verify", *where]


def refused(argv: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> str:
    """The one line the command said; it exited 2 and wrote nothing else."""
    assert main(argv) == 2, argv
    said = capsys.readouterr()
    assert said.out == "" and not (tmp_path / "replayed.db").exists()
    assert "Traceback" not in said.err and said.err.count("\n") == 1, said.err
    return said.err.rstrip("\n")


def test_an_events_file_that_is_no_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "cloud"
    data.mkdir()
    (data / "events.db").write_text("not a database, a text file\n" * 100)
    (data / "views.db").write_text("nor this\n")
    for argv in verbs(["--data-dir", str(data)], tmp_path):
        assert refused(argv, capsys, tmp_path) == (
            f"muto audit: cannot read the database at sqlite:///{data / 'events.db'}: "
            "file is not a database"
        )


def test_an_sqlite_database_without_muto_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "cloud"
    data.mkdir()
    (data / "events.db").touch()  # an empty file: SQLite's empty database
    (data / "views.db").touch()
    for argv in verbs(["--data-dir", str(data)], tmp_path):
        assert refused(argv, capsys, tmp_path) == NO_TABLE


def test_nothing_listening(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:1/muto"
    for argv in verbs(["--database-url", url], tmp_path):
        said = refused(argv, capsys, tmp_path)
        assert said.startswith(
            "muto audit: cannot read the database at "
            "postgresql+psycopg://postgres:***@127.0.0.1:1/muto: "
        ), said
        assert "refused" in said and PASSWORD not in said


@pytest.mark.postgres
def test_a_database_that_does_not_exist(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`postgres_url` only for a server that answers (else the test skips, or fails in CI)."""
    missing = make_url(postgres_url).set(database="muto_nonexistent", password=PASSWORD)
    url = missing.render_as_string(hide_password=False)
    shown = missing.set(query={}).render_as_string(hide_password=True)
    for argv in verbs(["--database-url", url], tmp_path):
        said = refused(argv, capsys, tmp_path)
        assert said.startswith(f"muto audit: cannot read the database at {shown}: "), said
        assert 'database "muto_nonexistent" does not exist' in said
        assert PASSWORD not in said


@pytest.mark.postgres
def test_a_database_without_muto_tables(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in verbs(["--database-url", postgres_url], tmp_path):
        assert refused(argv, capsys, tmp_path) == NO_TABLE


class Dropped:
    """An event log whose database stops answering once the audit has opened it."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def position(self) -> int:
        raise self.error

    def select(self, after: int, limit: int, until: int | None = None) -> list[object]:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        OperationalError("SELECT 1", {}, Exception("server closed the connection\nhint")),
        # as eventsourcing raises it: `raise OperationalError(e) from e`
        StoreOperationalError(OperationalError("SELECT 1", {}, Exception("terminated\nhint"))),
    ],
    ids=["SQLAlchemy", "the event store's"],
)
def test_a_database_that_stops_answering_midway(error: Exception) -> None:
    url = PG_ADMIN_URL.replace("postgres@", f"postgres:{PASSWORD}@", 1)
    log = ReadLog(Dropped(error), url)  # type: ignore[arg-type]  # a stand-in log
    for read in (log.position, lambda: log.select(0, 10)):
        with pytest.raises(AuditError) as caught:
            read()
        said = str(caught.value)
        assert said.startswith("cannot read the database at postgresql+psycopg://postgres:***@")
        assert said.endswith(": server closed the connection") or said.endswith(": terminated")
        assert PASSWORD not in said
