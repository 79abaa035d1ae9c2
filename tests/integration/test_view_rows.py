"""The views' bulk writes (muto/projections/rows.py) store the same values on SQLite
(executemany) and PostgreSQL (COPY, UPDATE ... FROM unnest): JSON, text, integers and
NULLs, inserted then updated in groups of changed columns."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import JSON, Column, Integer, String, Table, select

from muto.projections.rows import DriverInsert, Rows
from muto.projections.store import ViewStore

ROWS: list[dict[str, Any]] = [
    {"key": "a", "n": 1, "text": "tab\there, quote ' and \\ backslash", "data": {"x": [1]}},
    {"key": "b", "n": None, "text": None, "data": None},
    {"key": "c", "n": 3, "text": "ünïcode\nnewline", "data": ["l", {"k": None}]},
]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ViewStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'views.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    found = ViewStore(url)
    yield found
    found.close()


def table(store: ViewStore) -> Table:
    return Table(
        "view_rows_probe",
        store.metadata,
        Column("key", String(8), primary_key=True),
        Column("n", Integer),
        Column("text", String(64)),
        Column("data", JSON),
    )


def stored(store: ViewStore, t: Table) -> dict[str, dict[str, Any]]:
    with store.reading() as session:
        return {row.key: dict(row._mapping) for row in session.execute(select(t))}


def test_inserted_rows_read_back_as_given(store: ViewStore) -> None:
    t = table(store)
    store.create_table()
    with store.writing() as session:
        DriverInsert(t).execute(session, [tuple(r.values()) for r in ROWS])
    assert stored(store, t) == {r["key"]: r for r in ROWS}


def test_changes_grouped_by_columns_update_only_their_rows(store: ViewStore) -> None:
    t = table(store)
    store.create_table()
    rows = Rows(t, "key")
    with store.writing() as session:
        rows.insert(session, ROWS)
    changes: list[tuple[Any, dict[str, Any]]] = [
        ("a", {"n": None, "data": {"y": "z"}}),
        ("b", {"n": 7, "data": [1, 2]}),  # the same columns as a: one statement
        ("c", {"text": None}),
    ]
    with store.writing() as session:
        rows.write_changes(session, changes)
    expected = {r["key"]: dict(r) for r in ROWS}
    for key, values in changes:
        expected[key].update(values)
    assert stored(store, t) == expected
