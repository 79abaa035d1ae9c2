"""The base of every wire payload, and one way to decode them.

Every HTTP body, MQTT payload and signed document is a msgspec Struct: frozen,
keyword-only, camelCase on the wire, unknown fields rejected at the boundary.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, TypeVar

import msgspec

T = TypeVar("T")

# The one home of the identifier patterns (spec/api.yaml publishes them; a unit test
# keeps the two equal). `\Z`, not `$`: Python's `$` also matches before a final newline,
# so "nl-car\n" was an identifier. JSON Schema's (ECMA) `$` is Python's `\Z`.
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}\Z"
Digest = msgspec.Meta(pattern=DIGEST_PATTERN, description="sha256:<64 lowercase hex>")
# Identifiers that appear in MQTT topics and URLs: no '/', '+', '#', spaces.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z"
Identifier = msgspec.Meta(pattern=ID_PATTERN)


def id_refusal(kind: str, text: str) -> str | None:
    """Why `text` names no {kind} (ID_PATTERN allows no such id), or None: what a command
    line says before it asks a server about something that cannot exist."""
    if re.match(ID_PATTERN, text):
        return None
    return (
        f"{text!r} is not a {kind} id: 1-128 characters of A-Z a-z 0-9 . _ : -, "
        "the first a letter or digit"
    )


# Free-form references the views index (correlation ids, report ids, revisions): what a
# VARCHAR(128) holds on every backend; no NUL (PostgreSQL refuses it), no spaces.
REFERENCE_PATTERN = r"^[!-~]{1,128}\Z"
Reference = msgspec.Meta(
    pattern=REFERENCE_PATTERN, description="1-128 printable ASCII characters, no spaces"
)
# Vehicle labels (what selectors match) and attribute keys; LABEL_CHARS is also the
# selector grammar's token.
LABEL_CHARS = "[A-Za-z0-9._/-]"
LABEL_KEY_PATTERN = rf"^{LABEL_CHARS}{{1,128}}\Z"
# A ROS 2 node, namespace or topic name (checked again by ROS itself when it starts).
ROS_NAME_PATTERN = r"^[~/A-Za-z0-9_]{1,256}\Z"
LABEL_VALUE_PATTERN = rf"^{LABEL_CHARS}{{1,256}}\Z"


class Wire(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    rename="camel",
    omit_defaults=False,
):
    """Base class of wire payloads.

    A rule msgspec checks in `__post_init__` (raising FieldError) is invisible to the
    JSON Schema msgspec generates; `schema_rules` states it in JSON Schema so that the
    published schemas (spec/api.yaml, spec/mqtt-topics.md) say what decoding accepts."""

    schema_rules: ClassVar[dict[str, Any]] = {}


class FieldError(ValueError):
    """Raised by a Struct's `__post_init__`: names the offending field's path."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class WireError(ValueError):
    """A payload did not match its schema; `path` names the offending field."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


# msgspec's messages: "<what> - at `$.path`" (a dict's key: "at `key` in `$.path`"; no
# suffix: the document itself), where a missing or unknown field is named in <what> and
# the path is of the object holding it. The suffix is read from the end: a field name,
# the caller's text, may hold anything.
_AT = re.compile(r" - at (?:`key` in )?`(\$[^`]*)`\Z")
_FIELD = re.compile(
    r"\A(?:Object missing required field|Object contains unknown field) `(.*)`\Z", re.S
)


def _path(exc: msgspec.ValidationError) -> str:
    """The JSON path of what failed: a FieldError's own, the missing or unknown
    field's (not only its object's: `$.policy.bogus`, not `$.policy`), or the one
    msgspec's message names."""
    if isinstance(exc.__cause__, FieldError):
        return exc.__cause__.path
    text = str(exc)
    at = _AT.search(text)
    base = at.group(1) if at else "$"
    field = _FIELD.match(text[: at.start()] if at else text)
    return f"{base}.{field.group(1)}" if field else base


def decode(data: bytes | str, kind: type[T]) -> T:
    """Decode JSON into `kind`, raising WireError naming the field path on failure."""
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        return _whole_numbers(data, kind, exc)
    except msgspec.DecodeError as exc:
        raise WireError(f"malformed JSON: {exc}", None) from None
    except UnicodeDecodeError as exc:  # msgspec's answer to a string that is not UTF-8
        raise WireError(f"malformed JSON: not UTF-8 ({exc.reason})", None) from None


def _whole_numbers(data: bytes | str, kind: type[T], refused: msgspec.ValidationError) -> T:
    """JSON has one kind of number: 3600.0 is the integer 3600 (JSON Schema's `integer`
    says so, and the published schemas promise it), but msgspec wants `3600` for an
    int. Only a refused payload pays for this second look."""
    try:
        whole = _integral(msgspec.json.decode(data))
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        whole = None
    if whole is None:
        raise WireError(str(refused), _path(refused)) from None
    return convert(whole, kind)


def _integral(obj: Any) -> Any:
    """`obj` with every integral float as an int; None if it has none."""
    changed = False

    def walk(value: Any) -> Any:
        nonlocal changed
        if isinstance(value, float) and value.is_integer():
            changed = True
            return int(value)
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    found = walk(obj)
    return found if changed else None


def convert(obj: Any, kind: type[T]) -> T:
    """Convert builtins (e.g. a stored event's dict) into `kind`."""
    try:
        return msgspec.convert(obj, type=kind)
    except msgspec.ValidationError as exc:
        raise WireError(str(exc), _path(exc)) from None


def encode(obj: Any) -> bytes:
    return msgspec.json.encode(obj)


def canonical(obj: Any) -> bytes:
    """Deterministic JSON (sorted keys): the bytes that get digested and signed."""
    return msgspec.json.encode(obj, order="sorted")


def to_builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj)


# -- publishing the schemas ----------------------------------------------------------------


def ecma(pattern: str) -> str:
    """A pattern as JSON Schema writes it: the code ends patterns with `\\Z` (end of
    string), which is what `$` means in JSON Schema's ECMA-262 dialect."""
    return pattern[:-2] + "$" if pattern.endswith("\\Z") else pattern


def _rules() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    pending: list[type] = [Wire]
    while pending:
        kind = pending.pop()
        pending.extend(kind.__subclasses__())
        rules = getattr(kind, "schema_rules", None)
        if rules and "schema_rules" in vars(kind):
            found[kind.__name__] = rules
    return found


def published(node: Any, name: str | None = None) -> Any:
    """A msgspec-generated JSON Schema (or its named components) as the spec publishes
    it: patterns in JSON Schema's dialect, each Struct's `schema_rules` merged in."""
    rules = _rules()

    def walk(value: Any, named: str | None) -> Any:
        if isinstance(value, dict):
            out = {
                k: ecma(v)
                if k == "pattern" and isinstance(v, str)
                else walk(v, k if k in rules else None)
                for k, v in value.items()
            }
            if named is not None and out.get("type") == "object":
                out.update(rules[named])
            return out
        if isinstance(value, list):
            return [walk(v, None) for v in value]
        return value

    return walk(node, name)
