"""The bench's knobs (MUTO_BENCH_SCALE shrinks them) and small helpers."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from bench import timed

SCALE = float(os.environ.get("MUTO_BENCH_SCALE", "1"))
PYTHON = sys.executable
EVENTS = max(2_000, int(100_000 * SCALE))  # journal size
FLEET = max(500, int(10_000 * SCALE))  # simulated agents in one process
IDLE_S = max(15.0, 90.0 * SCALE)  # idle CPU window of the real agent
FLEET_WINDOW_S = max(10.0, 30.0 * SCALE)  # steady state of the fleet: one poll period
TIMER_WINDOW_S = max(5.0, 10.0 * SCALE)  # its baseline
PAYLOAD_MB = 4  # incompressible bytes in the release archive
HEALTH_PER_ROLLOUT = 144  # a rollout every 12 h of periodic (5 min) health reports
SNAPSHOT_TAIL = 499  # journal records after the newest snapshot (SNAPSHOT_EVERY - 1)
PLAN_CALLS, PLAN_REPEAT = 2_000, 31
WAIT_S = 90.0


def wait_for(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return found


def median_s(action: Callable[[], object], repeat: int) -> float:
    return statistics.median(timed(action) for _ in range(repeat))
