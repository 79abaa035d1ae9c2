"""Identifier patterns (#14 item 3): each has one home in the code, matches the whole
string (a trailing newline is not part of an identifier), and is the pattern
spec/api.yaml publishes."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest

from muto.audit.verify import ANCHOR_PATTERN
from muto.domain import wire
from muto.domain.desired import HHMM_PATTERN, ApplyWindow
from muto.domain.reports import OBSERVED_PATTERN, ReconcileReport
from muto.domain.requests import TokenRequest, VehicleRegistration
from muto.domain.wire import WireError, decode, ecma
from tests.support.specs import load_spec

# Every identifier-like pattern the code checks, with one value it accepts.
PATTERNS = {
    "identifier": (wire.ID_PATTERN, "nl-car"),
    "reference": (wire.REFERENCE_PATTERN, "corr-1"),
    "digest": (wire.DIGEST_PATTERN, "sha256:" + "a" * 64),
    "label key": (wire.LABEL_KEY_PATTERN, "region"),
    "label value": (wire.LABEL_VALUE_PATTERN, "eu"),
    "HH:MM": (HHMM_PATTERN, "22:00"),
    "ROS name": (wire.ROS_NAME_PATTERN, "/demo/chatter"),
}


@pytest.mark.parametrize("name", sorted(PATTERNS))
@pytest.mark.parametrize("tail", ["\n", "\r\n", " ", "\x00"])
def test_a_pattern_matches_the_whole_string_only(name: str, tail: str) -> None:
    pattern, good = PATTERNS[name]
    assert re.search(pattern, good)
    assert re.search(pattern, good + tail) is None, f"{name} accepts {good + tail!r}"
    assert re.search(pattern, tail + good) is None


def spec_patterns() -> set[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                found.add(node["pattern"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(load_spec())
    return found


# Patterns of the spec's hand-written parameters and headers that are not identifiers:
# "no NUL" (PostgreSQL), the If-Match version, Retry-After's seconds, an audit anchor.
PARAMETER_ONLY = {
    r"^[^\x00]*$",
    r"^[^\x00]+$",
    r'^"?[0-9]{1,18}"?$',
    "^[0-9]{1,9}$",
    ANCHOR_PATTERN,
}


# Not identifiers: a guard on a date-time's first characters (`format` checks the rest).
PREFIX_GUARDS = {OBSERVED_PATTERN}


def test_the_spec_publishes_exactly_the_codes_patterns() -> None:
    code = {ecma(pattern) for pattern, _ in PATTERNS.values()}
    assert spec_patterns() - PARAMETER_ONLY - PREFIX_GUARDS == code


def test_ecma_form_means_the_same_end_of_string() -> None:
    assert ecma(r"^[a-z]+\Z") == "^[a-z]+$"
    assert ecma("^[a-z]+$") == "^[a-z]+$"


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (VehicleRegistration, {"vehicleId": "nl-car\n"}),
        (VehicleRegistration, {"vehicleId": "v1", "labels": {"model": "m3\n"}}),
        (VehicleRegistration, {"vehicleId": "v1", "labels": {"model\n": "m3"}}),
        (TokenRequest, {"role": "vehicle", "vehicleId": "nl-car\n"}),
        (ApplyWindow, {"startLocal": "22:00\n", "endLocal": "04:00"}),
        (
            ReconcileReport,
            {
                "schema": "muto.reconcile-report.v1",
                "reportId": "r1\n",
                "vehicleId": "v1",
                "status": "converged",
                "observedAt": "2026-01-01T00:00:00Z",
            },
        ),
    ],
)
def test_a_body_with_a_trailing_newline_in_an_identifier_is_refused(
    kind: type[Any], body: dict[str, Any]
) -> None:
    with pytest.raises(WireError) as refused:
        decode(msgspec.json.encode(body), kind)
    assert refused.value.path is not None and refused.value.path.startswith("$.")


def test_the_cache_refuses_a_digest_with_a_trailing_newline() -> None:
    from muto.agent.cache.layout import hex_of

    assert hex_of("sha256:" + "a" * 64) == "a" * 64
    with pytest.raises(ValueError, match="not a sha256 digest"):
        hex_of("sha256:" + "a" * 64 + "\n")
