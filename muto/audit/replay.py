"""`replay`: every view as it stood at a past position, rebuilt from the event log into a
separate SQLite file. The live views are never opened; the log is only read.

The output holds the same tables as the live view store (and each projection's tracked
position), so the same queries answer "what did the control plane show then?".
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from muto.audit.source import AuditError, CheckedSource
from muto.projections import Views
from muto.projections.runner import ProjectionRunner
from muto.projections.source import EventSource
from muto.projections.store import ViewStore


@dataclass(frozen=True)
class Replayed:
    out: Path
    position: int  # the last event replayed (0: none)
    events: int
    tables: dict[str, int]  # view table -> rows


def replay(log: EventSource, out: Path, until: int | None = None) -> Replayed:
    """Replay positions 1..until (everything when None) into a new SQLite file. The
    views are built in a temporary sibling renamed to `out` once complete: a replay that
    stops (an unreadable row) leaves nothing behind."""
    if out.exists():
        raise AuditError(f"{out} exists: replay writes a new file, choose another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".replaying", dir=out.parent)
    except OSError as exc:
        raise AuditError(f"cannot write {out}: {exc.strerror or exc}") from None
    os.close(fd)
    building = Path(name)
    store = ViewStore(f"sqlite:///{building}")
    try:
        views = Views(store)
        views.start()
        runner = ProjectionRunner(CheckedSource(log), store, views.all)
        events = runner.catch_up(until=until)
        with store.reading() as session:
            tables = {
                table.name: session.query(table).count()
                for projection in views.all
                for table in projection.tables
            }
        position = runner.position()
        store.close()
        building.rename(out)
        return Replayed(out, position, events, tables)
    finally:
        store.close()
        for leftover in (building, *(Path(f"{building}{s}") for s in ("-wal", "-shm"))):
            leftover.unlink(missing_ok=True)
