"""Bearer tokens: issue, revoke, authenticate. Only sha256 hashes are stored."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum

from sqlalchemy import bindparam, select

from muto.cloud.commands import Cause
from muto.cloud.errors import Conflict, NotFound
from muto.cloud.idempotency import HEADER
from muto.cloud.writer import Command, UnitOfWork
from muto.domain.model.token import AccessToken
from muto.projections import Views

# A known token stays cached until it is revoked: a revocation evicts it at once in
# every process (projections.base.Announcer; on PostgreSQL through cloud.invalidation),
# and the cache answers nothing while this process may be missing one (`trusted`). An
# unknown secret is remembered for a minute only (a token issued since is another one:
# secrets are random, but nothing needs them kept longer).
UNKNOWN_SECONDS = 60.0
MAX_CACHED = 2_000_000  # beyond that the cache starts again (a bound, not a policy)


class Miss(Enum):
    MISS = "miss"


MISS = Miss.MISS  # Authenticator.cached: not answerable from the cache


class Role(StrEnum):
    OPERATOR = "operator"
    VEHICLE = "vehicle"


@dataclass(frozen=True)
class Principal:
    token_id: str
    role: Role
    vehicle_id: str | None

    @property
    def actor(self) -> str:
        return (
            f"vehicle:{self.vehicle_id}"
            if self.role is Role.VEHICLE
            else f"operator:{self.token_id}"
        )


def hash_token(token: str) -> str:
    """The token as the tokens view stores it."""
    return _stored(_digest(token))


def _digest(token: str) -> bytes:
    """The token cache's key: the hash's bytes, not the secret (a secret is not kept
    in memory beyond its request), and not its stored text (formatted per request,
    that was a few % of a poll's CPU)."""
    return hashlib.sha256(token.encode()).digest()


def _stored(digest: bytes) -> str:
    return "sha256:" + digest.hex()


def issue_token(role: Role, vehicle_id: str | None, cause: Cause) -> tuple[str, Command[str]]:
    """Returns the secret (shown once) and the command that stores its hash."""
    token_id = secrets.token_hex(8)
    secret = f"muto_{token_id}_{secrets.token_urlsafe(24)}"

    def command(uow: UnitOfWork) -> str:
        uow.add(
            AccessToken(
                token_id=token_id,
                token_hash=hash_token(secret),
                role=role.value,
                vehicle_id=vehicle_id,
                actor=cause.actor,
                correlation_id=cause.correlation_id,
            )
        )
        return token_id

    return secret, command


def secret_not_kept(key: str, token_id: str) -> Conflict:
    """The answer to a resend of a token request with its Idempotency-Key: the token
    it issued is named, its secret is not. The secret is made before the write and only
    its hash is stored, nowhere else (not with the key either), so nothing can show it
    again; deriving it again from a server key would make every secret recoverable by
    whoever holds that key and the log. The token stays valid (whoever got the first
    answer holds it); one whose answer was lost is revoked, and a new one issued with a
    new key."""
    return Conflict(
        f"{HEADER} {key!r} already issued token {token_id}; its secret is shown only "
        "in the answer to that first request and cannot be shown again (only its hash is "
        f"stored). If that answer was lost, revoke token {token_id} and issue another "
        "with a new key",
        {"path": f"header.{HEADER}", "tokenId": token_id},
    )


def revoke_token(token_id: str, cause: Cause) -> Command[None]:
    def command(uow: UnitOfWork) -> None:
        token = uow.find(AccessToken, AccessToken.create_id(token_id))
        if token is None:
            raise NotFound(f"token {token_id!r} does not exist")
        token.revoke(cause.actor, cause.correlation_id)

    return command


class Authenticator:
    """Looks tokens up in the tokens view, with a short cache so that polling by a
    large fleet does not cost a query per request."""

    def __init__(self, views: Views, trusted: Callable[[], bool] = lambda: True) -> None:
        """`trusted()`: whether this process hears every revocation now; while it does
        not, every request reads the view."""
        self.views = views
        self.trusted = trusted
        self._cache: dict[bytes, tuple[float, Principal | None]] = {}  # _digest -> ...
        self._keys: dict[str, bytes] = {}  # token id -> its cache key, to evict in O(1)
        self._lock = threading.Lock()
        # Bumped by every eviction: a token read from the view before a revocation
        # committed is not cached after that revocation's eviction (see authenticate).
        self._forgets = 0
        table = views.tokens.tokens
        self._by_hash = select(table).where(table.c.token_hash == bindparam("hash"))

    def forget(self, token_id: str) -> None:
        """A token was revoked: drop it from the cache now."""
        self._evict({token_id})

    def _evict(self, token_ids: set[str]) -> None:
        with self._lock:
            self._forgets += 1
            for token_id in token_ids:
                key = self._keys.pop(token_id, None)
                if key is not None:
                    self._cache.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._forgets += 1
            self._cache.clear()
            self._keys.clear()

    def cached(self, secret: str) -> Principal | Miss | None:
        """The answer without a query, or MISS when one is needed (not cached, expired,
        or this process may be missing revocations): the caller then runs `authenticate`
        off the loop."""
        if not self.trusted():
            return MISS
        hit = self._cache.get(_digest(secret))
        if hit is None or _expired(hit, time.monotonic()):
            return MISS
        return hit[1]

    def authenticate(self, secret: str) -> Principal | None:
        key = _digest(secret)
        now = time.monotonic()
        trusted = self.trusted()
        with self._lock:
            hit = self._cache.get(key) if trusted else None
            generation = self._forgets
        if hit is not None and not _expired(hit, now):
            return hit[1]
        principal = self._lookup(key)
        with self._lock:
            if generation != self._forgets:
                return principal  # a revocation committed meanwhile: answer, keep nothing
            if len(self._cache) > MAX_CACHED:
                self._cache.clear()
                self._keys.clear()
            self._cache[key] = (now, principal)
            if principal is not None:
                self._keys[principal.token_id] = key
        return principal

    def _lookup(self, key: bytes) -> Principal | None:
        """The tokens view's answer for a token's digest (None: unknown or revoked)."""
        found = self.views.store.read(self._by_hash, {"hash": _stored(key)})
        if not found or found[0].revoked:
            return None
        row = found[0]
        return Principal(row.token_id, Role(row.role), row.vehicle_id)


def _expired(hit: tuple[float, Principal | None], now: float) -> bool:
    return hit[1] is None and now - hit[0] >= UNKNOWN_SECONDS
