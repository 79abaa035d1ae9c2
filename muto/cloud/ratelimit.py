"""Per-token rate limits: a token bucket for each bearer token.

One vehicle token created 400 report events in 5.4 s in the outside review: nothing
bounded what one credential may cost the store. Each token may make `per_s` requests a
second on average and `burst` at once; beyond that it is answered 429 with Retry-After
(agents wait that long). Buckets live in the API process (each process counts its own
requests); the least recently used are forgotten beyond `max_tokens`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from muto.cloud.errors import AppError
from muto.cloud.settings import Settings
from muto.cloud.tokens import Principal, Role


class RateLimited(AppError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: float, details: object = None) -> None:
        super().__init__(message, details)
        self.retry_after_s = retry_after_s
        # Whole seconds (RFC 9110), rounded up: never invite a retry that is early.
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))}


@dataclass
class RateLimiter:
    per_s: float  # 0: no limit
    burst: int
    clock: Callable[[], float] = time.monotonic
    max_tokens: int = 1_000_000  # a bucket per token of a large fleet, and then some
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, key: str) -> float:
        """Spend one request of `key`'s allowance: 0.0 if allowed, else the seconds until
        the next request would be."""
        if self.per_s <= 0:
            return 0.0
        now = self.clock()
        buckets = self._buckets
        # A plain dict keeps insertion order: popping and storing again makes `key`
        # the most recently used, and the first key the least (an OrderedDict's move
        # costs more per request).
        level, since = buckets.pop(key, (float(self.burst), now))
        level = min(float(self.burst), level + (now - since) * self.per_s)
        if level >= 1.0:
            level -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - level) / self.per_s
        buckets[key] = (level, now)
        if len(buckets) > self.max_tokens:
            del buckets[next(iter(buckets))]
        return wait

    def check(self, key: str) -> None:
        """Raise RateLimited when token `key` is over its allowance (the refusal's text
        is formatted only for a refusal: this runs on every request)."""
        wait = self.take(key)
        if wait > 0:
            raise RateLimited(
                f"token {key} is over its rate limit of {self.per_s:g} requests/s "
                f"(burst {self.burst}); retry after {wait:.1f} s",
                wait,
                {"limit": self.per_s, "burst": self.burst},
            )


class RoleLimits:
    """The limits of each role's tokens (Settings: vehicle_* and operator_*)."""

    def __init__(self, by_role: dict[Role, RateLimiter]) -> None:
        self.by_role = by_role

    @classmethod
    def from_settings(cls, settings: Settings) -> RoleLimits:
        s = settings
        return cls(
            {
                Role.VEHICLE: RateLimiter(s.vehicle_rate_per_s, s.vehicle_burst),
                Role.OPERATOR: RateLimiter(s.operator_rate_per_s, s.operator_burst),
            }
        )

    def check(self, who: Principal) -> None:
        """Raise RateLimited when `who`'s token is over its role's allowance."""
        self.by_role[who.role].check(who.token_id)
