"""A wave member whose clock is untrusted is deferred, not failed: its agent reports the
new revision `blocked` UNTRUSTED_CLOCK (it fetched and authenticated the document but
cannot judge its expiry), so at the wave deadline it leaves the denominator and the
wave passes on the others (docs/rollouts.md, "Deferred vehicles never fail the healthy
ones"). Before the fix the agent fetched nothing, the cloud heard silence, counted the
member at the deadline (GATE_DEADLINE_EXCEEDED) and rolled every vehicle back. Once its
clock is trusted the member applies the release it was held from.

Real agents (simulated runtime), the real cloud process and Mosquitto
(tests/support/rollout_rig.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.rollout_rig import NEXT, rig
from tests.support.waits import until

pytestmark = pytest.mark.mqtt


def test_a_member_with_an_untrusted_clock_is_deferred_and_the_wave_passes(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await r.start("next", "1.1.0", canaryDeadlineSec=120, waveDeadlineSec=10, bakeSec=1)
            s = await r.rollout("next")
            held = next(m["vehicleId"] for m in s["vehicles"] if m["phase"] == "wave")
            r.fleet.set_state(held, clock_trusted=False)  # before the wave is assigned

            s = await r.until("next", lambda s: s["state"] in ("completed", "rolled_back"), 120)
            assert s["state"] == "completed", s["decisions"]
            wave = next(d for d in s["decisions"] if d["event"] == "WaveGatePassed")
            assert (wave["evaluation"]["deferred"], wave["evaluation"]["counted"]) == (1, 3)
            (member,) = [m for m in s["vehicles"] if m["vehicleId"] == held]
            assert (member["status"], member["reasonCodes"]) == ("deferred", ["UNTRUSTED_CLOCK"])
            assert (await r.running())[held] != NEXT  # nothing applied on an unjudged document

            r.fleet.set_state(held, clock_trusted=True)

            async def applied() -> bool:
                return (await r.running())[held] == NEXT

            await until(applied, f"{held} runs {NEXT} once its clock is trusted", 60, interval=0.3)

    asyncio.run(scenario())
