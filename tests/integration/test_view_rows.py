"""The views' bulk writes (muto/projections/rows.py) store the same values on SQLite
(executemany) and PostgreSQL (COPY, UPDATE ... FROM unnest, INSERT ... ON CONFLICT from
unnest): JSON, text, integers and NULLs, inserted, updated in groups of changed columns,
and replaced by key."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, String, Table, select

from muto.projections.rows import DriverInsert, LatestRows, Rows, json_text
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


def test_latest_rows_replace_what_their_key_holds_and_add_the_rest(
    view_store: ViewStore,
) -> None:
    t = table(view_store)
    view_store.create_table()
    latest = LatestRows(t)

    def write(rows: list[dict[str, Any]]) -> None:
        with view_store.writing() as session:
            latest.write(
                session, [(r["key"], r["n"], r["text"], json_text(r["data"])) for r in rows]
            )

    write(ROWS)
    newer = [
        {"key": "a", "n": None, "text": None, "data": None},
        {"key": "d", "n": 4, "text": "new", "data": {"d": 1}},
        {"key": "c", "n": 30, "text": "first of two", "data": None},
        {"key": "c", "n": 31, "text": "the later one is kept", "data": [True]},
    ]
    write(newer)
    write([])  # nothing to write: no statement, no error
    expected = {r["key"]: r for r in ROWS} | {r["key"]: r for r in newer}
    assert stored(view_store, t) == expected


def members(view_store: ViewStore) -> Table:
    """A table keyed by two columns (a rollout's members)."""
    t = Table(
        "view_rows_members",
        view_store.metadata,
        Column("rollout_id", String(16), primary_key=True),
        Column("vehicle_id", String(16), primary_key=True),
        Column("status", String(16), nullable=False),
        Column("codes", JSON, nullable=False),
    )
    view_store.create_table()
    return t


def stored_members(view_store: ViewStore, t: Table) -> dict[tuple[str, str], tuple[str, Any]]:
    with view_store.reading() as session:
        return {
            (r.rollout_id, r.vehicle_id): (r.status, r.codes) for r in session.execute(select(t))
        }


def test_latest_rows_replace_by_every_column_of_a_composite_key(view_store: ViewStore) -> None:
    t = members(view_store)
    latest = LatestRows(t)
    with view_store.writing() as session:
        latest.write(
            session, [("r1", "v1", "a", "[]"), ("r1", "v2", "b", "[]"), ("r2", "v1", "c", "[]")]
        )
    with view_store.writing() as session:
        latest.write(session, [("r1", "v2", "new", '["X"]'), ("r2", "v2", "d", "[]")])
    assert stored_members(view_store, t) == {
        ("r1", "v1"): ("a", []),
        ("r1", "v2"): ("new", ["X"]),
        ("r2", "v1"): ("c", []),
        ("r2", "v2"): ("d", []),
    }


def test_a_keyed_load_finds_its_rows_and_leaves_the_planner_as_it_was(
    view_store: ViewStore,
) -> None:
    t = table(view_store)
    view_store.create_table()
    rows = Rows(t, "key")
    with view_store.writing() as session:
        rows.insert(session, ROWS)
    with view_store.writing() as session:
        found = rows.load(session, ["a", "c", "nobody"])
        if view_store.is_postgres:  # the index-only planning is the load's alone
            setting = session.connection().exec_driver_sql("SHOW enable_seqscan").scalar()
            assert setting == "on"
    assert sorted(found) == ["a", "c"]
    assert Rows.parsed(found["c"], "data") == ["l", {"k": None}]


def test_changes_by_a_composite_key_leave_kept_rows_alone(view_store: ViewStore) -> None:
    t = members(view_store)
    rows = Rows(t, "rollout_id", "vehicle_id", keep=("status", "rolled_back"))
    with view_store.writing() as session:
        rows.insert(
            session,
            [
                {"rollout_id": "r1", "vehicle_id": "v1", "status": "assigned", "codes": []},
                {"rollout_id": "r1", "vehicle_id": "v2", "status": "rolled_back", "codes": []},
                {"rollout_id": "r2", "vehicle_id": "v1", "status": "assigned", "codes": []},
            ],
        )
    with view_store.writing() as session:
        rows.write_changes(
            session,
            [
                (("r1", "v1"), {"status": "failed", "codes": ["APPLY_FAILED"]}),
                (("r1", "v2"), {"status": "converged", "codes": []}),  # kept: rolled back
                (("r9", "v1"), {"status": "converged", "codes": []}),  # no such member
            ],
        )
    with view_store.reading() as session:
        found = {
            (r.rollout_id, r.vehicle_id): (r.status, r.codes) for r in session.execute(select(t))
        }
    assert found == {
        ("r1", "v1"): ("failed", ["APPLY_FAILED"]),
        ("r1", "v2"): ("rolled_back", []),
        ("r2", "v1"): ("assigned", []),
    }
