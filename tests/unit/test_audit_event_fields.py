"""Issue 7: "every stored event records its actor (operator token id, vehicle id, or the
controller) and correlation id". Checked on the event classes themselves, so a new event
without them fails here before it is ever stored; and every event type has a line in
`muto audit explain`."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from eventsourcing.domain import (  # the registry of created events is private
    Aggregate,
    CanInitAggregate,
    DomainEvent,
    _created_event_classes,
)

import muto.domain.model
from muto.audit.lines import LINES


def aggregates() -> list[type[Aggregate]]:
    found = []
    for module_info in pkgutil.iter_modules(muto.domain.model.__path__):
        module = importlib.import_module(f"muto.domain.model.{module_info.name}")
        found += [
            cls
            for cls in vars(module).values()
            if inspect.isclass(cls)
            and issubclass(cls, Aggregate)
            and cls.__module__ == module.__name__
        ]
    return found


def stored_events(aggregate: type[Aggregate]) -> list[type[DomainEvent]]:
    """The aggregate's event classes that can be stored: its one "created" event (the
    library records which; a default `Vehicle.Created` may exist unused beside
    `Vehicle.Registered`) and every other event class that is not a base of another."""
    created = [e for e in _created_event_classes[aggregate] if issubclass(e, DomainEvent)]
    events = [
        cls
        for cls in vars(aggregate).values()
        if inspect.isclass(cls) and issubclass(cls, DomainEvent)
    ]
    leaves = [e for e in events if not any(o is not e and issubclass(o, e) for o in events)]
    return [*created, *(e for e in leaves if not issubclass(e, CanInitAggregate))]


def fields(event: type[DomainEvent]) -> set[str]:
    return set(inspect.signature(event).parameters)


def test_the_model_is_found() -> None:
    names = {e.__qualname__ for a in aggregates() for e in stored_events(a)}
    assert {
        "Vehicle.Registered",
        "Vehicle.DesiredStateAssigned",
        "Rollout.WaveGateFailed",
        "DesiredState.Created",
        "Release.Registered",
        "AccessToken.Revoked",
    } <= names


def test_every_event_records_its_actor_and_correlation_id() -> None:
    missing = [
        e.__qualname__
        for a in aggregates()
        for e in stored_events(a)
        if not {"actor", "correlation_id"} <= fields(e)
    ]
    assert missing == []


def test_vehicle_and_rollout_events_name_their_vehicle_and_rollout() -> None:
    missing = []
    for aggregate in aggregates():
        key = {"Vehicle": "vehicle_id", "Rollout": "rollout_id"}.get(aggregate.__name__)
        missing += [
            e.__qualname__ for e in stored_events(aggregate) if key and key not in fields(e)
        ]
    assert missing == []


def test_every_event_type_has_a_line_in_explain() -> None:
    names = {e.__qualname__ for a in aggregates() for e in stored_events(a)}
    assert names - set(LINES) == set()
