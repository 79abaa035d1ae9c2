"""A fetch the cloud refuses with Retry-After (429/503): the agent asks for no desired
state before that time, and asks again at that time, not a whole poll interval later.
A notify that arrived while the vehicle was over its rate limit is otherwise lost
until the next poll (tests/faults/test_duplicates.py found it). Likewise a notify the
pass could not reach (a 304 from an API process that had not heard of the change yet)
is fetched once more, a second later, and only once."""

from __future__ import annotations

import asyncio
import random
import time

from hypothesis import given
from hypothesis import strategies as st

from muto.agent.parts import AgentSettings
from muto.agent.schedule import Schedule
from muto.agent.transport.http import RetryLater
from tests.support.agent_rig import A, B, ManualClock, make_rig, run, started


def test_a_refused_fetch_is_not_asked_again_before_its_retry_after() -> None:
    async def scenario() -> None:
        rig = await started()
        rig.cloud.serve(rig.signers.bundle(A, 1))
        rig.cloud.retry_after = 5.0
        assert (await rig.reconcile()).kind != "converged"
        assert rig.cloud.fetches == 1
        rig.cloud.retry_after = None  # the limit lifts at once; the vehicle still waits
        rig.clock.advance(4.9)
        for _ in range(3):  # notifies, drift: passes, but no fetch
            assert (await rig.reconcile()).kind != "converged"
        assert rig.cloud.fetches == 1
        missed = await rig.agent._wired.reconciler.intake.run(clock_trusted=True)
        assert missed is not None and isinstance(missed.detail, RetryLater)
        assert abs(missed.detail.after_s - 0.1) < 1e-6
        rig.clock.advance(0.1)
        assert (await rig.reconcile()).kind == "converged"
        assert rig.cloud.fetches == 2
        assert rig.runtime.applied == [A.key]

    run(scenario)


class MonotonicClock(ManualClock):
    """Wall time by hand, monotonic time real: the agent's loop waits in real time."""

    def monotonic(self) -> float:
        return time.monotonic()


def test_the_loop_asks_again_when_the_cloud_said_without_another_trigger() -> None:
    async def scenario() -> None:
        rig = make_rig(clock=MonotonicClock(), poll_s=3600, drift_check_s=3600)
        rig.cloud.serve(rig.signers.bundle(A, 1))
        rig.cloud.retry_after = 0.3
        await rig.agent.start()  # its startup pass is refused
        async with asyncio.timeout(10):
            while rig.cloud.fetches < 1:
                await asyncio.sleep(0.01)
            rig.cloud.retry_after = None
            refused_at = time.monotonic()
            while rig.runtime.applied != [A.key]:
                await asyncio.sleep(0.01)
            waited = time.monotonic() - refused_at
            while ("dsr_1", "converged", []) not in rig.cloud.reconcile_reports():
                await asyncio.sleep(0.01)
        await rig.agent.stop()
        assert rig.cloud.fetches == 2  # the refused one, then one when the wait ended
        assert waited < 3  # not the hour-long poll interval

    run(scenario)


@given(
    retry_at=st.floats(-100, 10_000, allow_nan=False),
    poll_s=st.floats(1, 3600),
    waited=st.floats(0, 100),
)
def test_poll_by_only_brings_the_next_poll_forward_and_never_into_the_past(
    retry_at: float, poll_s: float, waited: float
) -> None:
    clock = ManualClock()
    clock.advance(waited)
    schedule = Schedule(AgentSettings(vehicle_id="v", poll_s=poll_s), clock, random.Random(1))
    before = schedule.next_poll
    schedule.poll_by(retry_at)
    if retry_at > clock.monotonic():
        assert schedule.next_poll == min(before, retry_at)
    else:
        assert schedule.next_poll == before
    assert schedule.next_poll >= clock.monotonic() or schedule.next_poll == before


def test_a_notify_the_pass_could_not_reach_is_fetched_once_more_and_only_once() -> None:
    async def scenario() -> None:
        rig = make_rig(clock=MonotonicClock(), poll_s=3600, drift_check_s=3600)
        rig.cloud.serve(rig.signers.bundle(A, 1))
        await rig.agent.start()
        async with asyncio.timeout(30):
            while rig.runtime.applied != [A.key]:
                await asyncio.sleep(0.01)
            fetched = rig.cloud.fetches
            rig.cloud.serve(rig.signers.bundle(B, 2))
            rig.cloud.unheard = 1  # the first fetch after the notify meets a stale 304
            rig.agent.signals.notify(2)
            while rig.runtime.applied != [A.key, B.key]:
                await asyncio.sleep(0.01)
            assert rig.cloud.fetches == fetched + 2
            rig.agent.signals.notify(99)  # forged: nothing above 2 exists
            while rig.cloud.fetches < fetched + 4:  # 99: the notified pass and one recheck
                await asyncio.sleep(0.01)  # the recheck comes 1 s after (later on a busy CI)
            await asyncio.sleep(1.5)  # and no third
        await rig.agent.stop()
        assert rig.cloud.fetches == fetched + 4

    run(scenario)
