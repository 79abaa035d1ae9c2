"""The simulated runtime's SimulatedImages passes the SelfFetcher contract, and podman's
image store maps what its pulls say (on a fake podman; the real one passes the same
contract in tests/integration/test_podman_images.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from muto.agent.runtime import podman_images
from muto.agent.runtime.base import SelfFetcher
from muto.agent.runtime.commands import CommandResult, Stalled
from muto.agent.runtime.podman_images import PodmanImages
from muto.agent.runtime.simulated import SimulatedImages
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact, ArtifactType
from tests.support.fetcher_contract import SelfFetcherContract


def oci(n: int) -> Artifact:
    return Artifact(type=ArtifactType.OCI_IMAGE, ref="registry.example/nav",
                    digest="sha256:" + str(n) * 64, size=1)  # fmt: skip


class TestSimulatedImagesContract(SelfFetcherContract):
    @pytest.fixture
    def fetcher(self) -> SelfFetcher:
        return SimulatedImages(
            failing={oci(2).digest: ReasonCode.ARTIFACT_DOWNLOAD_FAILED},
            stalled={oci(3).digest},
            stall_sec=0.5,
        )

    @pytest.fixture
    def fetchable(self) -> Artifact:
        return oci(1)

    @pytest.fixture
    def unfetchable(self) -> Artifact:
        return oci(2)

    @pytest.fixture
    def stalling(self) -> Artifact:
        return oci(3)

    def pulls_left(self, fetcher: SelfFetcher) -> bool:
        assert isinstance(fetcher, SimulatedImages)
        return fetcher.pulling is not None


class FakePodman:
    """`image exists` answers from `store`; `pull` answers `pulled` (or raises it)."""

    def __init__(self, pulled: CommandResult | BaseException) -> None:
        self.store: set[str] = set()
        self.pulled = pulled
        self.calls: list[str] = []

    async def __call__(self, argv: Sequence[str], **_: object) -> CommandResult:
        verb = " ".join(argv[1:3])
        self.calls.append(verb)
        if verb == "image exists":
            return CommandResult(0 if argv[3] in self.store else 1, "")
        if isinstance(self.pulled, BaseException):
            raise self.pulled
        if self.pulled.ok:
            self.store.add(argv[-1])
        return self.pulled


def fetch_with(
    monkeypatch: pytest.MonkeyPatch, pulled: CommandResult | BaseException
) -> ReasonError:
    monkeypatch.setattr(podman_images, "run_command", FakePodman(pulled))
    with pytest.raises(ReasonError) as failure:
        asyncio.run(PodmanImages().fetch(oci(1)))
    return failure.value


def test_a_full_image_store_is_insufficient_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    full = CommandResult(125, "Error: writing blob: ... write /var/lib/containers/storage/"
                              "vfs/dir/x/blob: no space left on device")  # fmt: skip
    assert fetch_with(monkeypatch, full).code == ReasonCode.INSUFFICIENT_DISK


@pytest.mark.parametrize(
    ("pulled", "said"),
    [
        (CommandResult(125, "Error: manifest unknown"), "manifest unknown"),
        (Stalled("no bytes for 30s"), "no bytes for 30s"),
        (TimeoutError(), "not complete within 600s"),
    ],
)
def test_a_pull_that_does_not_come_is_a_download_failure(
    monkeypatch: pytest.MonkeyPatch, pulled: CommandResult | BaseException, said: str
) -> None:
    failure = fetch_with(monkeypatch, pulled)
    assert failure.code == ReasonCode.ARTIFACT_DOWNLOAD_FAILED  # not APPLY_FAILED
    assert said in failure.detail


def test_an_image_removed_outside_muto_reads_absent_and_is_pulled_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing is remembered: after `podman rmi` the agent pulls it as a download again,
    under the gates, not inside an apply."""
    fake = FakePodman(CommandResult(0, "abc\n"))
    monkeypatch.setattr(podman_images, "run_command", fake)
    images = PodmanImages()

    async def main() -> None:
        assert await images.fetch(oci(1)) is True
        assert await images.present([oci(1)]) == {oci(1).digest}
        fake.store.clear()  # `podman rmi` outside muto
        assert await images.present([oci(1)]) == frozenset()
        fake.calls.clear()
        assert await images.fetch(oci(1)) is True
        assert fake.calls == ["image exists", "pull --quiet"]

    asyncio.run(main())
