"""Whole numbers from query parameters and headers: the one parser for all of them.

`int()` of a string longer than 4,300 digits raises ValueError (CVE-2020-10735's
guard), which escaped as a 500; and `str.isdigit` admits non-ASCII digits. A number is
read only after its length is bounded by the largest value allowed.
"""

from __future__ import annotations


def whole_number(raw: str, low: int, high: int) -> int | None:
    """The value of `raw` if it is ASCII digits within [low, high]; None otherwise."""
    if not raw or len(raw) > len(str(high)) or not (raw.isascii() and raw.isdigit()):
        return None
    value = int(raw)
    return value if low <= value <= high else None
