"""Fleet selectors: `key=value AND key=value`, matched against a vehicle's labels.

The grammar is deliberately tiny (the seed rules out a policy DSL):

    selector := term (AND term)*        AND is case-insensitive, surrounded by spaces
    term     := token '=' token         spaces around '=' are tolerated
    token    := [A-Za-z0-9._/-]+

A selector is at most MAX_CHARS characters and MAX_TERMS terms: each term is a subquery,
and a thousand of them hit SQLite's expression limit and held the database for everyone.

A selector is a conjunction, so term order does not matter: the canonical form sorts
terms by key and drops exact repeats. The same key with two different values can never
match any vehicle, so it is rejected rather than silently selecting nobody.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn

from muto.domain.wire import LABEL_CHARS

_TOKEN = re.compile(f"{LABEL_CHARS}+")
_AND = re.compile(r"\s+AND(?=\s|$)", re.IGNORECASE)
MAX_CHARS = 1024
MAX_TERMS = 32


class SelectorError(ValueError):
    """A selector that does not parse; `position` is the 0-based offset of the problem."""

    def __init__(self, message: str, position: int, limit: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        self.limit = limit  # set when the selector is over a bound: that bound


@dataclass(frozen=True)
class Selector:
    """A parsed selector. Terms are sorted by key, keys unique; never empty, because an
    empty selector would target the whole fleet by accident."""

    terms: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        if not self.terms:
            raise ValueError("a selector needs at least one key=value term")
        for key, value in self.terms:
            if not (_TOKEN.fullmatch(key) and _TOKEN.fullmatch(value)):
                raise ValueError(f"invalid selector term {key!r}={value!r}")
        canonical = tuple(sorted(set(self.terms)))
        keys = [key for key, _ in canonical]
        if len(set(keys)) != len(keys):
            raise ValueError("a selector key may appear only once")
        object.__setattr__(self, "terms", canonical)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.terms)

    def __str__(self) -> str:
        return " AND ".join(f"{key}={value}" for key, value in self.terms)


def parse_selector(text: str) -> Selector:
    """Parse `text`, raising SelectorError that names what was expected and where."""
    if len(text) > MAX_CHARS:
        raise SelectorError(
            f"selector of {len(text)} characters: at most {MAX_CHARS} characters",
            MAX_CHARS,
            MAX_CHARS,
        )
    pos = _skip_space(text, 0)
    if pos == len(text):
        raise SelectorError("empty selector: expected key=value at position 0", 0)
    seen: dict[str, tuple[str, int]] = {}
    while True:
        key_at = pos
        key, pos = _token(text, pos, "expected a key")
        pos = _skip_space(text, pos)
        if not text.startswith("=", pos):
            _fail(text, pos, f"expected '=' after key {key!r}")
        pos = _skip_space(text, pos + 1)
        value, pos = _token(text, pos, f"expected a value after '{key}='")
        if key in seen and seen[key][0] != value:
            raise SelectorError(
                f"key {key!r} at position {key_at} repeats with a different value "
                f"({seen[key][0]!r} at position {seen[key][1]}, then {value!r}): "
                "the selector can never match",
                key_at,
            )
        seen.setdefault(key, (value, key_at))
        if len(seen) > MAX_TERMS:
            raise SelectorError(
                f"term {len(seen)} at position {key_at}: at most {MAX_TERMS} terms",
                key_at,
                MAX_TERMS,
            )
        joint = _AND.match(text, pos)
        if joint is None:
            end = _skip_space(text, pos)
            if end == len(text):
                return Selector(tuple((k, v) for k, (v, _) in seen.items()))
            _fail(text, end, f"expected 'AND' or end of selector after '{key}={value}'")
        pos = _skip_space(text, joint.end())
        if pos == len(text):
            _fail(text, pos, "expected a key=value term after 'AND'")


def _token(text: str, pos: int, expected: str) -> tuple[str, int]:
    match = _TOKEN.match(text, pos)
    if match is None:
        _fail(text, pos, expected)
    return match.group(), match.end()


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _fail(text: str, pos: int, expected: str) -> NoReturn:
    found = f"found {text[pos]!r}" if pos < len(text) else "found end of selector"
    raise SelectorError(f"{expected} at position {pos} ({found})", pos)
