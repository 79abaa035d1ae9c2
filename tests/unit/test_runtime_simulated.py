"""The simulated runtime: every behaviour, with no child process and no thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from muto.agent.runtime.base import STOPPED, RuntimeAdapter
from muto.agent.runtime.simulated import SimulatedBehaviour, SimulatedRuntime
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact, ArtifactType, HealthModel, StackRelease
from tests.support.releases import stack_release
from tests.support.runtime_contract import Built, RuntimeContract

IMAGE = Artifact(type=ArtifactType.OCI_IMAGE, ref="nav", digest="sha256:" + "0" * 64, size=1)
HEALTH = HealthModel(readiness_timeout_sec=10, crash_loop_restarts=3, crash_loop_window_sec=60)


def sim_release(version: str) -> StackRelease:
    return stack_release("nav", version, [IMAGE], health=HEALTH)


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scaled(
    behaviours: dict[str, SimulatedBehaviour], clock: Callable[[], float] = time.monotonic
) -> SimulatedRuntime:
    """A thousandth of real time: the 10 s readiness timeout lasts 10 ms."""
    return SimulatedRuntime(behaviours=behaviours, time_scale=0.001, clock=clock)


def test_a_well_behaved_release_applies_runs_and_stops() -> None:
    rt = scaled({})

    async def main() -> None:
        threads = threading.active_count()
        await rt.apply(sim_release("1.0.0"), {})
        await rt.wait_ready(HEALTH)
        status = rt.status()
        assert (status.release, status.alive, status.restart_count) == ("nav@1.0.0", True, 0)
        assert not status.crash_looping
        await rt.apply(sim_release("1.0.0"), {})  # the running release: a no-op
        assert rt.applied == ["nav@1.0.0"]
        await rt.stop()
        assert rt.status() == STOPPED
        assert threading.active_count() == threads

    asyncio.run(main())


def test_apply_takes_the_configured_time() -> None:
    rt = SimulatedRuntime(
        behaviours={"nav@1.0.0": SimulatedBehaviour(apply_sec=5)}, time_scale=0.01
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        await rt.apply(sim_release("1.0.0"), {})
        assert loop.time() - began >= 0.05

    asyncio.run(main())


def test_a_failing_apply_leaves_the_previous_release_running() -> None:
    rt = scaled({"nav@2.0.0": SimulatedBehaviour(apply_fails=True)})

    async def main() -> None:
        await rt.apply(sim_release("1.0.0"), {})
        with pytest.raises(ReasonError) as failure:
            await rt.apply(sim_release("2.0.0"), {})
        assert failure.value.code == ReasonCode.APPLY_FAILED
        assert rt.status().release == "nav@1.0.0"
        assert rt.applied == ["nav@1.0.0"]

    asyncio.run(main())


@pytest.mark.parametrize("ready_after_sec", [None, 11.0])
def test_a_release_not_ready_in_time_times_out(ready_after_sec: float | None) -> None:
    rt = scaled({"nav@1.0.0": SimulatedBehaviour(ready_after_sec=ready_after_sec)})

    async def main() -> None:
        await rt.apply(sim_release("1.0.0"), {})
        with pytest.raises(ReasonError) as failure:
            await rt.wait_ready(HEALTH)
        assert failure.value.code == ReasonCode.READINESS_TIMEOUT

    asyncio.run(main())


def test_a_release_ready_before_the_deadline_is_ready() -> None:
    rt = scaled({"nav@1.0.0": SimulatedBehaviour(ready_after_sec=9)})

    async def main() -> None:
        await rt.apply(sim_release("1.0.0"), {})
        await rt.wait_ready(HEALTH)

    asyncio.run(main())


def test_a_crash_loop_trips_while_waiting_and_shows_in_status() -> None:
    clock = ManualClock()
    looping = SimulatedBehaviour(ready_after_sec=None, restart_every_sec=1.0)
    rt = scaled({"nav@1.0.0": looping}, clock)

    async def main() -> None:
        await rt.apply(sim_release("1.0.0"), {})
        with pytest.raises(ReasonError) as failure:
            await rt.wait_ready(HEALTH)
        assert failure.value.code == ReasonCode.CRASH_LOOP_DETECTED
        clock.now += 0.0025  # 2.5 scaled seconds after start
        assert (rt.status().restart_count, rt.status().crash_looping) == (2, False)
        clock.now += 0.0005
        assert (rt.status().restart_count, rt.status().crash_looping) == (3, True)

    asyncio.run(main())


def test_restarts_slower_than_the_window_are_no_crash_loop() -> None:
    clock = ManualClock()
    rt = scaled(
        {"nav@1.0.0": SimulatedBehaviour(ready_after_sec=None, restart_every_sec=40)}, clock
    )

    async def main() -> None:
        await rt.apply(sim_release("1.0.0"), {})
        with pytest.raises(ReasonError) as failure:
            await rt.wait_ready(HEALTH)
        assert failure.value.code == ReasonCode.READINESS_TIMEOUT
        clock.now += 0.2  # 200 scaled seconds: five restarts, never three in 60 s
        assert (rt.status().restart_count, rt.status().crash_looping) == (5, False)

    asyncio.run(main())


def test_behaviour_may_be_a_function_of_the_release() -> None:
    def behaviour(release: StackRelease) -> SimulatedBehaviour:
        return SimulatedBehaviour(apply_fails=release.version.startswith("9"))

    rt = SimulatedRuntime(behaviours=behaviour)

    async def main() -> None:
        await rt.apply(sim_release("1.0.0"), {})
        with pytest.raises(ReasonError):
            await rt.apply(sim_release("9.0.0"), {})

    asyncio.run(main())


def test_ten_thousand_simulated_vehicles_share_one_event_loop() -> None:
    fleet = [
        scaled({"nav@1.0.0": SimulatedBehaviour(apply_sec=i % 7, ready_after_sec=i % 5)})
        for i in range(10_000)
    ]

    async def vehicle(rt: SimulatedRuntime) -> None:
        await rt.apply(sim_release("1.0.0"), {})
        await rt.wait_ready(HEALTH)

    async def main() -> None:
        threads = threading.active_count()
        await asyncio.gather(*(vehicle(rt) for rt in fleet))
        assert all(rt.status().release == "nav@1.0.0" for rt in fleet)
        assert threading.active_count() == threads

    asyncio.run(main())


class TestSimulatedRuntimeContract(RuntimeContract):
    @pytest.fixture
    def runtime(self) -> RuntimeAdapter:
        return scaled({sim_release("9.0.0").key: SimulatedBehaviour(apply_fails=True)})

    @pytest.fixture
    def runnable(self) -> Callable[[str], Built]:
        return lambda version: (sim_release(version), {})

    @pytest.fixture
    def unpreparable(self) -> Built:
        return sim_release("9.0.0"), {}  # its behaviour: the apply fails
