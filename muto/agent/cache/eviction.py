"""Choosing what to evict to make room: a pure rule, tested with plain data."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Evictable:
    """A file that may go: neither pinned nor in use by an ensure."""

    key: str
    size: int
    last_used_ns: int


@dataclass(frozen=True)
class Room:
    """What a new artifact needs. `used` counts every byte charged to the budget;
    `need` is what the artifact adds to it. When the filesystem's free bytes are known,
    `free` must also cover `to_write`, the bytes still to be written."""

    used: int
    budget: int
    need: int
    free: int | None = None
    to_write: int = 0

    def fits(self, freed: int) -> bool:
        within_budget = self.used - freed + self.need <= self.budget
        return within_budget and (self.free is None or self.free + freed >= self.to_write)


def plan_evictions(room: Room, candidates: Iterable[Evictable]) -> list[Evictable] | None:
    """The least-recently-used candidates whose removal makes room, oldest first:
    [] when there is room already, None when even evicting every candidate is not
    enough (then nothing should be evicted at all)."""
    chosen: list[Evictable] = []
    freed = 0
    for candidate in sorted(candidates, key=lambda c: (c.last_used_ns, c.key)):
        if room.fits(freed):
            return chosen
        chosen.append(candidate)
        freed += candidate.size
    return chosen if room.fits(freed) else None
