"""Bounds that keep a valid-looking value from stopping the views (review of the API,
2026-12): an `observedAt` whose UTC value leaves Python's datetime range, and a rollout
deadline or bake no date can hold. Each is refused where the payload is decoded (one
rule per field, so HTTP and MQTT alike), published in the schema, and read back within
range from a store that holds one (the event classes' `repair`)."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from muto.domain.model.rollout import Rollout
from muto.domain.model.rollout_states import LIMITS
from muto.domain.model.vehicle import Vehicle
from muto.domain.report_order import EARLIEST_UTC, LATEST_UTC, beyond_utc, legacy_key
from muto.domain.reports import OBSERVED_PATTERN, HealthReport, ReconcileReport
from muto.domain.requests import RolloutRequest
from muto.domain.rollout_rules import MAX_PHASE_SEC, phase_deadline
from muto.domain.wire import WireError, decode
from muto.fleetctl.rollouts import _limit
from tests.support.api_server import health_body, reconcile_body

# Valid RFC 3339 times whose conversion to UTC leaves the datetime range.
BEYOND = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:59:59+01:00"]
# The calendar's first and last days are refused whatever the offset (the published rule).
EDGE_DAYS = ["0001-01-01T00:00:00Z", "0001-01-01T05:00:00-01:00", "9999-12-31T00:00:00Z"]
# The nearest days are accepted with any offset: their UTC value is always in range.
NEAR_EDGES = [
    "0001-01-02T00:00:00+23:59",
    "9999-12-30T23:59:59.999999-23:59",
    "1970-01-01T00:00:00Z",
]


def reconcile(observed_at: str) -> dict[str, Any]:
    return {**reconcile_body("v1", "r-1"), "observedAt": observed_at}


def health(observed_at: str) -> dict[str, Any]:
    return {**health_body("v1", "h-1"), "observedAt": observed_at}


BODIES = [(reconcile, ReconcileReport), (health, HealthReport)]


@pytest.mark.parametrize(("body", "kind"), BODIES)
@pytest.mark.parametrize("at", BEYOND + EDGE_DAYS)
def test_a_time_at_the_calendars_edge_is_refused_naming_the_field(
    body: Any, kind: type, at: str
) -> None:
    with pytest.raises(WireError) as refused:
        decode(msgspec.json.encode(body(at)), kind)
    assert refused.value.path == "$.observedAt"
    assert "out of range" in refused.value.message


@pytest.mark.parametrize(("body", "kind"), BODIES)
@pytest.mark.parametrize("at", NEAR_EDGES)
def test_a_time_next_to_the_edge_is_accepted_and_converts_to_utc(
    body: Any, kind: type, at: str
) -> None:
    report: Any = decode(msgspec.json.encode(body(at)), kind)
    report.observed_at.astimezone(UTC)  # what the inventory and the health table do


offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))


@given(st.datetimes(timezones=offsets))
def test_the_schema_pattern_and_the_decoder_agree(at: datetime) -> None:
    """Code and spec say one rule; and whatever decodes converts to UTC."""
    text = msgspec.json.encode(at).decode().strip('"')
    published = re.search(OBSERVED_PATTERN, text) is not None
    try:
        report = decode(msgspec.json.encode(reconcile(text)), ReconcileReport)
    except WireError:
        accepted = False
    else:
        accepted = True
        legacy_key(None, report.observed_at)
    assert accepted == published, text


@pytest.mark.parametrize("name", sorted(LIMITS.values()))
@pytest.mark.parametrize("value", [MAX_PHASE_SEC + 1, 2.5e11, 1e300])
def test_a_deadline_or_bake_beyond_the_bound_is_refused(name: str, value: float) -> None:
    body = {
        "selector": "model=m3",
        "stack": "core",
        "version": "1.0.0",
        "thresholds": {name: value},
    }
    with pytest.raises(WireError) as refused:
        decode(msgspec.json.encode(body), RolloutRequest)
    assert refused.value.path == f"$.thresholds.{name}"


def test_the_longest_deadline_is_accepted_and_is_a_date() -> None:
    body = {
        "selector": "model=m3",
        "stack": "core",
        "version": "1.0.0",
        "thresholds": dict.fromkeys(LIMITS.values(), MAX_PHASE_SEC),
    }
    thresholds = decode(msgspec.json.encode(body), RolloutRequest).thresholds
    now = datetime.now(UTC)
    assert phase_deadline(now, thresholds.canary_deadline_sec, 3600.0) > now


def test_a_deadline_read_from_an_older_snapshot_is_never_beyond_the_bound() -> None:
    """A Rollout snapshot taken before the bound keeps the limit it had in memory."""
    at = datetime(2026, 12, 1, tzinfo=UTC)
    assert phase_deadline(at, 1e300, 5.0) == at + timedelta(seconds=MAX_PHASE_SEC + 5.0)


@pytest.mark.parametrize(
    ("stored", "read"),
    [
        ("0001-01-01T00:00:00+01:00", EARLIEST_UTC),
        ("9999-12-31T23:59:59-14:00", LATEST_UTC),
        ("0001-01-01T00:00:00Z", None),
        ("9999-12-31T23:59:59Z", None),
        ("2026-01-01T00:00:00+14:00", None),
    ],
)
def test_a_stored_time_is_read_within_range(stored: str, read: str | None) -> None:
    assert beyond_utc(stored) == read
    if read is not None:
        legacy_key(None, datetime.fromisoformat(read))


def test_the_reconcile_repair_reads_both_bounds() -> None:
    state: dict[str, Any] = {
        "report": {"observedAt": BEYOND[0], "journal": {"incarnation": "j", "number": 2**64}}
    }
    said = Vehicle.ReconcileReported.repair(state)
    assert said is not None and "observedAt" in said and "journal" in said
    assert state["report"] == {"observedAt": EARLIEST_UTC, "journal": None}
    assert Vehicle.ReconcileReported.repair({"report": {"observedAt": NEAR_EDGES[0]}}) is None


def test_the_rollout_repair_reads_each_limit_as_the_bound() -> None:
    state: dict[str, Any] = {
        "thresholds": {
            "convergedPct": 95.0,
            "canaryDeadlineSec": 1e300,
            "waveDeadlineSec": 3600.0,
            "bakeSec": 2.5e11,
        }
    }
    said = Rollout.Started.repair(state)
    assert said is not None and "canaryDeadlineSec" in said and "bakeSec" in said
    assert state["thresholds"] == {
        "convergedPct": 95.0,
        "canaryDeadlineSec": MAX_PHASE_SEC,
        "waveDeadlineSec": 3600.0,
        "bakeSec": MAX_PHASE_SEC,
    }
    assert Rollout.Started.repair({"thresholds": {"canaryDeadlineSec": 60.0}}) is None


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("canaryDeadlineSec", "1e300"),
        ("waveDeadlineSec", "inf"),
        ("bakeSec", "nan"),
        ("bakeSec", "-1"),
        ("canaryDeadlineSec", "0"),
        ("waveDeadlineSec", "soon"),
    ],
)
def test_the_cli_refuses_a_limit_the_api_would(name: str, text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        _limit(name)(text)


def test_the_cli_takes_a_limit_within_the_bound() -> None:
    assert _limit("bakeSec")("0") == 0.0
    assert _limit("canaryDeadlineSec")(str(MAX_PHASE_SEC)) == MAX_PHASE_SEC
