"""GET /audit: the read-only audit timeline for operators."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from muto.cloud.api.context import int_param, off_loop, operator, plane
from muto.cloud.api.responses import ok

# The views store log positions as INTEGER: a larger `after` was a 500 on PostgreSQL.
MAX_POSITION = 2**31 - 1


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
        since=q.get("since"),
        until=q.get("until"),
        after=after,
        limit=limit,
    )
    next_after = entries[-1]["position"] if len(entries) == limit else None
    return ok(entries, metadata={"limit": limit, "nextAfter": next_after})
