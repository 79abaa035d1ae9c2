"""Signed release envelopes by release key, kept for the life of the process: a release
is immutable (registering another one under the same stack@version is refused), so an
entry can never go stale and needs no invalidation. A 200 poll carries the release's
envelope beside the vehicle's desired state; this spares it a query."""

from __future__ import annotations

import threading
from collections.abc import Callable

import msgspec

from muto.domain.desired import Envelope


class ReleaseEnvelopes:
    def __init__(self, load: Callable[[str], object]) -> None:
        """`load(release_key)`: the stored envelope (raises NotFound when unknown)."""
        self._load = load
        self._found: dict[str, Envelope] = {}
        self._lock = threading.Lock()

    def cached(self, release_key: str) -> Envelope | None:
        """Without a query (None: call `get`, off the event loop)."""
        return self._found.get(release_key)

    def get(self, release_key: str) -> Envelope:
        found = self._found.get(release_key)
        if found is None:
            found = msgspec.convert(self._load(release_key), Envelope)
            with self._lock:
                self._found[release_key] = found
        return found
