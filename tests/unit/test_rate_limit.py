"""The per-token bucket (#14 item 8), with a clock the test moves."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from muto.cloud.ratelimit import RateLimited, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_burst_then_the_sustained_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(2.0, 3, clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)
    assert limiter.take("b") == 0.0  # each token its own bucket
    clock.t = 0.5
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0


def test_over_the_limit_names_it_and_says_when() -> None:
    limiter = RateLimiter(1.0, 1, Clock())
    limiter.check("a")
    with pytest.raises(RateLimited) as refused:
        limiter.check("a")
    assert refused.value.status == 429
    assert refused.value.headers == {"Retry-After": "1"}
    assert refused.value.details == {"limit": 1.0, "burst": 1}
    assert "1 requests/s" in refused.value.message
    assert refused.value.message.startswith("token a ")


def test_no_limit_when_the_rate_is_zero() -> None:
    limiter = RateLimiter(0.0, 1, Clock())
    assert all(limiter.take("a") == 0.0 for _ in range(1000))


@given(
    st.floats(0.1, 100),
    st.integers(1, 50),
    st.lists(st.floats(0, 10), min_size=1, max_size=200),
)
def test_never_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, gaps: list[float]
) -> None:
    clock = Clock()
    limiter = RateLimiter(rate, burst, clock)
    allowed = 0
    for gap in gaps:
        clock.t += gap
        allowed += limiter.take("a") == 0.0
    assert allowed <= burst + rate * clock.t + 1e-6


def test_forgets_the_least_recent_tokens_beyond_its_bound() -> None:
    limiter = RateLimiter(1.0, 1, Clock(), max_tokens=2)
    for key in ("a", "b", "c"):
        limiter.take(key)
    assert list(limiter._buckets) == ["b", "c"]
    limiter.take("b")  # used again: now the most recent
    limiter.take("d")
    assert list(limiter._buckets) == ["b", "d"]
