"""The published release key rotations, kept in memory: every 200 poll carries them
(`DesiredStateBundle.key_rotations`) and every release check walks them (signing.py).

Exact, not timed, as the ETag memory (etags.py): a publication's commit evicts them (the
releases projection's announcer, heard from other processes on PostgreSQL), a read that
began before such an eviction is not kept after it, and while this process may be
missing changes (`live()` False) every call reads the view. The chain only grows, and is
small (one entry per rotation the fleet ever made)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NamedTuple

from muto.domain.desired import Envelope


class Chain(NamedTuple):
    """The published rotations' envelopes, oldest first, and the key set version the
    last one rotated to (1: none published)."""

    envelopes: list[Envelope]
    version: int = 1


class KeyRotations:
    def __init__(self, load: Callable[[], Chain], live: Callable[[], bool]) -> None:
        """`load()`: the chain as the view holds it."""
        self._load = load
        self.live = live
        self._kept: Chain | None = None
        self._forgets = 0  # bumped by every eviction: a read from before one is not kept
        self._lock = threading.Lock()

    def cached(self) -> Chain | None:
        """The chain without a query (None: call `chain`, off the event loop)."""
        kept = self._kept
        return kept if kept is not None and self.live() else None

    def chain(self) -> Chain:
        """The chain, from memory or read."""
        kept = self.cached()
        if kept is not None:
            return kept
        generation = self._forgets
        found = self._load()
        with self._lock:
            if generation == self._forgets:
                self._kept = found
        return found

    def published(self) -> list[Envelope]:
        """Every published rotation, oldest first."""
        return self.chain().envelopes

    def forget(self, _: str = "") -> None:
        """A rotation was published (after its commit), or changes may have been missed."""
        with self._lock:
            self._forgets += 1
            self._kept = None
