"""Idempotent writes: a client's `Idempotency-Key` makes a resend of a write answer as
the first request was answered, with no second write (POST /desired-states, /tokens,
/rollouts; docs/api.md, *Idempotent writes*). The rule, in one place:

- A key is 1-128 printable ASCII characters without spaces (a correlation id's rule,
  `wire.REFERENCE_PATTERN`); the API checks it (`api.context.idempotency_key`).
- A key names one request: who sent it (the token's actor), its method, its path and
  its decoded body (`fingerprint`: the body as canonical JSON, so spacing and key order
  do not matter). A key is its sender's: another sender's same key is another key.
  That request again, within KEY_TTL of the key's use, is answered with the answer
  stored with the key (`Answer.replayed`); any other request of the sender with the key
  is refused (`KeyReused`, 422 naming the header) and writes nothing.
- The key is recorded by the write's own command, in the write's transaction (`once`):
  there is no moment when a key is taken and its write not stored, so no "in progress"
  state. Two requests with one key, on one API process or several, race on the key's
  stream (`IdempotencyKey`, one per sender and key); the loser's save conflicts, the writer runs its
  command again on fresh loads (writer.py), and that run finds the winner's key and
  answers with the winner's answer. Nothing about keys is kept in memory outside the
  event log, so every process and every restart decides alike.
- A refused request (4xx) stores nothing, its key included: a resend is decided afresh.
- Before its own checks a handler looks the key up (`recorded`), so that a resend is
  answered before a check the first request's write now fails (the vehicles of a
  rollout are busy in the rollout it started); the command decides again, atomically.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from eventsourcing.application import AggregateNotFoundError

from muto.cloud.commands.cause import Cause
from muto.cloud.errors import Invalid
from muto.cloud.eventlog import EventLog
from muto.cloud.writer import Command, Touching, UnitOfWork
from muto.domain.events import KeyUse
from muto.domain.model.idempotency import KEY_TTL, IdempotencyKey
from muto.domain.wire import canonical

T = TypeVar("T")
HEADER = "Idempotency-Key"
__all__ = ["HEADER", "KEY_TTL", "Answer", "KeyReused", "KeyedRequest", "once", "recorded"]


@dataclass(frozen=True)
class KeyedRequest:
    """A request that carries a key: the key, who sent it, and what it asked."""

    key: str
    actor: str
    request: str  # `fingerprint` of its method, path and body

    @classmethod
    def of(cls, key: str, actor: str, method: str, path: str, body: Any) -> KeyedRequest:
        return cls(key, actor, fingerprint(method, path, body))


def fingerprint(method: str, path: str, body: Any) -> str:
    """What makes two requests the same one: the method, the path and the decoded body
    as canonical JSON (a body's spacing, key order or an omitted default do not count)."""
    digest = hashlib.sha256(f"{method.upper()} {path}\n".encode())
    digest.update(canonical(body))
    return "sha256:" + digest.hexdigest()


@dataclass(frozen=True)
class Answer:
    """What a keyed write answers: its status and its `data` (JSON builtins); the same
    for the first request and for a resend (`replayed`)."""

    status: int
    data: dict[str, Any]
    replayed: bool = False


class KeyReused(Invalid):
    """The key names another request (another body, path or sender)."""

    def __init__(self, keyed: KeyedRequest, found: IdempotencyKey) -> None:
        super().__init__(
            f"{HEADER} {keyed.key!r} was used at {found.used_at} for another request (another "
            "body, path or token); a key names one request for "
            f"{KEY_TTL.total_seconds() / 3600:g} h: send a new request with a new key",
            {"path": f"header.{HEADER}"},
        )


def replay(found: IdempotencyKey | None, keyed: KeyedRequest, now: datetime) -> Answer | None:
    """The answer stored with the key for this very request; None when the key is free
    (never used, or used more than KEY_TTL ago); KeyReused when it keys another request."""
    if found is None or not found.live(now):
        return None
    if not found.keys(keyed.actor, keyed.request):
        raise KeyReused(keyed, found)
    return Answer(found.status, dict(found.answer), replayed=True)  # not the aggregate's


def recorded(log: EventLog, keyed: KeyedRequest, now: datetime) -> Answer | None:
    """`replay`, read from the event log (a handler's look before its checks; a
    database read: run it off the event loop)."""
    try:
        found: IdempotencyKey = log.repository.get(IdempotencyKey.create_id(keyed.key, keyed.actor))
    except AggregateNotFoundError:
        return None
    return replay(found, keyed, now)


def once(
    keyed: KeyedRequest | None,
    command: Command[T],
    answer: Callable[[T], Answer],
    cause: Cause,
    now: Callable[[], datetime],
) -> Command[Answer]:
    """`command`, answered by `answer(its value)`; with a key, recorded with the key in
    the same transaction, or not run at all when the key already answers this request
    (the stored answer, `replayed`). Without a key, the command, answered."""
    key_id = IdempotencyKey.create_id(keyed.key, keyed.actor) if keyed is not None else None

    def run(uow: UnitOfWork) -> Answer:
        if keyed is None or key_id is None:
            return answer(command(uow))
        found = uow.find(IdempotencyKey, key_id)
        at = now()
        earlier = replay(found, keyed, at)
        if earlier is not None:
            return earlier
        given = answer(command(uow))
        use = KeyUse(
            request=keyed.request, used_at=at.isoformat(), status=given.status, answer=given.data
        )
        # The key's actor is the sender's, whom `IdempotencyKey.keys` compares.
        if found is None:
            uow.add(
                IdempotencyKey(
                    key=keyed.key, use=use, actor=keyed.actor, correlation_id=cause.correlation_id
                )
            )
        else:
            found.reuse(use, actor=keyed.actor, correlation_id=cause.correlation_id)
        return given

    if isinstance(command, Touching):  # the writer preloads what it touches, the key too
        keys = () if key_id is None else (key_id,)
        return Touching((*command.aggregates, *keys), run)
    return run
