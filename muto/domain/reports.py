"""What vehicles tell the cloud: reconcile reports (events) and health (a read model)."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from muto.domain.desired import StackRef
from muto.domain.reasons import ReasonCode
from muto.domain.report_order import ReportPlace
from muto.domain.wire import FieldError, Identifier, Reference, Wire

# A vehicle's clock zone is not the cloud's: a time without a UTC offset is ambiguous,
# and the latest-health table orders reports by it (in UTC, as does the inventory).
# The date as written must lie within 0001-01-02..9999-12-30: then whatever the offset
# (under a day), the time in UTC is one Python can hold. A valid RFC 3339 time at the
# calendar's edge (0001-01-01T00:00:00+01:00) was stored once and stopped the views
# (docs/event-store.md). The pattern says the same to JSON Schema, where `format`
# checks the rest; `observed` is the rule as decoding applies it.
FIRST_DATE, LAST_DATE = date(1, 1, 2), date(9999, 12, 30)
OBSERVED_PATTERN = "^(?!0001-01-01|9999-12-31)"
Aware = msgspec.Meta(
    tz=True,
    description="RFC 3339 with a UTC offset; the date as written within 0001-01-02..9999-12-30",
    extra_json_schema={"pattern": OBSERVED_PATTERN},
)


def observed(at: datetime) -> None:
    """Refuse an `observedAt` outside what the cloud can convert to UTC (see Aware)."""
    if not FIRST_DATE <= at.date() <= LAST_DATE:
        raise FieldError(
            f"observedAt {at.isoformat()} is out of range: its date must be within "
            f"{FIRST_DATE.isoformat()}..{LAST_DATE.isoformat()}",
            "$.observedAt",
        )


class ReconcileStatus(StrEnum):
    CONVERGED = "converged"  # running what the revision asks for, and ready
    BLOCKED = "blocked"  # a safety gate holds the apply; retried when it clears
    REJECTED = "rejected"  # the document or release failed verification/compatibility
    ROLLED_BACK = "rolled_back"  # apply failed; previous known good restored
    FAILED = "failed"  # apply failed and no rollback target could be restored


# Every status that is not a success says why: at least one code (spec/reason-codes.yaml).
NEEDS_REASON = frozenset(set(ReconcileStatus) - {ReconcileStatus.CONVERGED})
# The revision's release was taken on (not refused before) and failed on the vehicle.
FAILED_THERE = frozenset({ReconcileStatus.ROLLED_BACK, ReconcileStatus.FAILED})


class Timings(Wire, frozen=True, kw_only=True):
    apply_sec: float | None = None
    readiness_sec: float | None = None


class ReconcileReport(Wire, frozen=True, kw_only=True):
    # Required, like every payload's `schema`: a payload says which contract it follows.
    schema: Literal["muto.reconcile-report.v1"]
    report_id: Annotated[str, Reference]
    vehicle_id: Annotated[str, Identifier]
    desired_state_revision: Annotated[str, Reference] | None = None
    sequence: int | None = None
    status: ReconcileStatus
    reason_codes: list[ReasonCode] = []
    running: StackRef | None = None
    timings: Timings = Timings()
    observed_at: Annotated[datetime, Aware]  # information only: vehicle clocks are untrusted
    # Where the agent journaled it: what orders a vehicle's reports (report_order.py).
    # None from agents before it (and in every report stored before it).
    journal: ReportPlace | None = None

    schema_rules: ClassVar[dict[str, Any]] = {
        "if": {
            "properties": {"status": {"enum": sorted(s.value for s in NEEDS_REASON)}},
            "required": ["status"],
        },
        "then": {"required": ["reasonCodes"], "properties": {"reasonCodes": {"minItems": 1}}},
    }

    def __post_init__(self) -> None:
        observed(self.observed_at)
        if self.status in NEEDS_REASON and not self.reason_codes:
            raise FieldError(
                f"a {self.status.value} report needs at least one reason code in reasonCodes",
                "$.reasonCodes",
            )


class HealthStatus(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


class HealthReport(Wire, frozen=True, kw_only=True):
    schema: Literal["muto.health-report.v1"]
    report_id: Annotated[str, Reference]
    vehicle_id: Annotated[str, Identifier]
    status: HealthStatus
    reason_codes: list[ReasonCode] = []
    running: StackRef | None = None
    metrics: dict[str, float] = {}
    observed_at: Annotated[datetime, Aware]
    # Where the agent stood in its journal when it said this (report_order.py): what
    # orders a vehicle's health reports. None from agents before it.
    journal: ReportPlace | None = None

    # Every status but healthy says why (spec/reason-codes.yaml), as a reconcile does.
    schema_rules: ClassVar[dict[str, Any]] = {
        "if": {
            "properties": {"status": {"enum": ["degraded", "unhealthy"]}},
            "required": ["status"],
        },
        "then": {"required": ["reasonCodes"], "properties": {"reasonCodes": {"minItems": 1}}},
    }

    def __post_init__(self) -> None:
        observed(self.observed_at)
        if self.status != HealthStatus.HEALTHY and not self.reason_codes:
            raise FieldError(
                f"a {self.status} health report needs at least one reason code in reasonCodes",
                "$.reasonCodes",
            )
