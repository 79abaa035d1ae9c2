"""Every stored event class round-trips through the event log's encoding
(muto/cloud/eventcodec.py): typed payloads in, equal typed payloads out. Values are
generated from each event's own schema (its fields' type hints, with the wire types'
patterns and bounds), so a new event or field is covered without a change here."""

from __future__ import annotations

import enum
import types
import typing
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    StoredEvent,
    UUIDAsHex,
)
from eventsourcing.utils import get_topic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from muto.cloud.eventcodec import EventMapper, schema_of
from muto.domain.events import DesiredAssignment, GateEvaluation, StoredReconcile
from muto.domain.model.desired_state import DesiredState
from muto.domain.model.idempotency import IdempotencyKey
from muto.domain.model.release import Release
from muto.domain.model.release_keys import ReleaseKeys
from muto.domain.model.rollout import Rollout
from muto.domain.model.token import AccessToken
from muto.domain.model.vehicle import Vehicle

AGGREGATES = (Vehicle, Release, ReleaseKeys, DesiredState, Rollout, AccessToken, IdempotencyKey)
NOT_STORED = {"Event", "Created", "Decided"}  # bases: never stored themselves
EVENTS = [
    cls
    for aggregate in AGGREGATES
    for name, cls in vars(aggregate).items()
    if isinstance(cls, type) and issubclass(cls, Aggregate.Event) and name not in NOT_STORED
]


def transcoder() -> JSONTranscoder:
    """The library's transcoder with the Application's transcodings (the first format)."""
    found = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        found.register(transcoding)
    return found


def mapper() -> EventMapper:
    return EventMapper(transcoder=transcoder())


def _annotated(base: Any, metas: list[msgspec.Meta]) -> st.SearchStrategy[Any]:
    """A strategy for `Annotated[base, Meta(...)]`: patterns and bounds honoured."""
    pattern = next((m.pattern for m in metas if m.pattern), None)
    if pattern is not None:
        return st.from_regex(pattern, fullmatch=True)
    low = next((m.ge for m in metas if m.ge is not None), None)
    high = next((m.le for m in metas if m.le is not None), None)
    above = next((m.gt for m in metas if m.gt is not None), None)
    if base is int:
        return st.integers(low if low is not None else -(2**53), high or 2**53)
    if base is float:
        return st.floats(
            min_value=low if low is not None else above,
            max_value=high,
            exclude_min=above is not None,
            allow_nan=False,
            allow_infinity=False,
        )
    shortest = next((m.min_length for m in metas if m.min_length is not None), 0)
    longest = next((m.max_length for m in metas if m.max_length is not None), 20)
    size = {"min_size": shortest, "max_size": min(longest, max(shortest, 3))}
    if base is str:
        return st.text(min_size=shortest, max_size=min(longest, 20))
    if typing.get_origin(base) is list:
        return st.lists(strategy(typing.get_args(base)[0]), **size)
    if typing.get_origin(base) is dict:
        key, value = typing.get_args(base)
        return st.dictionaries(strategy(key), strategy(value), **size)
    return strategy(base)


def _struct(cls: type[msgspec.Struct]) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls, include_extras=True)
    values = {name: strategy(hints[name]) for name in cls.__struct_fields__}

    def make(**fields: Any) -> Any:
        try:
            return cls(**fields)
        except ValueError:  # a rule checked in __post_init__ (a wire type's invariant)
            return None

    return st.builds(make, **values).filter(lambda made: made is not None)


def strategy(hint: Any) -> st.SearchStrategy[Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _annotated(args[0], [m for m in args[1:] if isinstance(m, msgspec.Meta)])
    if origin in (typing.Union, types.UnionType):
        return st.one_of([strategy(a) for a in args])
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is list:
        return st.lists(strategy(args[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(strategy(args[0]), strategy(args[1]), max_size=3)
    if hint is type(None):
        return st.none()
    if hint is Any:
        return st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return st.sampled_from(list(hint))
    if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
        return _struct(hint)
    if hint is datetime:
        return st.datetimes(timezones=st.just(UTC))
    scalars: dict[Any, st.SearchStrategy[Any]] = {
        str: st.text(max_size=20),
        int: st.integers(-(2**53), 2**53),
        float: st.floats(allow_nan=False, allow_infinity=False),
        bool: st.booleans(),
    }
    return scalars[hint]


@st.composite
def events(draw: st.DrawFn, cls: type) -> Any:
    schema = schema_of(cls)
    hints = typing.get_type_hints(cls, include_extras=True)
    state: dict[str, Any] = {
        "originator_id": draw(st.uuids()),
        "originator_version": draw(st.integers(1, 2**31)),
    }
    for name in schema.names:
        state[name] = draw(strategy(hints[name]))
    event = object.__new__(cls)
    object.__setattr__(event, "__dict__", state)
    return event


def test_every_aggregate_event_is_covered() -> None:
    assert len(EVENTS) == 27
    assert all(get_topic(cls).startswith("muto.domain.model.") for cls in EVENTS)


@pytest.mark.parametrize("cls", EVENTS, ids=lambda cls: cls.__qualname__)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_event_round_trips_through_the_store_encoding(cls: type, data: st.DataObject) -> None:
    event = data.draw(events(cls))
    codec = mapper()
    stored = codec.to_stored_event(event)
    decoded = codec.to_domain_event(stored)
    assert type(decoded) is cls
    assert vars(decoded) == vars(event)
    assert isinstance(decoded.originator_id, UUID)


def test_payloads_come_back_typed() -> None:
    hints = {cls.__qualname__: typing.get_type_hints(cls) for cls in EVENTS}
    assert hints["Vehicle.DesiredStateAssigned"]["assignment"] is DesiredAssignment
    assert hints["Vehicle.ReconcileReported"]["report"] is StoredReconcile
    assert hints["Rollout.WaveGateFailed"]["evaluation"] is GateEvaluation


def test_an_event_stored_before_its_schema_version_is_upcast() -> None:
    """A decision stored by the library's JSON transcoder before decisions carried a
    reason code or a time (schema v1) reads as v2 with both empty."""
    codec = mapper()
    v1 = transcoder().encode(
        {
            "timestamp": datetime(2026, 1, 1, tzinfo=UTC),
            "rollout_id": "ro-1",
            "evaluation": {
                "verdict": "pass",
                "targeted": 1,
                "converged": 1,
                "deferred": 0,
                "failed": 0,
                "convergedPct": 100.0,
                "thresholdPct": 95.0,
            },
            "actor": "controller",
            "correlation_id": "ro-1",
        }
    )
    stored = StoredEvent(
        originator_id=Rollout.create_id("ro-1"),
        originator_version=3,
        topic=get_topic(Rollout.CanaryGatePassed),
        state=v1,
    )
    event = codec.to_domain_event(stored)
    assert (event.reason_code, event.at) == ("", "")
    assert event.evaluation.counted == 0 and event.evaluation.tripped_by == {}
    again = codec.to_domain_event(codec.to_stored_event(event))
    assert vars(again) == vars(event)
    assert b'"class_version":2' in codec.to_stored_event(event).state
