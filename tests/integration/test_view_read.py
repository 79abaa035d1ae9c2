"""`ViewStore.read`, the hot single-statement read (a poll's document, a token), runs a
statement compiled once on the driver's own connection: it must give what SQLAlchemy
gives, fail as SQLAlchemy fails, and never hand a connection back in a state a writer
could trip on (autocommit on PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Column, String, Table, bindparam, select
from sqlalchemy.exc import DBAPIError

from muto.projections.store import ViewStore
from tests.support.views import probe_table

ROWS: list[dict[str, Any]] = [
    {"key": "a", "n": 1, "text": "quote ' and ünïcode", "data": {"x": [1, None]}},
    {"key": "b", "n": None, "text": None, "data": None},
]


@pytest.fixture
def probe(view_store: ViewStore) -> Table:
    t = probe_table(view_store, "view_read_probe")
    view_store.create_table()
    with view_store.writing() as session:
        session.execute(t.insert(), ROWS)
    return t


def test_a_read_gives_what_sqlalchemy_gives_by_name_and_by_position(
    view_store: ViewStore, probe: Table
) -> None:
    by_key = select(probe).where(probe.c.key == bindparam("key"))
    for row in ROWS:
        with view_store.reading() as session:
            expected = tuple(session.execute(by_key, {"key": row["key"]}).one())
        found = view_store.read(by_key, {"key": row["key"]})
        assert [tuple(f) for f in found] == [expected]
        assert found[0].data == row["data"]  # JSON decoded on both databases
        assert (found[0].key, found[0].n, found[0].text) == (row["key"], row["n"], row["text"])
    assert view_store.read(by_key, {"key": "nobody"}) == []


def test_values_written_into_the_statement_are_kept_and_given_ones_bind(
    view_store: ViewStore, probe: Table
) -> None:
    fixed = select(probe.c.n).where(probe.c.key == "a")
    assert [r.n for r in view_store.read(fixed)] == [1]
    both = select(probe.c.key).where(probe.c.text.is_not(None), probe.c.key == bindparam("k"))
    assert view_store.read(both, {"k": "a"})[0].key == "a"
    assert view_store.read(both, {"k": "b"}) == []  # its text is NULL


def test_an_in_list_is_refused_with_the_way_to_read_it(view_store: ViewStore, probe: Table) -> None:
    keys = select(probe.c.n).where(probe.c.key.in_(bindparam("keys", expanding=True)))
    with pytest.raises(ValueError, match=r"use reading\(\)"):
        view_store.read(keys, {"keys": ["a", "b"]})


def test_a_failed_read_raises_as_sqlalchemy_does_and_leaves_writers_transactional(
    view_store: ViewStore, probe: Table
) -> None:
    missing = Table("view_read_missing", view_store.metadata, Column("key", String(8)))
    with pytest.raises(DBAPIError):
        view_store.read(select(missing.c.key))
    assert view_store.read(select(probe.c.key).where(probe.c.key == "a"))[0].key == "a"
    # A write that fails after its insert rolls back whole: its connection (the pool's
    # one, used by both reads above) is not left in autocommit.
    with pytest.raises(RuntimeError), view_store.writing() as session:
        session.execute(probe.insert(), [{"key": "c", "n": 3}])
        raise RuntimeError("the batch fails after its insert")
    assert view_store.read(select(probe.c.key).where(probe.c.key == "c")) == []
