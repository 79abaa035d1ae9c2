"""`replay`: every view as it stood at a past position, rebuilt from the event log into a
separate SQLite file. The live views are never opened; the log is only read.

The output holds the same tables as the live view store (and each projection's tracked
position), so the same queries answer "what did the control plane show then?".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from muto.audit.source import AuditError
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
    """Replay positions 1..until (everything when None) into a new SQLite file."""
    if out.exists():
        raise AuditError(f"{out} exists: replay writes a new file, choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    store = ViewStore(f"sqlite:///{out}")
    try:
        views = Views(store)
        views.start()
        runner = ProjectionRunner(log, store, views.all)
        events = runner.catch_up(until=until)
        with store.reading() as session:
            tables = {
                table.name: session.query(table).count()
                for projection in views.all
                for table in projection.tables
            }
        return Replayed(out, runner.position(), events, tables)
    finally:
        store.close()
