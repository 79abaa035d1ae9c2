"""An image the runtime pulls itself (podman's `oci_image`) is a download like an
archive's, on fakes (the simulated runtime with its self-fetching twin, SimulatedImages):
pulled before the apply, so the gates are judged after it and a vehicle that starts moving
meanwhile is not switched; pulled while the gates block; cut short by a newer desired
state (the withdrawn release never applied) or by a running release that needs the pass;
a pull that stalls or finds the store full is `failed` ARTIFACT_DOWNLOAD_FAILED or
`blocked` INSUFFICIENT_DISK and tried again, the release not condemned; a stop is not
held up by a pull. The same against real podman: tests/integration/test_podman_images.py
and tests/e2e/test_agent_podman.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from muto.agent.clock import SystemClock
from muto.agent.journal import events as ev
from muto.agent.reconcile.observed import Observed
from muto.agent.reconcile.planner import plan
from muto.agent.reconcile.steps import NoteRestoreFailed
from muto.agent.runtime.base import RuntimeStatus
from muto.agent.runtime.simulated import SimulatedImages
from muto.agent.safety import SimulatedStateProvider
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact, ArtifactType, HealthModel, StackRelease
from muto.domain.vehicle_state import VehicleState
from tests.support.agent_rig import T0, Rig, desired_of, journal_of, make_rig
from tests.support.releases import stack_release
from tests.support.waits import until

PARKED = VehicleState(free_disk_mb=100_000)
NOW = datetime.now(UTC) - timedelta(hours=1)


def image_release(version: str) -> StackRelease:
    digest = "sha256:" + version.replace(".", "")[:1] * 64
    image = Artifact(type=ArtifactType.OCI_IMAGE, ref="registry.example/nav", digest=digest,
                     size=1)  # fmt: skip
    return stack_release("nav", version, [image], health=HealthModel(readiness_timeout_sec=5))


A, B, C = image_release("1.0.0"), image_release("2.0.0"), image_release("3.0.0")


def image(release: StackRelease) -> str:
    return release.artifacts[0].digest


def pulling_rig(images: SimulatedImages, *, looped: bool = False, **settings: Any) -> Rig:
    """An agent on the simulated runtime that pulls its images itself through `images`;
    `looped`: on a real clock, for the agent's own loop (the watcher, notifies)."""
    if looped:
        settings = {"poll_s": 3600, "drift_check_s": 0.05, "health_every_s": 3600, **settings}
    return make_rig(
        clock=SystemClock() if looped else None,  # type: ignore[arg-type]
        vehicle=SimulatedStateProvider(PARKED),
        time_scale=1.0 if looped else 1e-6,
        fetcher=images,
        **settings,
    )


def serve(rig: Rig, target: StackRelease, sequence: int) -> None:
    rig.cloud.serve(rig.signers.bundle(target, sequence, issued=NOW))


def events(rig: Rig, kind: type[ev.Event]) -> list[Any]:
    return [r.event for r in rig.journal.records() if isinstance(r.event, kind)]


def applied(rig: Rig) -> list[str]:
    return [e.release_key for e in events(rig, ev.ApplyStarted)]


async def on_a(rig: Rig) -> None:
    serve(rig, A, 1)
    assert (await rig.reconcile()).kind == "converged"


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(60):  # only stops a hang (a pull that holds a stop up)
            await scenario()

    asyncio.run(bounded())


# -- the gates ---------------------------------------------------------------------------


def test_a_vehicle_that_starts_moving_during_the_pull_is_not_switched() -> None:
    """The reviewer's case: the gates were open when B was accepted, the 45 s pull began,
    and the vehicle drove off. The apply is planned only after the pull, with the gates
    judged again: blocked, A kept; parked again, B is applied from the pulled image."""

    async def scenario() -> None:
        images = SimulatedImages(held={image(A)}, arrives=asyncio.Event())
        rig = pulling_rig(images)
        await rig.agent.start(loop=False)
        await on_a(rig)
        serve(rig, B, 2)
        pass_ = asyncio.ensure_future(rig.reconcile())
        await until(lambda: images.pulling == image(B), "B's pull", in_thread=False)
        assert applied(rig) == [A.key]  # nothing is applied while the image comes
        rig.vehicle.set(speed_mps=8.0, autonomous_mode=True)
        images.arrives.set()  # type: ignore[union-attr]
        verdict = await pass_
        assert verdict.kind == "blocked"
        assert ReasonCode.DENY_MOVING in verdict.codes
        assert rig.runtime.status().release == A.key and applied(rig) == [A.key]
        assert image(B) in images.held  # the download was not wasted
        assert [e.digest for e in events(rig, ev.ArtifactCached)] == [image(B)]
        rig.vehicle.set(speed_mps=0.0, autonomous_mode=False)
        assert (await rig.reconcile()).kind == "converged"
        assert rig.runtime.status().release == B.key and images.pulls == [image(B)]

    run(scenario)


def test_a_blocked_vehicle_pulls_the_image_meanwhile() -> None:
    """Blocked: downloads continue, apply does not start (docs/agent.md), an image too."""

    async def scenario() -> None:
        images = SimulatedImages(held={image(A)})
        rig = pulling_rig(images)
        await rig.agent.start(loop=False)
        await on_a(rig)
        rig.vehicle.set(speed_mps=8.0)
        serve(rig, B, 2)
        assert (await rig.reconcile()).kind == "blocked"
        assert images.pulls == [image(B)] and applied(rig) == [A.key]

    run(scenario)


# -- failures that are a download's --------------------------------------------------------


def test_a_stalled_pull_is_a_download_that_failed_and_the_release_is_not_condemned() -> None:
    async def scenario() -> None:
        images = SimulatedImages(held={image(A)}, stalled={image(B)}, stall_sec=0.01)
        rig = pulling_rig(images)
        await rig.agent.start(loop=False)
        await on_a(rig)
        serve(rig, B, 2)
        for _ in range(2):  # each poll tries again
            verdict = await rig.reconcile()
            assert (verdict.kind, verdict.codes) == (
                "failed",
                (ReasonCode.ARTIFACT_DOWNLOAD_FAILED,),
            )
        state = rig.journal.state
        assert B.key not in state.failed and state.rollback_due is None
        assert rig.runtime.status().release == A.key and applied(rig) == [A.key]
        assert [e.code for e in events(rig, ev.ArtifactFailed)] == [
            ReasonCode.ARTIFACT_DOWNLOAD_FAILED
        ] * 2
        assert not events(rig, ev.ApplyFailed)
        images.stalled.clear()  # the registry answers again
        assert (await rig.reconcile()).kind == "converged"
        assert rig.runtime.status().release == B.key

    run(scenario)


def test_a_full_image_store_blocks_the_release_until_there_is_room() -> None:
    async def scenario() -> None:
        images = SimulatedImages(held={image(A)}, failing={image(B): ReasonCode.INSUFFICIENT_DISK})
        rig = pulling_rig(images)
        await rig.agent.start(loop=False)
        await on_a(rig)
        serve(rig, B, 2)
        verdict = await rig.reconcile()
        assert (verdict.kind, verdict.codes) == ("blocked", (ReasonCode.INSUFFICIENT_DISK,))
        assert B.key not in rig.journal.state.failed and applied(rig) == [A.key]
        # Not pulled again at every poll (the second pass: 40 MB a poll, an event each):
        # refused the same until there is more room (or another revision, or an hour).
        tried, before = len(images.pulls), rig.journal.state.position
        for _ in range(3):
            assert (await rig.reconcile()).kind == "blocked"
        assert (len(images.pulls), rig.journal.state.position) == (tried, before)
        images.failing.clear()  # space freed
        rig.vehicle.set(free_disk_mb=200_000)  # the agent sees the room made
        assert (await rig.reconcile()).kind == "converged"
        await rig.deliver()
        assert rig.cloud.reconcile_reports() == [
            ("dsr_1", "converged", []),
            ("dsr_2", "blocked", ["INSUFFICIENT_DISK"]),
            ("dsr_2", "converged", []),
        ]

    run(scenario)


# -- what cuts a pull short ---------------------------------------------------------------


async def running_a_then_pulling_b(rig: Rig, images: SimulatedImages) -> None:
    """The looped agent started, A running, B assigned and its image being pulled."""
    await rig.agent.start()
    serve(rig, A, 1)
    rig.agent.trigger("test")
    await until(lambda: rig.journal.state.running_key == A.key, "A", in_thread=False)
    serve(rig, B, 2)
    rig.agent.trigger("test")
    await until(lambda: images.pulling == image(B), "B's pull", in_thread=False)


def test_the_operators_rollback_during_the_pull_is_taken_and_the_release_never_started() -> None:
    """The reviewer's case: nav@2 withdrawn (nav@1 assigned again) 10 s into its pull."""

    async def scenario() -> None:
        images = SimulatedImages(held={image(A)}, arrives=asyncio.Event())
        rig = pulling_rig(images, looped=True)
        try:
            await running_a_then_pulling_b(rig, images)
            serve(rig, A, 3)
            rig.agent.signals.notify(3)  # as the MQTT link does for desired/notify
            await until(
                lambda: rig.agent.idle and rig.journal.state.accepted_sequence == 3,
                "sequence 3 taken",
                timeout=5,
                in_thread=False,
            )
            assert images.cut == [image(B)]
            assert B.key not in applied(rig) and rig.runtime.status().release == A.key
            stopped = [(e.stopped, e.digests) for e in events(rig, ev.PassPreempted)]
            assert stopped == [("download", [image(B)])]
        finally:
            await rig.agent.stop()

    run(scenario)


def test_a_stalled_pull_holds_up_neither_a_restore_nor_a_stop() -> None:
    """A registry that accepts and never answers: the stack removed meanwhile is put back
    at once (the pull is cut, and resumed after), and a stop ends the pull at once."""

    async def scenario() -> None:
        images = SimulatedImages(held={image(A)}, stalled={image(B)}, stall_sec=3600)
        rig = pulling_rig(images, looped=True)
        try:
            await running_a_then_pulling_b(rig, images)
            rig.runtime.halt()  # `podman rm -f muto-nav`
            await until(
                lambda: [e.restore for e in events(rig, ev.ApplyStarted)] == [False, True],
                "A restored",
                timeout=10,
                in_thread=False,
            )
            await until(lambda: images.pulling == image(B), "the pull resumed", in_thread=False)
            assert rig.runtime.status().alive and rig.runtime.status().release == A.key
        finally:
            await rig.agent.stop()
        assert images.pulling is None and images.cut == [image(B)] * 2
        assert isinstance(list(rig.journal.records())[-1].event, ev.AgentStopped)
        assert B.key not in applied(rig)

    run(scenario)


# -- the planner ---------------------------------------------------------------------------


def test_a_rollback_target_whose_image_is_not_held_is_not_at_hand() -> None:
    """A restore that cannot get its image (the registry out of reach) rolls back only to
    a known good whose image podman holds; else the pass ends ARTIFACT_DOWNLOAD_FAILED."""
    state = journal_of(desired_of(image_release("9.0.0"), 3), running_key=B.key)
    state.known_good = [A.key, B.key]
    state.releases = {r.key: r for r in (A, B)}
    down = RuntimeStatus(release=None, alive=False, restart_count=0, crash_looping=False)
    lost = {image(B): ReasonCode.ARTIFACT_DOWNLOAD_FAILED}

    def planned(cached: frozenset[str]) -> bool:
        observed = Observed(
            journal=state, runtime=down, vehicle=PARKED, cached=cached, download_failures=lost
        )
        return any(isinstance(s, NoteRestoreFailed) for s in plan(None, observed, T0).steps)

    assert planned(frozenset({image(A)}))
    assert not planned(frozenset())


def test_an_image_missing_is_a_download_step_and_one_held_is_applied() -> None:
    state = journal_of(desired_of(B, 2), running_key=A.key)
    state.releases = {r.key: r for r in (A, B)}
    up = RuntimeStatus(release=A.key, alive=True, restart_count=0, crash_looping=False)

    def kinds(cached: frozenset[str]) -> list[str]:
        observed = Observed(journal=state, runtime=up, vehicle=PARKED, cached=cached)
        desired = state.desired
        return [type(s).__name__ for s in plan(desired, observed, T0).steps]

    assert "FetchArtifacts" in kinds(frozenset({image(A)}))
    assert "Apply" not in kinds(frozenset({image(A)}))
    assert "Apply" in kinds(frozenset({image(A), image(B)}))
