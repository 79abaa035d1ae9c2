"""How the event log stores domain events: msgspec JSON, decoded into typed payloads.

Each event class of muto/domain/model has a schema, a msgspec Struct made from its
fields' type hints (the aggregate method's signature or the explicit event class), so
a stored event is decoded in one typed pass: payloads come back as the Structs of
muto/domain/events.py, never as dicts.

Versions. The schema's version is the event class's `class_version` (the library's
convention), stored as `class_version` when above 1. Reading an event stored at an older
version, or in the first format (the library's JSON transcoder, 2026-12 and before:
timestamps tagged `{"_type_": "datetime_iso", ...}`), takes the slow path: the
transcoder decodes it to a dict, the class's `upcast_vN_vN+1` static methods bring it
to the current version, then msgspec converts it into the schema. Old stores need no
migration (docs/event-store.md).

Repairs. A payload stored before a bound was added to its schema fails that bound; an
event class with a static `repair(state) -> str | None` brings such a payload within it
(saying what it changed, logged as a warning), so one old event never stops the views.

Snapshots and any other class keep the library's own mapping (aggregate state is plain).
"""

from __future__ import annotations

import inspect
import logging
import typing
from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.domain import decorated_funcs
from eventsourcing.persistence import Mapper, MapperDeserialisationError, StoredEvent
from eventsourcing.utils import get_topic, resolve_topic

# Events of these modules have schemas (their topics are kept stable, see model/__init__).
DOMAIN_MODULES = "muto.domain.model"
_BOOKKEEPING = ("originator_id", "originator_version")
logger = logging.getLogger("muto.cloud")


@dataclass(frozen=True)
class Schema:
    version: int
    struct: type[msgspec.Struct]
    decoder: msgspec.json.Decoder[Any]
    names: tuple[str, ...]  # the event's fields, in their stored order


def _defaults(cls: type) -> dict[str, Any]:
    """Default values of an event's fields: the decorated method's parameters (an
    `@event` method), else the event class's dataclass fields."""
    found: dict[str, Any] = {}
    method = decorated_funcs.get(cls)
    if method is not None:
        for name, parameter in inspect.signature(method).parameters.items():
            if parameter.default is not inspect.Parameter.empty:
                found[name] = parameter.default
    if is_dataclass(cls):
        for field in fields(cls):
            if field.default is not MISSING:
                found.setdefault(field.name, field.default)
    return found


def schema_of(cls: type) -> Schema:
    """The typed schema of one event class."""
    hints = typing.get_type_hints(cls)
    defaults = _defaults(cls)
    names: list[str] = []
    spec: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name, hint in hints.items():
        if name in _BOOKKEEPING or typing.get_origin(hint) is typing.ClassVar:
            continue
        names.append(name)
        spec.append((name, hint, defaults[name]) if name in defaults else (name, hint))
    spec.append(("class_version", int, 1))
    struct = msgspec.defstruct(
        f"{cls.__qualname__}.Schema", spec, kw_only=True, module=cls.__module__
    )
    return Schema(
        version=getattr(cls, "class_version", 1),
        struct=struct,
        decoder=msgspec.json.Decoder(struct),
        names=tuple(names),
    )


class EventMapper(Mapper[UUID]):
    """The library's Mapper, with typed msgspec encoding for the domain's events."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._encoder = msgspec.json.Encoder()
        self._schemas: dict[str, Schema | None] = {}

    def schema(self, topic: str) -> Schema | None:
        found = self._schemas.get(topic, ...)
        if found is ...:
            cls = resolve_topic(topic)
            found = schema_of(cls) if cls.__module__.startswith(DOMAIN_MODULES) else None
            self._schemas[topic] = found
        return found

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        topic = get_topic(type(domain_event))
        schema = self.schema(topic)
        if schema is None:
            return super().to_stored_event(domain_event)
        state = dict(vars(domain_event))
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        if schema.version > 1:
            state["class_version"] = schema.version
        stored = self._encoder.encode(state)
        if self.compressor:
            stored = self.compressor.compress(stored)
        if self.cipher:
            stored = self.cipher.encrypt(stored)
        return StoredEvent(
            originator_id=originator_id,
            originator_version=originator_version,
            topic=topic,
            state=stored,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        schema = self.schema(stored_event.topic)
        if schema is None:
            return super().to_domain_event(stored_event)
        cls = resolve_topic(stored_event.topic)
        state = stored_event.state
        if self.cipher:
            state = self.cipher.decrypt(state)
        if self.compressor:
            state = self.compressor.decompress(state)
        try:
            decoded = schema.decoder.decode(state)
            if decoded.class_version != schema.version:  # type: ignore[attr-defined]
                decoded = self._upcast(cls, schema, state, stored_event)
        except msgspec.ValidationError:  # the first format, an older schema, or a repair
            decoded = self._upcast(cls, schema, state, stored_event)
        except msgspec.DecodeError as exc:
            raise MapperDeserialisationError(
                f"stored event {stored_event.topic} of {stored_event.originator_id} "
                f"v{stored_event.originator_version} is not JSON: {exc}"
            ) from exc
        event_state = {
            "originator_id": stored_event.originator_id
            if isinstance(stored_event.originator_id, UUID)
            else UUID(str(stored_event.originator_id)),
            "originator_version": stored_event.originator_version,
        }
        event_state.update(msgspec.structs.asdict(decoded))
        del event_state["class_version"]
        event = object.__new__(cls)
        object.__setattr__(event, "__dict__", event_state)
        return event

    def _upcast(self, cls: type, schema: Schema, state: bytes, stored: StoredEvent) -> Any:
        """The slow path: decode to a dict (either format), upcast, repair if it must,
        then type it."""
        event_state: dict[str, Any] = self.transcoder.decode(state)
        version = event_state.pop("class_version", 1)
        while version < schema.version:
            getattr(cls, f"upcast_v{version}_v{version + 1}")(event_state)
            version += 1
        try:
            return msgspec.convert(event_state, schema.struct)
        except msgspec.ValidationError as refused:
            repair = getattr(cls, "repair", None)
            repaired = repair(event_state) if repair is not None else None
            if repaired is None:
                raise
            logger.warning(
                "stored event %s of %s v%s repaired (%s): %s",
                stored.topic, stored.originator_id, stored.originator_version, refused, repaired,
            )  # fmt: skip
            return msgspec.convert(event_state, schema.struct)
