"""`export`: the log as JSON lines, one event per line, in position order, for other
tools (SIEM, data warehouse). Streams: memory does not grow with the log."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

import msgspec

from muto.audit.source import AuditError, entries
from muto.projections.source import EventSource
from muto.trust.files import atomic_write


def export_lines(
    log: EventSource, since: datetime | None = None, until: datetime | None = None
) -> Iterator[bytes]:
    """Events stamped in [since, until], each a JSON object and a newline."""
    for entry in entries(log):
        if (since is None or entry.at >= since) and (until is None or entry.at <= until):
            yield msgspec.json.encode(entry.to_json()) + b"\n"


SQLITE_HEADER = b"SQLite format 3\x00"
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def is_database(path: Path) -> bool:
    """An SQLite database, or one of its side files: an event log or a view store is
    never what an export may overwrite."""
    for suffix in SQLITE_SIDE_FILES:
        if path.name.endswith(suffix):
            return is_database(path.with_name(path.name.removesuffix(suffix)))
    try:
        with path.open("rb") as f:
            return f.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


def write_atomically(out: Path, lines: Iterable[bytes]) -> None:
    """`lines` into `out` (`atomic_write`): an export that stops (an unreadable row, a
    full disk) leaves `out` as it was."""
    if is_database(out):
        raise AuditError(
            f"{out} is an SQLite database or one of its files (an event log?): "
            "export writes JSON lines"
        )
    try:
        atomic_write(out, lines, mode=0o666 & ~_umask())  # as open() would create it
    except OSError as exc:
        raise AuditError(f"cannot write {out}: {exc.strerror or exc}") from None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
