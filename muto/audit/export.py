"""`export`: the log as JSON lines, one event per line, in position order, for other
tools (SIEM, data warehouse). Streams: memory does not grow with the log."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import msgspec

from muto.audit.source import entries
from muto.projections.source import EventSource


def export_lines(
    log: EventSource, since: datetime | None = None, until: datetime | None = None
) -> Iterator[bytes]:
    """Events stamped in [since, until], each a JSON object and a newline."""
    for entry in entries(log):
        if (since is None or entry.at >= since) and (until is None or entry.at <= until):
            yield msgspec.json.encode(entry.to_json()) + b"\n"
