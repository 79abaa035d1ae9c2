"""A probe table for the view store's own tests: text, integers, JSON and NULLs."""

from __future__ import annotations

from sqlalchemy import JSON, Column, Integer, String, Table

from muto.projections.store import ViewStore


def probe_table(view_store: ViewStore, name: str) -> Table:
    return Table(
        name,
        view_store.metadata,
        Column("key", String(8), primary_key=True),
        Column("n", Integer),
        Column("text", String(64)),
        Column("data", JSON),
    )
