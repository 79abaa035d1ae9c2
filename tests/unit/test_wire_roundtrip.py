"""Every wire Struct in muto.domain round-trips through muto.domain.wire, and a payload
that breaks its schema is refused with an error that names the field."""

from __future__ import annotations

import importlib
import pkgutil
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import muto.domain
from muto.domain.desired import DesiredStateBundle, DesiredStateDocument, DesiredStateRequest
from muto.domain.messages import TOPICS
from muto.domain.release import StackRelease
from muto.domain.reports import HealthReport, ReconcileReport
from muto.domain.vehicle_state import VehicleState
from muto.domain.wire import Wire, WireError, decode, encode

INT64 = 2**63 - 1
SHORT = 3  # collections stay small: the shape matters, not the size


def all_wire_types() -> list[type[Wire]]:
    """Every Wire subclass defined anywhere under muto.domain (imports the package)."""
    for module in pkgutil.walk_packages(muto.domain.__path__, "muto.domain."):
        importlib.import_module(module.name)
    found: list[type[Wire]] = []
    pending = list(Wire.__subclasses__())
    while pending:
        kind = pending.pop()
        pending.extend(kind.__subclasses__())
        if kind.__module__.startswith("muto.domain."):
            found.append(kind)
    return sorted(set(found), key=lambda kind: f"{kind.__module__}.{kind.__qualname__}")


WIRE_TYPES = all_wire_types()


def values(t: mi.Type) -> st.SearchStrategy[Any]:
    """Values that satisfy the msgspec type `t`, constraints (Meta) included."""
    match t:
        case mi.Metadata(type=inner):  # descriptions and extra schema: no constraint
            return values(inner)
        case mi.StructType(cls=cls, fields=fields):
            # A Struct may check an invariant across fields (__post_init__): draw the
            # fields, keep the combinations it accepts.
            drawn = st.fixed_dictionaries({f.name: values(f.type) for f in fields})
            return drawn.map(lambda kw: _build(cls, kw)).filter(lambda x: x is not None)
        case mi.StrType(min_length=lo, max_length=hi, pattern=pattern):
            if pattern is not None:
                return st.from_regex(pattern, fullmatch=True).filter(
                    lambda s: (lo or 0) <= len(s) <= (hi if hi is not None else len(s))
                )
            return st.text(min_size=lo or 0, max_size=min(hi if hi is not None else 20, 20))
        case mi.IntType(ge=ge, gt=gt, le=le, lt=lt):
            low = ge if ge is not None else (gt + 1 if gt is not None else -INT64)
            high = le if le is not None else (lt - 1 if lt is not None else INT64)
            return st.integers(low, high)
        case mi.FloatType(ge=ge, gt=gt, le=le, lt=lt):
            return st.floats(
                min_value=ge if ge is not None else gt,
                max_value=le if le is not None else lt,
                exclude_min=gt is not None,
                exclude_max=lt is not None,
                allow_nan=False,
                allow_infinity=False,
            )
        case mi.BoolType():
            return st.booleans()
        case mi.NoneType():
            return st.none()
        case mi.UnionType(types=types):
            return st.one_of([values(member) for member in types])
        case mi.LiteralType(values=literals):
            return st.sampled_from(literals)
        case mi.EnumType(cls=cls):
            return st.sampled_from(list(cls))
        case mi.DateTimeType(tz=tz):
            zones = st.sampled_from(
                [UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=5, minutes=30))]
            )
            return st.datetimes(
                min_value=datetime(1970, 1, 2),
                max_value=datetime(2100, 1, 1),
                timezones=st.none() if tz is False else zones,
            )
        case mi.ListType(item_type=item, min_length=lo, max_length=hi):
            return st.lists(values(item), min_size=lo or 0, max_size=min(hi or SHORT, SHORT))
        case mi.DictType(key_type=key, value_type=value, min_length=lo, max_length=hi):
            return st.dictionaries(
                values(key), values(value), min_size=lo or 0, max_size=min(hi or SHORT, SHORT)
            )
        case _:
            raise NotImplementedError(f"no strategy for {t!r}: extend values() in this test")


def _build(cls: type[Any], fields: dict[str, Any]) -> Any:
    try:
        return cls(**fields)
    except ValueError:
        return None


def instances(kind: type[Wire]) -> st.SearchStrategy[Any]:
    return values(mi.type_info(kind))


def test_the_domain_wire_types_are_all_found() -> None:
    expected = {
        StackRelease,
        DesiredStateRequest,
        DesiredStateDocument,
        DesiredStateBundle,
        ReconcileReport,
        HealthReport,
        VehicleState,
        *(spec.payload for spec in TOPICS.values()),
    }
    assert expected <= set(WIRE_TYPES)


def test_every_wire_type_forbids_unknown_fields() -> None:
    for kind in WIRE_TYPES:
        info = mi.type_info(kind)
        assert isinstance(info, mi.StructType) and info.forbid_unknown_fields, kind


@pytest.mark.parametrize("kind", WIRE_TYPES, ids=lambda kind: kind.__name__)
@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trips_through_the_wire(kind: type[Wire], data: st.DataObject) -> None:
    original = data.draw(instances(kind))
    encoded = encode(original)
    decoded = decode(encoded, kind)
    assert decoded == original
    assert encode(decoded) == encoded


@pytest.mark.parametrize("kind", WIRE_TYPES, ids=lambda kind: kind.__name__)
@settings(deadline=None, max_examples=10, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_unknown_fields_are_refused_by_name(kind: type[Wire], data: st.DataObject) -> None:
    body = msgspec.to_builtins(data.draw(instances(kind)))
    body["surpriseField"] = 1
    with pytest.raises(WireError) as caught:
        decode(encode(body), kind)
    assert "surpriseField" in str(caught.value)
    assert caught.value.path == "$.surpriseField"


REQUEST = {
    "target": {"type": "fleetSelector", "selector": "model=vehicle-v3 AND ring=1"},
    "stack": {"name": "autonomy-core", "version": "1.0.0", "manifestDigest": "sha256:" + "0" * 64},
}


def test_the_request_fixture_is_valid() -> None:
    assert decode(encode(REQUEST), DesiredStateRequest).stack.name == "autonomy-core"


def test_a_nested_unknown_field_is_named_by_its_path() -> None:
    body = {**REQUEST, "stack": {**REQUEST["stack"], "tag": "latest"}}
    with pytest.raises(WireError) as caught:
        decode(encode(body), DesiredStateRequest)
    assert caught.value.path == "$.stack.tag"
    assert "tag" in caught.value.message


def test_a_validation_error_names_the_field_path() -> None:
    body = {**REQUEST, "stack": {**REQUEST["stack"], "manifestDigest": "md5:abc"}}
    with pytest.raises(WireError) as caught:
        decode(encode(body), DesiredStateRequest)
    assert caught.value.path == "$.stack.manifestDigest"


def test_a_path_into_a_list_names_the_index() -> None:
    artifact = {"type": "oci_image", "ref": "registry/a:1", "digest": "sha256:" + "a" * 64}
    release = {
        "stackName": "autonomy-core",
        "version": "1.0.0",
        "artifacts": [{**artifact, "size": 1}, {**artifact, "size": -1}],
    }
    with pytest.raises(WireError) as caught:
        decode(encode(release), StackRelease)
    assert caught.value.path == "$.artifacts[1].size"


def test_a_missing_field_is_named() -> None:
    with pytest.raises(WireError) as caught:
        decode(b'{"target": {"selector": "a=1"}}', DesiredStateRequest)
    assert "stack" in caught.value.message
    assert caught.value.path == "$.stack"  # the missing field itself (#14: names the field)


def test_python_names_are_not_accepted_on_the_wire() -> None:
    with pytest.raises(WireError) as caught:
        decode(b'{"speed_mps": 1.0}', VehicleState)
    assert "speed_mps" in caught.value.message


def test_malformed_json_is_a_wire_error_without_a_path() -> None:
    with pytest.raises(WireError) as caught:
        decode(b'{"speedMps": ', VehicleState)
    assert caught.value.path is None
