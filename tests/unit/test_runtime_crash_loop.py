"""The crash-loop rule: N restarts within a window, on a monotonic clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from muto.agent.runtime.crash_loop import RestartHistory, is_crash_looping

TIMES = st.lists(st.floats(min_value=0, max_value=1000, allow_nan=False), max_size=30)
LIMIT = st.integers(min_value=1, max_value=10)
WINDOW = st.floats(min_value=0.01, max_value=500, allow_nan=False)


def test_three_restarts_in_sixty_seconds() -> None:
    assert is_crash_looping([10, 40, 69], restarts=3, window_sec=60, now=70)
    assert not is_crash_looping([9, 40, 69], restarts=3, window_sec=60, now=70)
    assert not is_crash_looping([40, 69], restarts=3, window_sec=60, now=70)


@given(TIMES, LIMIT, WINDOW)
def test_one_more_restart_never_clears_the_verdict(
    times: list[float], limit: int, window: float
) -> None:
    now = max(times, default=0.0)
    if is_crash_looping(times, restarts=limit, window_sec=window, now=now):
        assert is_crash_looping([*times, now], restarts=limit, window_sec=window, now=now)


@given(TIMES, LIMIT, WINDOW)
def test_only_restarts_inside_the_window_count(
    times: list[float], limit: int, window: float
) -> None:
    now = 1000.0
    inside = [t for t in times if now - t <= window]
    assert is_crash_looping(times, restarts=limit, window_sec=window, now=now) == (
        len(inside) >= limit
    )


@given(st.integers(min_value=0, max_value=50), st.integers(min_value=1, max_value=10))
def test_history_counts_everything_and_keeps_the_newest(restarts: int, keep: int) -> None:
    history = RestartHistory(keep)
    for at in range(restarts):
        history.record(float(at))
    assert history.count == restarts
    assert list(history.times) == [float(t) for t in range(max(restarts - keep, 0), restarts)]
