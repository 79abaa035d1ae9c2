"""`python -m bench.agent fleet|timers N`: the fleet simulator's child process."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from bench.agent.fleet import run_fleet, run_timers

if __name__ == "__main__":
    figures = asyncio.new_event_loop().run_until_complete(
        (run_fleet if sys.argv[1] == "fleet" else run_timers)(int(sys.argv[2]))
    )
    print(json.dumps(figures), flush=True)
    os._exit(0)  # without stopping thousands of agents one by one: nothing left to measure
