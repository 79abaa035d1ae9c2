"""podman's image store as the agent's SelfFetcher, against real podman and a real
registry on loopback (tests/support/podman.py), and a registry that accepts connections
and never answers (a stalled mirror): the pull is given up after its stall bound, and a
cancelled one leaves no podman behind."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from muto.agent.runtime.base import SelfFetcher
from muto.agent.runtime.podman_images import PodmanImages
from muto.agent.runtime.procfs import PROC
from muto.domain.release import Artifact, ArtifactType
from tests.support.fetcher_contract import SelfFetcherContract
from tests.support.podman import (
    PodmanWorld,
    Pushed,
    podman_env_fixture,  # noqa: F401 (fixture)
    podman_world_fixture,  # noqa: F401 (fixture)
)


def oci(pushed: Pushed) -> Artifact:
    return Artifact(type=ArtifactType.OCI_IMAGE, ref=pushed.repo, digest=pushed.digest, size=1)


class Silent:
    """A TCP server on loopback that accepts and never answers."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.held.append(connection)

    def close(self) -> None:
        self.server.close()
        for connection in self.held:
            connection.close()


@pytest.fixture
def silent(
    podman_env: PodmanWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Silent]:
    """A silent registry podman may talk plain HTTP to, beside the world's."""
    server = Silent()
    conf = tmp_path / "registries.conf"
    world = Path(podman_env.rig.env["CONTAINERS_REGISTRIES_CONF"]).read_text()
    conf.write_text(f'{world}[[registry]]\nlocation = "{server.host}"\ninsecure = true\n')
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(conf))
    try:
        yield server
    finally:
        server.close()


def pulls_of(ref: str) -> list[int]:
    """The pids of `podman pull` processes naming `ref`."""
    found = []
    for entry in PROC.iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"pull" in argv and any(ref.encode() in arg for arg in argv):
            found.append(int(entry.name))
    return found


class TestPodmanImagesContract(SelfFetcherContract):
    @pytest.fixture
    def fetcher(self, podman_env: PodmanWorld, silent: Silent) -> SelfFetcher:
        self.silent = silent
        podman_env.rig.forget_image(podman_env.other_stack.pinned)
        return PodmanImages(stall_sec=2.0, total_sec=60.0)

    @pytest.fixture
    def fetchable(self, podman_env: PodmanWorld) -> Artifact:
        return oci(podman_env.other_stack)

    @pytest.fixture
    def unfetchable(self, podman_env: PodmanWorld) -> Artifact:
        return oci(podman_env.tampered)  # the registry serves other bytes under its digest

    @pytest.fixture
    def stalling(self, silent: Silent) -> Artifact:
        return Artifact(type=ArtifactType.OCI_IMAGE, ref=f"{silent.host}/nav",
                        digest="sha256:" + "5" * 64, size=1)  # fmt: skip

    def pulls_left(self, fetcher: SelfFetcher) -> bool:
        return bool(pulls_of(self.silent.host))
