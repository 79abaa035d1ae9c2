"""A time a person names (an audit's `--at`, a query's `since`, a journal's `--until`):
one reading for every tool and endpoint that takes one."""

from __future__ import annotations

from datetime import datetime

EXAMPLE = "2026-01-01T00:00:00Z"


class InstantError(ValueError):
    """The text names no instant; the message says why and shows one that does."""


def parse_instant(text: str, *, local_if_no_offset: bool = False) -> datetime:
    """ISO 8601 / RFC 3339 with a UTC offset ('Z' or '+01:00'). A time without an offset
    names no instant: a compliance read that guessed the zone would answer about another
    hour. It is refused, unless the caller reads such times in this machine's own zone
    (the agent's journal tools, run on the vehicle)."""
    try:
        instant = datetime.fromisoformat(text.upper())  # RFC 3339 allows 't' and 'z'
    except ValueError:
        raise InstantError(f"{text!r} is not an ISO 8601 time, e.g. {EXAMPLE}") from None
    if instant.tzinfo is not None:
        return instant
    if local_if_no_offset:
        return instant.astimezone()
    raise InstantError(
        f"{text!r} has no UTC offset, so it names no instant: add one, "
        f"e.g. {instant.isoformat()}Z for UTC"
    )
