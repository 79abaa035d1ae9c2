"""A planned stop during an apply is not a death (review r2, finding 4). A SIGTERM (the
ignition switched off) that lands while a new release is being put in place lets the
apply finish (ApplySucceeded) and ends the run (AgentStopped) with the release's
readiness still owed. Each next start counted that readiness as interrupted, and the
third gave a healthy release up: RETRY_LIMIT_REACHED, rolled back. Now a planned stop
ends the step in flight uncounted; the next run applies the release again and judges
its readiness before it counts as converged. Runs that die (no stop) still count."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

from muto.agent.journal import Journal
from muto.agent.journal import events as ev
from muto.agent.journal.fold import evolve
from muto.agent.journal.state import InFlight, JournalState
from muto.agent.reconcile.recovery import RETRY_LIMIT, interrupted
from muto.domain.release import StackRelease
from tests.support.agent_rig import (
    MOVING,
    PARKED,
    T0,
    A,
    B,
    FakeCloud,
    Rig,
    Signers,
    converged_on,
    make_rig,
    restarted,
    run,
    started,
    types,
)
from tests.support.waits import until


def agent_on(data_dir: Path, signers: Signers, cloud: FakeCloud) -> Rig:
    return make_rig(
        signers=signers,
        cloud=cloud,
        journal=Journal.open(data_dir),
        poll_s=3600,
        drift_check_s=3600,
        health_every_s=3600,
    )


async def stopped_while_applying(rig: Rig, key: str) -> None:
    """Start `rig`'s agent, and stop it (SIGTERM) while the runtime puts `key` in place:
    the apply is held until the stop has cancelled the pass, then lets finish."""
    applying, let_finish = asyncio.Event(), asyncio.Event()
    apply = rig.runtime.apply

    async def held(release: StackRelease, artifacts: Mapping[str, Path]) -> None:
        if release.key == key:
            applying.set()
            await let_finish.wait()
        await apply(release, artifacts)

    rig.runtime.apply = held  # type: ignore[method-assign]
    await rig.agent.start()
    await until(applying.is_set, f"the apply of {key}", in_thread=False)
    stopping = asyncio.ensure_future(rig.agent.stop())
    await asyncio.sleep(0)  # the stop has cancelled the pass: it waits for the apply
    let_finish.set()
    await stopping


def test_stops_during_an_apply_never_give_a_healthy_release_up(tmp_path: Path) -> None:
    signers, cloud = Signers(), FakeCloud()

    async def scenario() -> None:
        rig = agent_on(tmp_path, signers, cloud)
        await rig.agent.start(loop=False)
        await converged_on(rig, A, 1)
        await rig.agent.stop()
        cloud.serve(signers.bundle(B, 2))
        for _ in range(RETRY_LIMIT):  # the ignition switched off mid-apply, three times
            rig = agent_on(tmp_path, signers, cloud)
            await stopped_while_applying(rig, B.key)
        rig = agent_on(tmp_path, signers, cloud)
        await rig.agent.start(loop=False)
        seen = types(rig)
        stops = [seen[i - 1] for i, kind in enumerate(seen) if kind == "AgentStopped"]
        assert stops[1:] == ["ApplySucceeded"] * RETRY_LIMIT  # each with readiness owed
        since = rig.journal.state.position
        assert "Interrupted" not in types(rig) and "RestartLoopDetected" not in types(rig)
        assert (await rig.reconcile()).kind == "converged"
        # The owed readiness was judged, not skipped: B applied again and found ready.
        assert types(rig, since).count("ReadinessPassed") == 1
        assert rig.runtime.applied == [B.key]
        assert rig.journal.state.running_key == B.key and rig.journal.state.failed == {}
        assert await rig.deliver()
        assert cloud.reconcile_reports()[-1] == ("dsr_2", "converged", [])
        assert all("RETRY_LIMIT_REACHED" not in codes for *_, codes in cloud.reconcile_reports())
        await rig.agent.stop()

    run(scenario)


def test_runs_that_die_after_an_apply_still_give_the_release_up() -> None:
    async def scenario() -> None:
        rig = await started()
        await converged_on(rig, A, 1)
        rig.vehicle.state = MOVING  # B assigned, held back: pending
        rig.cloud.serve(rig.signers.bundle(B, 2))
        assert (await rig.reconcile()).kind == "blocked"
        rig.vehicle.state = PARKED
        at = rig.clock.now()
        for _ in range(RETRY_LIMIT):  # killed (no AgentStopped) with B's readiness owed
            applied = ev.ApplySucceeded(at=at, release_key=B.key, apply_sec=1.0)
            rig.journal.append(
                ev.ApplyStarted(
                    at=at, release_key=B.key, revision="dsr_2", sequence=2, replacing=A.key
                ),
                applied,
            )
            rig = await restarted(rig)
        found = [r.event for r in rig.journal.records() if isinstance(r.event, ev.Interrupted)]
        assert [(e.step, e.count, e.gave_up) for e in found] == [
            ("readiness", 1, False),
            ("readiness", 2, False),
            ("readiness", 3, True),
        ]
        assert (await rig.reconcile()).kind == "settled"
        assert rig.journal.state.running_key == A.key
        assert await rig.deliver()
        assert rig.cloud.reconcile_reports()[-1] == (
            "dsr_2",
            "rolled_back",
            ["RETRY_LIMIT_REACHED", "ROLLBACK_APPLIED"],
        )

    run(scenario)


def test_a_planned_stop_ends_whatever_step_is_in_flight_uncounted() -> None:
    for step in ("apply", "readiness", "rollback"):
        flight = InFlight(step=step, release_key=B.key, revision="dsr_2", sequence=2)
        state = JournalState(in_flight=flight, interruptions={f"2:{step}": 2})
        evolve(state, ev.AgentStopped(at=T0))
        assert state.in_flight is None, step
        assert interrupted(state, T0) is None, step
        assert state.interruptions == {f"2:{step}": 2}  # the deaths before still count
