"""IdempotencyKey: a client's `Idempotency-Key` on a write (POST /desired-states,
/tokens, /rollouts), and the answer the write was given.

One stream per sender and key (`uuid5` of both), created in the same transaction as the write
it keys: two requests with one key race on this stream's first version, in one process
or several, and the store's optimistic concurrency lets exactly one of them write. A key
is honoured for KEY_TTL after its use; a request with the key after that is a new one
(`Reused`), so a client may recycle keys. The events stay, as every event does: one per
keyed write, the size of that write's answer (docs/api.md, *Idempotent writes*).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from muto.domain.events import KeyUse
from muto.domain.model import stable_id

# How long a key answers for the write it keyed: a client's retries come within it.
KEY_TTL = timedelta(hours=24)


class IdempotencyKey(Aggregate):
    @staticmethod
    def create_id(key: str, actor: str, **_: Any) -> UUID:
        # A key is its sender's: another sender's same key is another stream, so one
        # client can neither block nor probe another's keys.
        return stable_id("idempotency-key", f"{actor} {key}")  # a key has no spaces

    @event("Used")
    def __init__(self, key: str, use: KeyUse, actor: str, correlation_id: str) -> None:
        self.key = key
        self._keep(use, actor)

    def reuse(self, use: KeyUse, actor: str, correlation_id: str) -> None:
        """The key again, after it expired (`live` False): it now keys this request."""
        self._reused(key=self.key, use=use, actor=actor, correlation_id=correlation_id)

    @event("Reused")
    def _reused(self, key: str, use: KeyUse, actor: str, correlation_id: str) -> None:
        self._keep(use, actor)

    def _keep(self, use: KeyUse, actor: str) -> None:
        # Plain state, as every aggregate's (its snapshots always encode).
        self.actor = actor
        self.request = use.request
        self.used_at = use.used_at
        self.status = use.status
        self.answer: dict[str, Any] = dict(use.answer)

    def live(self, now: datetime) -> bool:
        """Whether the key still answers for its write at `now` (the cloud's clock)."""
        return now - datetime.fromisoformat(self.used_at) < KEY_TTL

    def keys(self, actor: str, request: str) -> bool:
        """Whether this key was used by `actor` for this very request (method, path and
        body alike): only that resend is answered with the stored answer."""
        return self.actor == actor and self.request == request
