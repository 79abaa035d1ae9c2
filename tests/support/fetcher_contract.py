"""One contract for a runtime's SelfFetcher (muto/agent/runtime/base.py), proved on every
adapter and its twin: podman's image store (tests/integration/test_podman_images.py) and
the simulated runtime's SimulatedImages (tests/unit/test_runtime_simulated_images.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from muto.agent.runtime.base import SelfFetcher
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact


class SelfFetcherContract:
    """Subclasses provide the fixtures and `pulls_left`:
    - `fetcher`: the adapter, holding none of the artifacts below;
    - `fetchable`: an artifact it fetches;
    - `unfetchable`: one whose fetch fails (its source serves other bytes, or none);
    - `stalling`: one whose source accepts and never answers; the fetcher's stall bound
      is short (seconds);
    - `pulls_left(fetcher)`: whether anything of a fetch still runs."""

    @pytest.fixture
    def fetcher(self) -> SelfFetcher:
        raise NotImplementedError

    @pytest.fixture
    def fetchable(self) -> Artifact:
        raise NotImplementedError

    @pytest.fixture
    def unfetchable(self) -> Artifact:
        raise NotImplementedError

    @pytest.fixture
    def stalling(self) -> Artifact:
        raise NotImplementedError

    def pulls_left(self, fetcher: SelfFetcher) -> bool:
        raise NotImplementedError

    def run(self, body: Callable[[], Awaitable[None]]) -> None:
        asyncio.run(body())

    def test_an_artifact_is_present_once_fetched_and_not_fetched_again(
        self, fetcher: SelfFetcher, fetchable: Artifact
    ) -> None:
        async def body() -> None:
            assert await fetcher.present([fetchable]) == frozenset()
            assert await fetcher.fetch(fetchable) is True
            assert await fetcher.present([fetchable]) == {fetchable.digest}
            assert await fetcher.fetch(fetchable) is False

        self.run(body)

    def test_a_fetch_that_fails_is_a_download_failure_and_leaves_nothing(
        self, fetcher: SelfFetcher, unfetchable: Artifact
    ) -> None:
        async def body() -> None:
            with pytest.raises(ReasonError) as failure:
                await fetcher.fetch(unfetchable)
            assert failure.value.code == ReasonCode.ARTIFACT_DOWNLOAD_FAILED
            assert await fetcher.present([unfetchable]) == frozenset()

        self.run(body)

    def test_a_stalled_source_fails_the_fetch_within_its_stall_bound(
        self, fetcher: SelfFetcher, stalling: Artifact
    ) -> None:
        async def body() -> None:
            with pytest.raises(ReasonError) as failure:
                async with asyncio.timeout(60):  # only stops a hang: the bound is seconds
                    await fetcher.fetch(stalling)
            assert failure.value.code == ReasonCode.ARTIFACT_DOWNLOAD_FAILED
            assert "no bytes" in failure.value.detail
            assert not self.pulls_left(fetcher)

        self.run(body)

    def test_a_cancelled_fetch_leaves_nothing_running(
        self, fetcher: SelfFetcher, stalling: Artifact
    ) -> None:
        async def body() -> None:
            pull = asyncio.ensure_future(fetcher.fetch(stalling))
            for _ in range(200):  # until the pull is under way
                if self.pulls_left(fetcher):
                    break
                await asyncio.sleep(0.05)
            assert self.pulls_left(fetcher)
            pull.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pull
            assert not self.pulls_left(fetcher)
            assert await fetcher.present([stalling]) == frozenset()

        self.run(body)
