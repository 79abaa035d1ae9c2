"""`muto cloud backup`: a consistent copy of a SQLite control plane's data dir, taken while
it serves (docs/deploy.md, "Backup and restore").

The views are copied before the event log: restored, views behind their log are caught
up at start, views ahead of it are refused (they would show events the log lacks and
skip the next writes). Each database goes through SQLite's online backup API, one read
transaction: a consistent snapshot, its write-ahead log included (a plain `cp` of the
.db files leaves the newest writes behind in the -wal). Then the control-plane signing
key (vehicles trust only it) and the hosted artifacts.

On PostgreSQL the events and the views are one database: `pg_dump` (or the provider's
point-in-time restore) copies both at one snapshot.
"""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from muto.cloud.settings import Settings, sqlite_path


class BackupRefused(Exception):
    """Nothing fit to call a backup can be made here; nothing was written."""


@dataclass(frozen=True)
class Copied:
    path: Path
    what: str


def back_up(settings: Settings, to: Path) -> list[Copied]:
    """Copy `settings`' data dir to `to` (new or empty), in an order a restore can start
    from; BackupRefused naming why not."""
    if settings.is_postgres or settings.is_memory:
        raise BackupRefused(
            "the events and views are in PostgreSQL: back them up with pg_dump (one "
            "snapshot of both; docs/deploy.md), and the data dir's keys/ with it"
        )
    data = settings.data_dir
    # In this order: the views never ahead of the log they were copied with.
    sources = [sqlite_path(settings.views_url), sqlite_path(settings.events_url)]
    for source in sources:
        if not source.is_file():
            raise BackupRefused(f"{source} is not there: no control plane has used it")
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise BackupRefused(f"{to} is not an empty directory: a backup never overwrites")
    to.mkdir(mode=0o700, parents=True, exist_ok=True)
    names = ("views.db", "events.db")  # what a data dir restored from `to` opens
    copied = [
        Copied(_copy_database(source, to / name), "database")
        for source, name in zip(sources, names, strict=True)
    ]
    for name, what in (("keys", "the control-plane signing key"), ("artifacts", "artifacts")):
        source = (
            settings.artifact_dir if name == "artifacts" and settings.artifact_dir else data / name
        )
        if source.is_dir():
            shutil.copytree(source, to / name)  # copy2: modes kept (the key stays 0600)
            copied.append(Copied(to / name, what))
    return copied


def _copy_database(source: Path, target: Path) -> Path:
    target.touch(mode=0o600)  # before a byte of the fleet's data is in it
    reading = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    writing = sqlite3.connect(target)
    try:
        reading.backup(writing)  # all pages in one step: one read transaction
    finally:
        writing.close()
        reading.close()
    return target
