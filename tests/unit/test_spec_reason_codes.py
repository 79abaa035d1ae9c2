"""spec/reason-codes.yaml and muto.domain.reasons.ReasonCode must list the same codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from muto.domain.reasons import SAFETY_GATE_CODES, ReasonCode

SPEC = Path(__file__).resolve().parents[2] / "spec" / "reason-codes.yaml"

# The seed's standard list, verbatim.
SEED_CODES = [
    "VERIFY_SIGNATURE_FAILED",
    "INCOMPATIBLE_OS",
    "INCOMPATIBLE_ROS",
    "INSUFFICIENT_DISK",
    "DENY_MOVING",
    "DENY_AUTONOMOUS_MODE",
    "DENY_LOW_BATTERY",
    "DENY_OUTSIDE_WINDOW",
    "ARTIFACT_DOWNLOAD_FAILED",
    "APPLY_FAILED",
    "READINESS_TIMEOUT",
    "CRASH_LOOP_DETECTED",
    "ROLLBACK_APPLIED",
]
SIDES = {"vehicle", "cloud"}
EFFECTS = {"blocks", "fails", "informs"}


def spec_codes() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    assert document["version"] == 1
    codes: dict[str, dict[str, Any]] = document["codes"]
    return codes


def test_every_spec_code_is_in_the_enum() -> None:
    assert set(spec_codes()) - {code.value for code in ReasonCode} == set()


def test_every_enum_code_is_in_the_spec() -> None:
    assert {code.value for code in ReasonCode} - set(spec_codes()) == set()


def test_enum_names_equal_their_values() -> None:
    assert all(code.name == code.value for code in ReasonCode)


def test_the_seed_lists_thirteen_codes() -> None:
    assert len(SEED_CODES) == len(set(SEED_CODES)) == 13


@pytest.mark.parametrize("code", SEED_CODES)
def test_every_seed_code_is_present_and_standard(code: str) -> None:
    entry = spec_codes()[code]
    assert "extension" not in entry or entry["extension"] is False


def test_every_other_code_is_marked_extension() -> None:
    extensions = {name for name, entry in spec_codes().items() if name not in SEED_CODES}
    assert extensions
    for name in extensions:
        assert spec_codes()[name].get("extension") is True, f"{name} must be extension: true"


@pytest.mark.parametrize("code", sorted(ReasonCode))
def test_every_code_has_meaning_side_and_effect(code: ReasonCode) -> None:
    entry = spec_codes()[code.value]
    assert set(entry) <= {"meaning", "side", "effect", "extension"}, f"{code}: unexpected keys"
    assert isinstance(entry["meaning"], str) and entry["meaning"].strip()
    assert entry["side"] in SIDES
    assert entry["effect"] in EFFECTS


def test_safety_gate_codes_block() -> None:
    for code in SAFETY_GATE_CODES:
        assert spec_codes()[code.value]["effect"] == "blocks", code
