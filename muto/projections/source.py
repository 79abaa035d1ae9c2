"""The port through which projections and the audit read the event log.

Both only read: the position the log has reached, stored records in log order, and the
domain event a record holds. The cloud's event log (muto.cloud.eventlog.EventLog) is
the adapter; whoever composes a process passes it in, so nothing here imports upward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from eventsourcing.persistence import Notification


class EventSource(Protocol):
    def position(self) -> int:
        """The position of the last stored record (0 when the log is empty)."""
        ...

    def select(self, after: int, limit: int, until: int | None = None) -> Sequence[Notification]:
        """Up to `limit` records with positions in (after, until], in log order; fewer
        only when the log held no more of them when read."""
        ...

    def decode(self, record: Notification) -> Any:
        """The domain event a stored record holds."""
        ...
