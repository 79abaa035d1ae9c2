"""The cloud's side of the audit: it owns the event log, so it opens it for the audit
(read-only) and names its tables. muto/audit reads only through the EventSource port
(muto/projections/source.py); the command line (muto/fleetctl/audit.py) and the API
(muto/cloud/api/audit.py) compose the two here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eventsourcing.persistence import Notification

from muto.audit.source import AuditError, read_only_url
from muto.audit.verify import Finding, verify
from muto.cloud.eventlog import EventLog
from muto.cloud.settings import Settings
from muto.projections.source import EventSource

# eventsourcing-sqlalchemy prefixes the table with the application's name
EVENTS_TABLE = f"{EventLog.name}_events"


def open_event_log(events_url: str) -> EventLog:
    """The control plane's event log, read-only, without creating any table."""
    return EventLog(
        env={
            "PERSISTENCE_MODULE": "eventsourcing_sqlalchemy",
            "SQLALCHEMY_URL": read_only_url(events_url),
            "CREATE_TABLE": "n",
        }
    )


def stored_settings(settings: Settings) -> Settings:
    if settings.is_memory:
        raise AuditError("an in-memory control plane keeps no log to audit")
    return settings


def verify_chain(settings: Settings, anchors: Mapping[int, str] = {}) -> Finding:
    """`muto audit verify` on the control plane's databases (both opened read-only)."""
    found = stored_settings(settings)
    return verify(found.events_url, found.views_url, EVENTS_TABLE, anchors)


class LocalAudit:
    """The audit's backend when it reads the databases itself (muto.audit.cli.Backend)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = stored_settings(settings)
        self._log: EventLog | None = None

    def log(self, vehicle: str | None = None, rollout: str | None = None) -> EventSource:
        """The whole log: the reader picks a story's records itself."""
        if self._log is None:
            self._log = open_event_log(self.settings.events_url)
        return self._log

    def verify(self, anchors: Mapping[int, str]) -> Finding:
        return verify_chain(self.settings, anchors)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()


class Decoder:
    """Turns a stored record into its domain event the way the control plane does (the
    same mapper: transcodings and upcasters), for records fetched over the API."""

    def __init__(self) -> None:
        self._log = EventLog(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})

    def __call__(self, record: Notification) -> Any:
        return self._log.mapper.to_domain_event(record)
