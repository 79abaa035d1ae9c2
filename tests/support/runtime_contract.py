"""One contract for the runtime adapters, proved on every adapter (as the event store's
is on every backend): the invariants of muto/agent/runtime/base.py that the port's own
calls can show. Each adapter's test module subclasses `RuntimeContract` and says only
how to build the adapter and its releases; what only one adapter has (process groups,
containers, venvs, the ROS graph) stays in that module's own tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import pytest

from muto.agent.runtime.base import RuntimeAdapter
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import HealthModel, StackRelease

Built = tuple[StackRelease, Mapping[str, Path]]  # a release and its cached artifacts


class RuntimeContract:
    """Subclasses provide three fixtures:
    - `runtime`: the adapter, on a fresh workdir under tmp_path;
    - `runnable`: version -> a release this adapter runs and finds ready by the release's
      own health model (two versions are two releases of one stack);
    - `unpreparable`: a release whose files cannot be put in place (an artifact missing
      or not what it claims), refused with one of `PREPARE_FAILURES`."""

    PREPARE_FAILURES = frozenset({ReasonCode.APPLY_FAILED})

    @pytest.fixture
    def runtime(self, tmp_path: Path) -> RuntimeAdapter:
        raise NotImplementedError

    @pytest.fixture
    def runnable(self, tmp_path: Path) -> Callable[[str], Built]:
        raise NotImplementedError

    @pytest.fixture
    def unpreparable(self, tmp_path: Path) -> Built:
        raise NotImplementedError

    def run(self, runtime: RuntimeAdapter, body: Callable[[], Awaitable[None]]) -> None:
        """`body` on a fresh event loop; the runtime is stopped afterwards whatever happens."""

        async def main() -> None:
            try:
                await body()
            finally:
                await runtime.stop()

        asyncio.run(main())

    async def ready(self, runtime: RuntimeAdapter, built: Built) -> None:
        release, artifacts = built
        await runtime.apply(release, artifacts)
        await runtime.wait_ready(release.health_model)

    # -- the invariants ---------------------------------------------------------------

    def test_nothing_runs_before_an_apply_and_readiness_fails_at_once(
        self, runtime: RuntimeAdapter
    ) -> None:
        async def body() -> None:
            status = runtime.status()
            assert (status.release, status.alive, status.restart_count) == (None, False, 0)
            with pytest.raises(ReasonError) as failure:
                async with asyncio.timeout(10):  # at once: the bound only stops a hang
                    await runtime.wait_ready(HealthModel())
            assert failure.value.code == ReasonCode.READINESS_TIMEOUT

        self.run(runtime, body)

    def test_an_applied_release_runs_until_stopped(
        self, runtime: RuntimeAdapter, runnable: Callable[[str], Built]
    ) -> None:
        built = runnable("1.0.0")

        async def body() -> None:
            await self.ready(runtime, built)
            status = runtime.status()
            assert (status.release, status.alive) == (built[0].key, True)
            assert not status.crash_looping
            await runtime.stop()
            status = runtime.status()
            assert (status.release, status.alive) == (None, False)
            await runtime.stop()  # stopping nothing is fine

        self.run(runtime, body)

    def test_applying_the_running_release_again_is_a_no_op(
        self, runtime: RuntimeAdapter, runnable: Callable[[str], Built]
    ) -> None:
        built = runnable("1.0.0")

        async def body() -> None:
            await self.ready(runtime, built)
            before = runtime.status()
            await runtime.apply(*built)
            after = runtime.status()
            assert after == before and after.restart_count == 0

        self.run(runtime, body)

    def test_a_new_release_replaces_the_running_one(
        self, runtime: RuntimeAdapter, runnable: Callable[[str], Built]
    ) -> None:
        first, second = runnable("1.0.0"), runnable("2.0.0")

        async def body() -> None:
            await self.ready(runtime, first)
            await self.ready(runtime, second)
            status = runtime.status()
            assert (status.release, status.alive) == (second[0].key, True)

        self.run(runtime, body)

    def test_a_release_that_cannot_be_prepared_leaves_the_running_one(
        self, runtime: RuntimeAdapter, runnable: Callable[[str], Built], unpreparable: Built
    ) -> None:
        running = runnable("1.0.0")

        async def body() -> None:
            await self.ready(runtime, running)
            with pytest.raises(ReasonError) as failure:
                await runtime.apply(*unpreparable)
            assert failure.value.code in self.PREPARE_FAILURES
            status = runtime.status()
            assert (status.release, status.alive) == (running[0].key, True)

        self.run(runtime, body)
