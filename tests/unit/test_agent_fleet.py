"""Many agents in one process, as the fleet simulator builds them: no thread per agent,
two tasks each, and every one converges on its own desired state."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

from muto.agent.compose import simulated_agent
from muto.domain.vehicle_state import VehicleState
from tests.support.agent_rig import FakeCloud, Signers, release

AGENTS = 200


def test_a_fleet_of_in_process_agents_converges_on_asyncio_alone() -> None:
    signers = Signers()
    target = release("1.0.0")
    clouds = []
    now = datetime.now(UTC)  # these agents read the real clock
    for i in range(AGENTS):
        cloud = FakeCloud()
        cloud.serve(signers.bundle(target, 1, vehicle_id=f"sim-{i:04d}", issued=now))
        clouds.append(cloud)

    async def main() -> None:
        threads = threading.active_count()
        agents = [
            simulated_agent(
                f"sim-{i:04d}",
                signers.trust,
                cloud=cloud,
                vehicle=VehicleState(free_disk_mb=1e6),
                poll_s=3600,
                drift_check_s=3600,
                health_every_s=3600,
            )
            for i, cloud in enumerate(clouds)
        ]
        for agent in agents:
            await agent.start()
        try:
            assert threading.active_count() == threads
            assert all(len(agent.tasks) == 2 for agent in agents)  # reconcile, courier
            async with asyncio.timeout(60):
                while not all(c.reconcile_reports() for c in clouds):
                    await asyncio.sleep(0.01)
        finally:
            await asyncio.gather(*(agent.stop() for agent in agents))
        reports = [r for c in clouds for r in c.reconcile_reports()]
        assert reports == [("dsr_1", "converged", [])] * AGENTS

    asyncio.run(main())


def test_a_simulated_fleet_lengthens_its_links_keepalive_and_broker_timeout() -> None:
    """The simulator's links share one event loop: they wait longer for the broker than
    a vehicle's own (muto/sim/fleet.py says why); the agent's defaults are unchanged."""
    from muto.agent.transport.mqtt import KEEPALIVE_S, PUBLISH_TIMEOUT_S
    from muto.sim.fleet import LINK_KEEPALIVE_S, LINK_TIMEOUT_S

    signers = Signers()

    async def main() -> list[tuple[int, float]]:
        built = []
        for tuning in (
            {},
            {"mqtt_keepalive_s": LINK_KEEPALIVE_S, "mqtt_timeout_s": LINK_TIMEOUT_S},
        ):
            agent = simulated_agent(
                "sim-0001", signers.trust, mqtt_url="mqtt://127.0.0.1:1883", **tuning
            )
            assert agent.mqtt is not None
            client = agent.mqtt._new_client()
            built.append((client._keepalive, client.timeout))
        return built

    assert asyncio.run(main()) == [
        (KEEPALIVE_S, PUBLISH_TIMEOUT_S),
        (LINK_KEEPALIVE_S, LINK_TIMEOUT_S),
    ]
