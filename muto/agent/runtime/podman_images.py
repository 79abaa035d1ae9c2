"""podman's image store as the agent's SelfFetcher: an `oci_image` is pulled by digest
as a download, before the apply, not inside it (runtime/base.py, SelfFetcher)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from muto.agent.runtime.commands import Stalled, run_command
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact, ArtifactType

# As the artifact cache's downloads: no bytes for this long is a stalled registry (one
# that accepts and never answers), and a pull must finish within the total.
PULL_STALL_SEC = 30.0
PULL_TOTAL_SEC = 600.0
CHECK_SEC = 30.0  # `podman image exists` reads the local store only
# What a pull into a full store says (podman passes the system's ENOSPC on).
NO_SPACE = "no space left on device"


@dataclass
class PodmanImages:
    """`podman image exists` / `podman pull --quiet <ref>@<digest>`. Pulled by digest, so
    podman checks the manifest against the signed digest (a registry serving other bytes
    is refused and nothing is stored). podman's store is asked each time (about 40 ms an
    image), nothing remembered: an image removed outside muto (`podman rmi`) must read
    absent, so that the agent pulls it as a download, under the gates, rather than the
    apply pulling it. A pull that gets no bytes for `stall_sec` or does not finish within
    `total_sec`: ARTIFACT_DOWNLOAD_FAILED; a full store: INSUFFICIENT_DISK; cancelled,
    its podman is killed."""

    podman: str = "podman"
    stall_sec: float = PULL_STALL_SEC
    total_sec: float = PULL_TOTAL_SEC
    types: frozenset[ArtifactType] = frozenset({ArtifactType.OCI_IMAGE})

    async def present(self, artifacts: Collection[Artifact]) -> frozenset[str]:
        return frozenset(
            [a.digest for a in artifacts if a.type in self.types and await self._holds(a)]
        )

    async def fetch(self, artifact: Artifact) -> bool:
        if await self._holds(artifact):
            return False
        await self._pull(artifact, self.total_sec)
        return True

    async def ensure(self, artifact: Artifact, total_sec: float) -> None:
        """The apply's own check, right before it runs the image: one removed since it was
        fetched is pulled again, within `total_sec` (short: the apply is not cut short, and
        the next pass fetches it as a download)."""
        if not await self._holds(artifact):
            await self._pull(artifact, total_sec)

    async def _holds(self, artifact: Artifact) -> bool:
        """Whether podman's store holds the image now. A ref pinned to another digest than
        signed has nothing to fetch: the apply refuses the release (APPLY_FAILED)."""
        try:
            image = image_ref(artifact)
        except ReasonError:
            return True
        try:
            argv = [self.podman, "image", "exists", image]
            found = await run_command(argv, timeout_sec=CHECK_SEC)
        except (OSError, TimeoutError):
            return False  # a podman that cannot be asked proves nothing is there
        return found.ok

    async def _pull(self, artifact: Artifact, total_sec: float) -> None:
        image = image_ref(artifact)
        try:
            pulled = await run_command(
                [self.podman, "pull", "--quiet", image],
                timeout_sec=total_sec,
                stall_sec=self.stall_sec,
            )
        except Stalled as stalled:
            raise ReasonError(LOST, f"podman pull {image}: {stalled}") from None
        except TimeoutError:
            late = f"podman pull {image}: not complete within {total_sec:g}s"
            raise ReasonError(LOST, late) from None
        except OSError as exc:
            raise ReasonError(ReasonCode.APPLY_FAILED, f"podman pull: {exc!r}") from None
        if not pulled.ok:
            code = ReasonCode.INSUFFICIENT_DISK if NO_SPACE in pulled.output.lower() else LOST
            raise ReasonError(code, f"podman pull: {pulled.output.strip()}")


LOST = ReasonCode.ARTIFACT_DOWNLOAD_FAILED


def image_ref(artifact: Artifact) -> str:
    """`<ref>@<digest>`: podman verifies the pulled image against the signed digest."""
    ref, _, pinned = artifact.ref.partition("@")
    if pinned and pinned != artifact.digest:
        raise ReasonError(
            ReasonCode.APPLY_FAILED, f"{artifact.ref} is pinned to another digest than signed"
        )
    return f"{ref}@{artifact.digest}"
