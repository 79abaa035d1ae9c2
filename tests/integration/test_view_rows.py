"""The views' bulk writes (muto/projections/rows.py) view_store the same values on SQLite
(executemany) and PostgreSQL (COPY, UPDATE ... FROM unnest): JSON, text, integers and
NULLs, inserted then updated in groups of changed columns."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, select

from muto.projections.rows import DriverInsert, Rows
from muto.projections.store import ViewStore
from tests.support.views import probe_table

ROWS: list[dict[str, Any]] = [
    {"key": "a", "n": 1, "text": "tab\there, quote ' and \\ backslash", "data": {"x": [1]}},
    {"key": "b", "n": None, "text": None, "data": None},
    {"key": "c", "n": 3, "text": "ünïcode\nnewline", "data": ["l", {"k": None}]},
]


def table(view_store: ViewStore) -> Table:
    return probe_table(view_store, "view_rows_probe")


def stored(view_store: ViewStore, t: Table) -> dict[str, dict[str, Any]]:
    with view_store.reading() as session:
        return {row.key: dict(row._mapping) for row in session.execute(select(t))}


def test_inserted_rows_read_back_as_given(view_store: ViewStore) -> None:
    t = table(view_store)
    view_store.create_table()
    with view_store.writing() as session:
        DriverInsert(t).execute(session, [tuple(r.values()) for r in ROWS])
    assert stored(view_store, t) == {r["key"]: r for r in ROWS}


def test_changes_grouped_by_columns_update_only_their_rows(view_store: ViewStore) -> None:
    t = table(view_store)
    view_store.create_table()
    rows = Rows(t, "key")
    with view_store.writing() as session:
        rows.insert(session, ROWS)
    changes: list[tuple[Any, dict[str, Any]]] = [
        ("a", {"n": None, "data": {"y": "z"}}),
        ("b", {"n": 7, "data": [1, 2]}),  # the same columns as a: one statement
        ("c", {"text": None}),
    ]
    with view_store.writing() as session:
        rows.write_changes(session, changes)
    expected = {r["key"]: dict(r) for r in ROWS}
    for key, values in changes:
        expected[key].update(values)
    assert stored(view_store, t) == expected
