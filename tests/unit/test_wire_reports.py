"""Reports on the wire (#14 items 13, 14): a status that is not a success says why with
at least one reason code, and every payload names its schema. The wire Structs enforce
both, so the agent cannot build such a report and the cloud cannot store one, over
HTTP or MQTT; the published JSON Schemas say the same."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from muto.domain.messages import TOPICS, DesiredNotify, Presence, RefreshRequest
from muto.domain.reasons import ReasonCode
from muto.domain.reports import NEEDS_REASON, HealthReport, ReconcileReport, ReconcileStatus
from muto.domain.wire import FieldError, WireError, decode, published

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def report(**fields: Any) -> dict[str, Any]:
    return {
        "schema": "muto.reconcile-report.v1",
        "reportId": "r1",
        "vehicleId": "v1",
        "status": "converged",
        "observedAt": "2026-01-01T00:00:00Z",
        **fields,
    }


def test_every_status_but_converged_needs_a_reason() -> None:
    assert set(ReconcileStatus) - NEEDS_REASON == {ReconcileStatus.CONVERGED}


@pytest.mark.parametrize("status", sorted(NEEDS_REASON))
def test_a_report_without_a_reason_is_refused_naming_reason_codes(status: str) -> None:
    for body in (report(status=status), report(status=status, reasonCodes=[])):
        with pytest.raises(WireError) as refused:
            decode(msgspec.json.encode(body), ReconcileReport)
        assert refused.value.path == "$.reasonCodes"
        assert status in refused.value.message
    ok = decode(
        msgspec.json.encode(report(status=status, reasonCodes=["APPLY_FAILED"])), ReconcileReport
    )
    assert ok.reason_codes == [ReasonCode.APPLY_FAILED]


@pytest.mark.parametrize("status", sorted(NEEDS_REASON))
def test_the_agent_cannot_build_a_report_without_a_reason(status: ReconcileStatus) -> None:
    with pytest.raises(FieldError, match="reasonCodes"):
        ReconcileReport(
            schema="muto.reconcile-report.v1",
            report_id="r1",
            vehicle_id="v1",
            status=status,
            observed_at=NOW,
        )


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (ReconcileReport, {k: v for k, v in report().items() if k != "schema"}),
        (
            HealthReport,
            {
                "reportId": "h1",
                "vehicleId": "v1",
                "status": "healthy",
                "observedAt": "2026-01-01T00:00:00Z",
            },
        ),
        (Presence, {"vehicleId": "v1", "state": "online"}),
        (RefreshRequest, {"requestId": "q1"}),
        (DesiredNotify, {"vehicleId": "v1", "revision": "r", "sequence": 1, "url": "x"}),
    ],
)
def test_a_payload_without_its_schema_is_refused(kind: type[Any], body: dict[str, Any]) -> None:
    with pytest.raises(WireError) as refused:
        decode(msgspec.json.encode(body), kind)
    assert refused.value.path == "$.schema"


def test_the_published_schema_states_the_reason_rule() -> None:
    found = published(msgspec.json.schema(ReconcileReport))["$defs"]["ReconcileReport"]
    assert "schema" in found["required"]
    rule = found["if"]["properties"]["status"]["enum"]
    assert set(rule) == {str(s) for s in NEEDS_REASON}
    assert found["then"] == {
        "required": ["reasonCodes"],
        "properties": {"reasonCodes": {"minItems": 1}},
    }


def test_every_vehicle_to_cloud_report_and_every_command_requires_its_schema() -> None:
    for leaf, spec in TOPICS.items():
        if spec.payload in (ReconcileReport, HealthReport, Presence, RefreshRequest, DesiredNotify):
            required = msgspec.json.schema(spec.payload)["$defs"][spec.payload.__name__]["required"]
            assert "schema" in required, leaf


# -- item 11: the published schema says exactly what decoding accepts ----------------------


def test_an_integral_float_is_an_integer_as_json_schema_says() -> None:
    from muto.domain.desired import DesiredStateRequest

    body = b'{"target": {"selector": "a=1"}, "stack": {"name": "c", "version": "1"}, '
    assert decode(body + b'"ttlSec": 3600.0}', DesiredStateRequest).ttl_sec == 3600
    with pytest.raises(WireError) as refused:
        decode(body + b'"ttlSec": 3600.5}', DesiredStateRequest)
    assert refused.value.path == "$.ttlSec"
    sequence = decode(msgspec.json.encode(report(sequence=5.0)), ReconcileReport).sequence
    assert sequence == 5 and isinstance(sequence, int)


def test_a_vehicle_token_request_needs_its_vehicle_and_the_schema_says_so() -> None:
    from muto.cloud.api.schema import components
    from muto.domain.requests import TokenRequest

    with pytest.raises(WireError) as refused:
        decode(b'{"role": "vehicle"}', TokenRequest)
    assert refused.value.path == "$.vehicleId"
    rules = components()["TokenRequest"]
    assert rules["then"]["required"] == ["vehicleId"]
    assert rules["else"] == {"properties": {"vehicleId": {"type": "null"}}}


def test_a_journal_number_beyond_the_views_integers_is_refused_by_path() -> None:
    """The views keep a report's journal number as a signed 64-bit integer: a larger one
    was stored as an event that no view could take, and every view stopped behind it
    (found by tests/faults/test_schemathesis_stateful.py)."""
    largest = 2**63 - 1
    place = {"incarnation": "boot-1", "number": largest}
    assert decode(msgspec.json.encode(report(journal=place)), ReconcileReport).journal
    with pytest.raises(WireError) as refused:
        decode(msgspec.json.encode(report(journal={**place, "number": largest + 1})),
               ReconcileReport)  # fmt: skip
    assert refused.value.path == "$.journal.number"
