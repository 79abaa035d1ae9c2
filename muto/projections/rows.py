"""Prebuilt, parameterised statements on one table, addressed by its key columns.

SQLAlchemy constructs and cache-keys a statement on every `update(...).where(...)`; done
per event, that dominated the projector's time (measured on SQLite: 2.7k updates/s built
per call against 28k/s built once). Here each statement is built once and every event
pays only its execution.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Delete, Row, Select, Table, Update, and_, bindparam, select
from sqlalchemy.orm import Session


class Rows:
    def __init__(self, table: Table, *key: str) -> None:
        self.table = table
        self.key = key
        where = and_(*(table.c[k] == bindparam(f"k_{k}") for k in key))
        self._where = where
        self._insert = table.insert()
        self._select: Select[Any] = select(table).where(where)
        self._delete: Delete = table.delete().where(where)
        self._updates: dict[tuple[str, ...], Update] = {}

    def _key(self, key: Mapping[str, Any]) -> dict[str, Any]:
        return {f"k_{k}": key[k] for k in self.key}

    def insert(self, session: Session, rows: dict[str, Any] | list[dict[str, Any]]) -> None:
        if rows:
            session.connection().execute(self._insert, rows)

    def get(self, session: Session, **key: Any) -> Row[Any] | None:
        return session.connection().execute(self._select, self._key(key)).one_or_none()

    def delete(self, session: Session, **key: Any) -> None:
        session.connection().execute(self._delete, self._key(key))

    def update(self, session: Session, key: Mapping[str, Any], **values: Any) -> None:
        columns = tuple(sorted(values))
        statement = self._updates.get(columns)
        if statement is None:
            statement = self._updates[columns] = (
                self.table.update()
                .where(self._where)
                .values({c: bindparam(f"v_{c}") for c in columns})
            )
        session.connection().execute(
            statement, {**self._key(key), **{f"v_{c}": v for c, v in values.items()}}
        )
