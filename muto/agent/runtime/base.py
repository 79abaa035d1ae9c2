"""The runtime adapter port: how the agent applies, stops, watches and waits on a release.

Every adapter keeps these invariants (each adapter's docstring says how):
- after the adapter is constructed, no process it started before a crash is alive (an
  agent killed with SIGKILL cannot stop its stack; the next one must not run a second);
- at most one release's processes run at a time;
- apply of B stops A only after B's files are in place, so a B that cannot even be
  prepared (bad archive, missing artifact, failed install) leaves A running;
- applying the release that is already running is a no-op;
- every expected failure is a ReasonError with a code from muto/domain/reasons.py.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from muto.domain.release import Artifact, ArtifactType, HealthModel, StackRelease


@dataclass(frozen=True, slots=True)
class RuntimeStatus:
    """What a runtime observes right now about the release it runs."""

    release: str | None  # `stack@version`, or None when nothing runs
    alive: bool
    restart_count: int
    crash_looping: bool
    # After readiness: what the release's healthModel.ros finds missing from the ROS
    # graph now (a node gone, a topic silent or too slow); None while it is whole.
    degraded: str | None = None
    # Not alive now, but the runtime's own supervision is starting it again (a process
    # runtime between a crash and its restart): every such restart counts for the
    # crash-loop rule, so the agent leaves it to that rule instead of restoring the
    # release itself. False with `alive` False: down until something applies it again.
    restarting: bool = False


STOPPED = RuntimeStatus(release=None, alive=False, restart_count=0, crash_looping=False)


class RuntimeAdapter(Protocol):
    name: str

    async def apply(self, release: StackRelease, artifacts: Mapping[str, Path]) -> None:
        """Make `release` the running one. `artifacts` maps digest -> verified cached file.
        Raises ReasonError(APPLY_FAILED, detail). A no-op when `release` already runs."""
        ...

    async def stop(self) -> None:
        """Stop the running release, if any; afterwards none of its processes is alive."""
        ...

    def status(self) -> RuntimeStatus:
        """Running release, liveness, restarts and the crash-loop verdict; never blocks."""
        ...

    async def wait_ready(self, health: HealthModel) -> None:
        """Return once the running release is ready. Raises ReasonError READINESS_TIMEOUT
        after health.readiness_timeout_sec, or CRASH_LOOP_DETECTED if the crash-loop rule
        trips while waiting."""
        ...


@runtime_checkable
class SelfFetcher(Protocol):
    """How a runtime that fetches some artifacts itself (podman pulls an `oci_image` from
    its registry into its own store) lets the agent fetch them as downloads, before an
    apply and under the same rules as the artifact cache's: while the gates block, cut
    short for a newer desired state or a running release that needs the pass, a failure
    `failed` ARTIFACT_DOWNLOAD_FAILED (or `blocked` INSUFFICIENT_DISK) and tried again,
    never a failure of the release. The runtime's apply still checks the artifact is there.

    Invariants (tests/support/fetcher_contract.py, on every adapter and its twin): an
    artifact is present after its fetch returns; a fetch of one present fetches nothing
    (False); a fetch that fails leaves it absent and raises ReasonError
    ARTIFACT_DOWNLOAD_FAILED, or INSUFFICIENT_DISK for a full store; a fetch that gets no
    bytes for a while, or does not finish in time, fails so; a cancelled fetch leaves
    nothing of it running."""

    types: frozenset[ArtifactType]  # the artifact types it fetches; the cache has the rest

    async def present(self, artifacts: Collection[Artifact]) -> frozenset[str]:
        """The digests of `artifacts` (of `types`) the runtime holds now."""
        ...

    async def fetch(self, artifact: Artifact) -> bool:
        """Fetch `artifact` unless present; True if it was fetched now."""
        ...


@runtime_checkable
class KeepsReleases(Protocol):
    """A runtime that keeps what it built for a release (an extracted directory, a venv)
    so that a rollback to it costs no rebuild: told the releases the agent may roll back
    to (its known good), it keeps theirs and removes the rest at its next apply."""

    def keep_releases(self, release_keys: Collection[str]) -> None: ...


def own_fetcher(runtime: object) -> SelfFetcher | None:
    """The SelfFetcher of a runtime that fetches artifacts itself (its `fetcher`)."""
    fetcher = getattr(runtime, "fetcher", None)
    return fetcher if isinstance(fetcher, SelfFetcher) else None
