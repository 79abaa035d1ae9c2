"""A vehicle away for longer than its desired state's lifetime converges when it
returns: its agent refuses the expired document (DESIRED_STATE_EXPIRED), the cloud
re-signs the same revision for a fresh lifetime, and the agent accepts that one.

Real agents (simulated runtime), the real cloud process and Mosquitto. The lifetime is
the shortest a request may ask (60 s), so the run waits it out in real time; the
in-process test (tests/integration/test_desired_renewal.py) covers the rules."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.rollout_rig import GOOD, NEXT, rig
from tests.support.waits import until

pytestmark = [pytest.mark.mqtt, pytest.mark.faults]
TTL_S = 60


def test_a_vehicle_back_after_its_document_expired_converges(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            away = r.ids[-1]
            r.fleet.cut([away])
            stack, _, version = NEXT.partition("@")
            await r.operator.assign(
                {
                    "target": {"type": "vehicle", "vehicleId": away},
                    "stack": {"name": stack, "version": version},
                    "ttlSec": TTL_S,
                }
            )
            await asyncio.sleep(TTL_S + 1)  # away until the document has expired
            assert (await r.running())[away] == GOOD
            r.fleet.restore([away])

            async def converged() -> bool:
                return (await r.running())[away] == NEXT

            await until(converged, f"{away} running {NEXT}", 60, interval=0.5)
            journal = r.fleet.vehicles[away].agent.journal.state
            assert journal.running_key == NEXT
            seen = await r.vehicle(away)
            assert seen["lastStatus"] == "converged", seen

    asyncio.run(scenario())
