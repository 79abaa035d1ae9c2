"""A planned stop is not a death (review #5). A release still downloading over a slow link
when the vehicle is switched off (SIGTERM: Agent.stop), again and again, was given up
with RETRY_LIMIT_REACHED: the restart-loop guard counted every run that had not finished
a pass, stopped or killed. Now a stop is journaled (AgentStopped) and starts the count
over; runs that die (no stop) still add up to a give-up."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from muto.agent.artifacts import SimulatedArtifacts
from muto.agent.journal import Journal
from muto.agent.reconcile.recovery import RETRY_LIMIT
from muto.domain.messages import AgentPhase
from tests.support.agent_rig import B, FakeCloud, Rig, Signers, make_rig, run, types
from tests.support.waits import until


def downloading_or_given_up(rig: Rig) -> Callable[[], bool]:
    return lambda: rig.agent.phase is AgentPhase.CACHING or "RestartLoopDetected" in types(rig)


def test_graceful_stops_during_a_long_first_pass_never_give_the_release_up(
    tmp_path: Path,
) -> None:
    signers, cloud = Signers(), FakeCloud()
    cloud.serve(signers.bundle(B, 1))
    slow = SimulatedArtifacts(missing={a.digest for a in B.artifacts}, download_sec=3600)

    def agent() -> Rig:
        return make_rig(
            signers=signers,
            cloud=cloud,
            journal=Journal.open(tmp_path),
            artifacts=slow,
            poll_s=3600,
            drift_check_s=3600,
            health_every_s=3600,
        )

    async def scenario() -> None:
        for _ in range(RETRY_LIMIT + 2):  # each start's first pass downloads B again
            rig = agent()
            await rig.agent.start()
            await until(downloading_or_given_up(rig), "the download", in_thread=False)
            assert "RestartLoopDetected" not in types(rig)
            await rig.agent.stop()
        rig = agent()
        await rig.agent.start(loop=False)
        assert "RestartLoopDetected" not in types(rig)
        assert types(rig).count("AgentStopped") == RETRY_LIMIT + 2
        assert rig.journal.state.unfinished_runs == 1  # this run's own start
        assert rig.journal.state.failed == {} and rig.cloud.reconcile_reports() == []
        # Runs that die (no stop, as after kill -9) still count.
        for _ in range(RETRY_LIMIT):
            rig.journal.close()
            rig = agent()
            await rig.agent.start(loop=False)
        assert types(rig)[-2:] == ["AgentStarted", "RestartLoopDetected"]
        rig.journal.close()

    run(scenario)
