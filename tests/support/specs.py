"""The specs as tests read them: spec/api.yaml parsed once, and the smallest valid
instance of each MQTT payload of spec/mqtt-topics.md."""

from __future__ import annotations

import functools
from enum import Enum
from typing import Any, get_args, get_type_hints

import msgspec
import yaml

try:
    from yaml import CSafeLoader as SafeLoader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader  # type: ignore[assignment]

from muto.cloud.api.app import SPEC
from muto.domain.wire import Wire


@functools.cache
def load_spec() -> dict[str, Any]:
    """spec/api.yaml, parsed once; callers only read it."""
    loaded: dict[str, Any] = yaml.load(SPEC.read_text(encoding="utf-8"), Loader=SafeLoader)
    return loaded


def minimal(payload: type[Wire]) -> Wire:
    """An instance with only the required fields, filled with plausible values."""
    hints = get_type_hints(payload)
    values: dict[str, Any] = {}
    for field in msgspec.structs.fields(payload):
        hint = hints[field.name]
        if not field.required:
            continue
        if field.name == "schema":  # required on the payloads a receiver refuses without it
            values[field.encode_name] = get_args(hint)[0]
        elif isinstance(hint, type) and issubclass(hint, Enum):
            values[field.encode_name] = next(iter(hint)).value
        else:
            values[field.encode_name] = SAMPLES[field.name]
    return msgspec.convert(values, payload)


SAMPLES: dict[str, Any] = {
    "vehicle_id": "vehicle-v3-0142",
    "revision": "dsr_1",
    "sequence": 1,
    "url": "https://muto.example/desired-states/latest?vehicleId=vehicle-v3-0142",
    "agent_version": "0.1.0",
    "runtime": "simulated",
    "config": {},
    "safety_floor": {},
    "request_id": "req-1",
    "ok": True,
    "report_id": "rep-1",
    "observed_at": "2024-01-15T03:00:00Z",
}
