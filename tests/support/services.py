"""The machine's services as tests use them: a missing one fails the test in CI
(CI=true) and skips it elsewhere; PostgreSQL hands each user a fresh database of its own,
dropped afterwards (the one place tests create databases)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    import psycopg

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_ADMIN_URL = os.environ.get(
    "MUTO_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def unavailable(reason: str) -> NoReturn:
    """Fail in CI, skip elsewhere: CI must never pass by skipping a real backend."""
    if IN_CI:
        pytest.fail(f"required service unavailable in CI: {reason}")
    pytest.skip(reason)


def database_url(name: str) -> str:
    """The SQLAlchemy URL of database `name` on the test server."""
    return f"{PG_ADMIN_URL.rpartition('/')[0]}/{name}"


@contextmanager
def postgres_admin() -> Iterator[psycopg.Connection]:
    """An autocommit connection to the server's admin database."""
    import psycopg

    conninfo = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://", 1)
    try:
        connection = psycopg.connect(conninfo, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at {PG_ADMIN_URL}: {exc}")
    with connection:
        yield connection


@contextmanager
def fresh_database(template: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database (empty, or a copy of database `template`), dropped
    afterwards however the test ends; yields its URL."""
    name = f"muto_test_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    with postgres_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"{copy}')
    try:
        yield database_url(name)
    finally:
        with postgres_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
