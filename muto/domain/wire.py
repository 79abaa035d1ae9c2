"""The base of every wire payload, and one way to decode them.

Every HTTP body, MQTT payload and signed document is a msgspec Struct: frozen,
keyword-only, camelCase on the wire, unknown fields rejected at the boundary.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

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
LABEL_VALUE_PATTERN = rf"^{LABEL_CHARS}{{1,256}}\Z"


class Wire(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    rename="camel",
    omit_defaults=False,
):
    """Base class of wire payloads."""


class WireError(ValueError):
    """A payload did not match its schema; `path` names the offending field."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


_PATH = re.compile(r"`(\$[^`]*)`")


def decode(data: bytes | str, kind: type[T]) -> T:
    """Decode JSON into `kind`, raising WireError naming the field path on failure."""
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        match = _PATH.search(str(exc))
        raise WireError(str(exc), match.group(1) if match else "$") from None
    except msgspec.DecodeError as exc:
        raise WireError(f"malformed JSON: {exc}", None) from None
    except UnicodeDecodeError as exc:  # msgspec's answer to a string that is not UTF-8
        raise WireError(f"malformed JSON: not UTF-8 ({exc.reason})", None) from None


def convert(obj: Any, kind: type[T]) -> T:
    """Convert builtins (e.g. a stored event's dict) into `kind`."""
    try:
        return msgspec.convert(obj, type=kind)
    except msgspec.ValidationError as exc:
        match = _PATH.search(str(exc))
        raise WireError(str(exc), match.group(1) if match else "$") from None


def encode(obj: Any) -> bytes:
    return msgspec.json.encode(obj)


def canonical(obj: Any) -> bytes:
    """Deterministic JSON (sorted keys): the bytes that get digested and signed."""
    return msgspec.json.encode(obj, order="sorted")


def to_builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj)
