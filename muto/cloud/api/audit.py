"""The audit over HTTP, for operators without access to the databases.

GET /audit: the timeline (from the audit view). GET /audit/records: the event log itself,
paged by position, the records as stored, which `muto audit replay | explain | export`
read as they read the log (muto/fleetctl/audit.py). GET /audit/verify: the hash chain
checked here, beside the databases, by the same code as `muto audit verify`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime
from typing import Any

from eventsourcing.persistence import Notification
from starlette.requests import Request
from starlette.responses import Response

from muto.audit.source import AuditError
from muto.audit.story import wanted_for_rollout, wanted_for_vehicle
from muto.audit.verify import parse_anchor
from muto.cloud.api.context import int_param, off_loop, operator, plane
from muto.cloud.api.responses import ok
from muto.cloud.auditing import verify_chain
from muto.cloud.errors import Conflict, Invalid
from muto.domain.instants import EXAMPLE, InstantError, parse_instant
from muto.projections.source import EventSource

# The views store log positions as INTEGER: a larger `after` was a 500 on PostgreSQL.
MAX_POSITION = 2**31 - 1
RECORDS_PAGE = 1000
# Records read per request at most when a story filters them: a page of a rare story
# ends early (fewer records, `nextAfter` where reading stopped) instead of reading the
# whole log in one request.
SCAN = 20 * RECORDS_PAGE


async def timeline(request: Request) -> Response:
    await operator(request)
    q = request.query_params
    limit = int_param(request, "limit", 200, 1, 5000)
    after = int_param(request, "after", 0, 0, MAX_POSITION)
    entries = await off_loop(
        plane(request).queries.audit,
        vehicle_id=q.get("vehicleId"),
        rollout_id=q.get("rolloutId"),
        correlation_id=q.get("correlationId"),
        since=time_param(request, "since"),
        until=time_param(request, "until"),
        after=after,
        limit=limit,
    )
    next_after = entries[-1].position if len(entries) == limit else None
    return ok(entries, metadata={"limit": limit, "nextAfter": next_after})


def time_param(request: Request, name: str) -> datetime | None:
    """A query parameter that is a time, with its offset (muto.domain.instants): a
    compliance read must not guess the zone, nor come back empty, as it did when the
    text was compared as it came."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return parse_instant(raw)
    except InstantError:
        # A '+' left unescaped in a URL arrives as a space: say so.
        hint = " (in a URL a '+' is written %2B)" if " " in raw else ""
        raise Invalid(
            f"query parameter {name!r} must be an RFC 3339 time with an offset, "
            f"e.g. {EXAMPLE}{hint}",
            {"path": f"query.{name}"},
        ) from None


Keep = Callable[[Notification], bool]


def _story(request: Request) -> Keep | None:
    """forVehicle, forRollout: the records either story is told from."""
    keeps = [
        wanted(found)
        for name, wanted in (("forVehicle", wanted_for_vehicle), ("forRollout", wanted_for_rollout))
        if (found := request.query_params.get(name))
    ]
    if not keeps:
        return None
    return lambda record: any(keep(record) for keep in keeps)


def read_records(
    log: EventSource, after: int, until: int | None, limit: int, keep: Keep | None
) -> tuple[list[Notification], int | None]:
    """Up to `limit` kept records after `after`, and where the next page starts (None:
    the log, or its part up to `until`, has been read to the end)."""
    found: list[Notification] = []
    scanned = 0
    while True:
        batch = log.select(after, RECORDS_PAGE if keep else limit, until)
        for record in batch:
            after, scanned = record.id, scanned + 1
            if keep is None or keep(record):
                found.append(record)
                if len(found) == limit:
                    return found, after
        if len(batch) < (RECORDS_PAGE if keep else limit):
            return found, None
        if scanned >= SCAN:
            return found, after


def _record(record: Notification) -> dict[str, Any]:
    return {
        "position": record.id,
        "originatorId": str(record.originator_id),
        "originatorVersion": record.originator_version,
        "topic": record.topic,
        "state": base64.b64encode(record.state).decode(),
    }


async def records(request: Request) -> Response:
    await operator(request)
    limit = int_param(request, "limit", 200, 1, RECORDS_PAGE)
    after = int_param(request, "after", 0, 0, MAX_POSITION)
    until = int_param(request, "until", MAX_POSITION, 0, MAX_POSITION)
    keep = _story(request)
    log = plane(request).log

    def read() -> tuple[list[Notification], int | None, int]:
        found, next_after = read_records(log, after, until, limit, keep)
        return found, next_after, log.position()

    found, next_after, head = await off_loop(read)
    return ok(
        [_record(r) for r in found],
        metadata={"limit": limit, "nextAfter": next_after, "head": head},
    )


def _anchors(request: Request) -> dict[int, str]:
    anchors = {}
    for raw in request.query_params.getlist("anchor"):
        found = parse_anchor(raw)
        if found is None:
            raise Invalid(
                "anchor must be POSITION:SHA256HEX (64 hex digits)", {"path": "query.anchor"}
            )
        anchors[found[0]] = found[1]
    return anchors


async def verify(request: Request) -> Response:
    await operator(request)
    anchors = _anchors(request)
    try:
        found = await off_loop(verify_chain, plane(request).settings, anchors)
    except AuditError as exc:  # no chain yet, an in-memory control plane
        raise Conflict(str(exc)) from None
    return ok(found.to_json())
