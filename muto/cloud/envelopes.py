"""Signed release envelopes, kept for the life of the process. A 200 poll carries the
release's envelope beside the vehicle's desired state; this spares it a query.

A release's content never changes, but signatures may be added to it (`Release.Signed`),
each addition raising its count of added signatures (the releases view's
`signatures_added`). The release key and that count name one envelope forever, and an
entry is kept with its count: a poll reads the count in the same query as its ETag
(queries.desired_document, whose ETag says the count) and is answered from memory only
with the envelope of that count, so a bundle is never sent with an envelope older than
its ETag says, in this process or another (whose memory may not have heard of the
addition yet). An entry older than the view is replaced by the next read that needs
the newer one; the addition's commit also evicts its key (the releases projection's
announcer, heard from other processes on PostgreSQL), so that memory holds no envelope
nobody asks for."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import msgspec

from muto.domain.desired import Envelope


class ReleaseEnvelopes:
    def __init__(self, load: Callable[[str], tuple[Any, int]]) -> None:
        """`load(release_key)`: the stored envelope and its count of added signatures
        (raises NotFound when unknown)."""
        self._load = load
        self._found: dict[str, tuple[int, Envelope]] = {}
        self._lock = threading.Lock()

    def cached(self, release_key: str, signatures_added: int = 0) -> Envelope | None:
        """Without a query, the envelope with that many added signatures (None: call
        `get`, off the event loop)."""
        found = self._found.get(release_key)
        if found is None or found[0] != signatures_added:
            return None
        return found[1]

    def get(self, release_key: str, signatures_added: int = 0) -> Envelope:
        """The envelope with at least that many added signatures: from memory, or read
        (a signature added since the caller's read shows too)."""
        found = self.cached(release_key, signatures_added)
        if found is not None:
            return found
        stored, count = self._load(release_key)
        envelope = msgspec.convert(stored, Envelope)
        with self._lock:
            kept = self._found.get(release_key)
            if kept is None or kept[0] < count:
                self._found[release_key] = (count, envelope)
        return envelope

    def forget(self, release_key: str) -> None:
        """Signatures were added to this release (after their commit)."""
        with self._lock:
            self._found.pop(release_key, None)

    def __len__(self) -> int:
        return len(self._found)
