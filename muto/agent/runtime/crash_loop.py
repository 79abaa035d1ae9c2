"""The crash-loop rule: N restarts within a window, on a monotonic clock."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


def is_crash_looping(
    restart_times: Iterable[float], *, restarts: int, window_sec: float, now: float
) -> bool:
    """True when at least `restarts` of `restart_times` fall within `window_sec` before `now`."""
    recent = sum(1 for t in restart_times if 0 <= now - t <= window_sec)
    return recent >= restarts


class RestartHistory:
    """Monotonic restart times of one supervised command. Keeps only the newest `keep`:
    the rule never needs more than `crash_loop_restarts` of them."""

    def __init__(self, keep: int) -> None:
        self.count = 0
        self.times: deque[float] = deque(maxlen=max(keep, 1))

    def record(self, at: float) -> None:
        self.count += 1
        self.times.append(at)
