"""Where the bench's control plane stores: a temporary SQLite data dir, or a fresh
PostgreSQL database of its own (dropped afterwards)."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from muto.cloud.settings import Settings

ADMIN_URL = os.environ.get(
    "MUTO_BENCH_DATABASE_URL",
    os.environ.get(
        "MUTO_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
)


@contextmanager
def sqlite() -> Iterator[tuple[str, Settings]]:
    with tempfile.TemporaryDirectory(prefix="muto-bench-api-") as tmp:
        yield "SQLite", Settings(data_dir=Path(tmp), mqtt_url=None)


@contextmanager
def postgres() -> Iterator[tuple[str, Settings] | None]:
    info = ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    name = f"muto_bench_api_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(info, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL skipped: {exc}")
        yield None
        return
    try:
        with tempfile.TemporaryDirectory(prefix="muto-bench-api-") as tmp:
            url = f"{ADMIN_URL.rpartition('/')[0]}/{name}"
            yield "PostgreSQL", Settings(database_url=url, data_dir=Path(tmp), mqtt_url=None)
    finally:
        with psycopg.connect(info, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
