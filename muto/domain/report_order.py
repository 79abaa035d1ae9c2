"""Which reconcile report is a vehicle's latest: the agent's count, never its clock.

A vehicle's wall clock is untrusted (it jumps, it runs hours ahead), so `observedAt` is
information only. The agent stamps every reconcile report it journals with its place:
`incarnation`, a random id chosen when the journal is created (kept across agent
restarts), and `number`, the journal's count of reconcile reports (1, 2, ...).

The rule (`admit`), applied in log order by the inventory view, so a rebuild agrees:
- within one incarnation, a higher number is newer, whatever the delivery order (the
  courier may switch transports, a broker or a retry may deliver a report twice);
- a report from another incarnation means the journal was wiped or replaced: the new
  incarnation is shown and the old one is retired at the number it had reached. Its late
  deliveries (at or below that number) are ignored; a report above it means that journal
  is alive after all, and it is shown again. So no count the vehicle will never reach
  again freezes the view;
- reports without a place (agents before the count, and every report stored before it:
  the event log is never rewritten) keep the old order, by (desired-state sequence,
  observedAt); any placed report is newer than all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

import msgspec

from muto.domain.wire import Reference, Wire

# What a stored `observedAt` whose time in UTC no datetime can hold is read as: the
# earliest or the latest one (Vehicle.ReconcileReported.repair). The wire refuses such a
# time now (reports.py); one stored before stopped the views at `legacy_key`.
EARLIEST_UTC = "0001-01-01T00:00:00Z"
LATEST_UTC = "9999-12-31T23:59:59.999999Z"
RETIRED_KEPT = 32  # retired incarnations remembered (a wipe or replacement each)
# The views store a journal number as a signed 64-bit integer; no journal reaches it.
MAX_JOURNAL_NUMBER = 2**63 - 1


class ReportPlace(Wire, frozen=True, kw_only=True):
    """Where a report sits in its agent's journal."""

    incarnation: Annotated[str, Reference]
    # A larger number was once stored as an event no view could take: such an event is
    # now read as a report without a place (Vehicle.ReconcileReported.repair).
    number: Annotated[int, msgspec.Meta(ge=1, le=MAX_JOURNAL_NUMBER)]


class ReportLedger(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What the view remembers of a vehicle's reports to place the next one."""

    legacy: str | None = None  # legacy_key of the newest report without a place
    incarnation: str | None = None  # of the report shown, when it had a place
    number: int = 0
    retired: tuple[tuple[str, int], ...] = ()  # (incarnation, number reached), oldest first


def legacy_key(sequence: int | None, observed_at: datetime) -> str:
    """The order of reports without a place: by the desired-state sequence they answer
    (none first), then by the vehicle's clock (in UTC)."""
    observed = observed_at.astimezone(UTC).isoformat()
    return f"{(sequence if sequence is not None else -1) + 1:012d}|{observed}"


def beyond_utc(observed_at: str) -> str | None:
    """The time a stored `observedAt` is read as when its UTC value is beyond what a
    datetime holds (EARLIEST_UTC or LATEST_UTC), else None. Only the calendar's first
    and last days can be (an offset is under a day), so other times cost one prefix test:
    this runs on every stored report decoded."""
    if not observed_at.startswith(("0001-01-01", "9999-12-31")):
        return None
    try:
        datetime.fromisoformat(observed_at).astimezone(UTC)
    except OverflowError:
        return EARLIEST_UTC if observed_at.startswith("0001") else LATEST_UTC
    except ValueError:  # not a time at all: not this bound's business
        return None
    return None


def health_overtaken(
    last: ReportPlace | None, last_id: str | None, place: ReportPlace | None, report_id: str
) -> bool:
    """Whether a health report is no news beside the vehicle's last health transition
    (`last`, `last_id`): that very report delivered again, or one the agent said before it
    in the same journal (a retry that lands after a newer report). A health report's
    number is its journal position (a report the agent could not journal says the next
    one, so an equal number is a newer report unless it is the same). Reports from another
    journal, and those without a place, are judged by what they say, as before."""
    if report_id == last_id:
        return True
    if last is None or place is None or place.incarnation != last.incarnation:
        return False
    return place.number < last.number


def admit_stored(
    ledger: ReportLedger, place: ReportPlace | None, sequence: int | None, observed_at: str
) -> ReportLedger | None:
    """`admit` for a stored report, whose time is text: parsed only for a report without
    a place (the views place reports with this)."""
    return admit(ledger, place, lambda: legacy_key(sequence, datetime.fromisoformat(observed_at)))


def admit(
    ledger: ReportLedger, place: ReportPlace | None, legacy: Callable[[], str]
) -> ReportLedger | None:
    """The ledger once a report is shown, or None when the report is not the newest.
    `legacy` gives the report's legacy_key, asked only for a report without a place
    (today's agents give every report one; the key parses and formats a time)."""
    if place is None:
        key = legacy()
        if ledger.incarnation is not None or (ledger.legacy is not None and ledger.legacy > key):
            return None
        return msgspec.structs.replace(ledger, legacy=key)
    if place.incarnation == ledger.incarnation:
        if place.number <= ledger.number:
            return None  # a duplicate, or overtaken by a newer report
        return msgspec.structs.replace(ledger, number=place.number)
    retired = dict(ledger.retired)
    if place.number <= retired.get(place.incarnation, 0):
        return None  # a late delivery from a journal replaced since
    if ledger.incarnation is not None:
        retired[ledger.incarnation] = ledger.number
    retired.pop(place.incarnation, None)
    return ReportLedger(
        legacy=ledger.legacy,
        incarnation=place.incarnation,
        number=place.number,
        retired=tuple(retired.items())[-RETIRED_KEPT:],
    )
