"""A newer desired state announced while a pass works toward an older one, on fakes
(simulated runtime and artifacts, a fake cloud): the download in progress stops (its
partial kept), the pass fetches and verifies the newer document at once, and the older
release is never applied: a notify (MQTT), or without MQTT the poll made during the
download; just before an apply the same holds. Only verified desired state moves
anything: a forged notify (the cloud has nothing newer) stops a download at most once
and an apply at most once, and the vehicle converges all the same. The same with real
processes: tests/integration/test_agent_newer_desired.py."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from muto.agent.clock import SystemClock
from muto.agent.journal import events as ev
from muto.agent.reconcile.reconciler import Stop, stops_for_newer
from muto.agent.transport.http import Fetched, NotFetched
from tests.support.agent_rig import A, B, C, FakeCloud, Rig, converged_on, make_rig, run, started
from tests.support.waits import until

STOPS: list[Stop] = ["fetch", "download", "apply"]


# -- the rule, on plain data ---------------------------------------------------------------


@given(
    stop=st.sampled_from(STOPS),
    hinted=st.integers(0, 50),
    accepted=st.integers(0, 50),
    spent=st.sets(st.sampled_from(STOPS)),
    acted=st.sets(st.tuples(st.sampled_from(STOPS), st.integers(0, 50))),
    asked=st.integers(0, 50),
)
def test_only_news_stops_anything_and_never_twice(
    stop: Stop,
    hinted: int,
    accepted: int,
    spent: set[str],
    acted: set[tuple[Stop, int]],
    asked: int,
) -> None:
    stops = stops_for_newer(stop, hinted, accepted, spent=spent, acted=acted, asked=asked)
    if hinted <= accepted or stop in spent or (stop, hinted) in acted:
        assert not stops
    if stop == "fetch" and hinted == asked:
        assert not stops  # a fetch asked after the hint brings whatever the cloud has
    if stops:
        assert not stops_for_newer(
            stop, hinted, accepted, spent=spent, acted={*acted, (stop, hinted)}, asked=asked
        )


def test_the_rule_by_example() -> None:
    assert stops_for_newer("download", 13, 12)
    assert stops_for_newer("apply", 13, 12)
    assert not stops_for_newer("download", 12, 12)  # at the accepted sequence: old news
    assert not stops_for_newer("download", 11, 12)
    assert not stops_for_newer("download", 13, 12, acted={("download", 13)})
    assert stops_for_newer("apply", 13, 12, acted={("download", 13)})  # a second chance
    assert stops_for_newer("download", 14, 12, acted={("download", 13)})
    assert not stops_for_newer("download", 14, 12, spent={"download"})  # found nothing
    assert not stops_for_newer("fetch", 13, 12, asked=13)
    assert stops_for_newer("fetch", 13, 12, asked=0)


# -- with the agent's loop, a real clock -----------------------------------------------------

NOW = datetime.now(UTC) - timedelta(hours=1)


def loop_rig(**settings: Any) -> Rig:
    defaults = {"poll_s": 3600, "drift_check_s": 0.05, "health_every_s": 3600}
    return make_rig(
        clock=SystemClock(),  # type: ignore[arg-type]
        time_scale=1.0,
        **{**defaults, **settings},
    )


def serve(rig: Rig, target: Any, sequence: int) -> None:
    rig.cloud.serve(rig.signers.bundle(target, sequence, issued=NOW))


def events(rig: Rig, kind: type[ev.Event], after: int = 0) -> list[Any]:
    return [r.event for r in rig.journal.records(after) if isinstance(r.event, kind)]


def stops(rig: Rig, after: int = 0) -> list[Any]:
    """The downloads the journal says were stopped for a newer desired state."""
    return [e for e in events(rig, ev.PassPreempted, after) if e.stopped == "download"]


def applied(rig: Rig, after: int = 0) -> list[str]:
    return [e.release_key for e in events(rig, ev.ApplyStarted, after)]


async def on_a_then_downloading_b(rig: Rig, download_sec: float) -> int:
    """A runs (sequence 1); B (sequence 2) is accepted and its artifact is downloading.
    Returns the journal's position then."""
    await rig.agent.start()
    serve(rig, A, 1)
    rig.agent.trigger("test")
    await until(lambda: rig.journal.state.running_key == A.key, "A", in_thread=False)
    rig.artifacts.missing, rig.artifacts.download_sec = {B.artifacts[0].digest}, download_sec
    serve(rig, B, 2)
    rig.agent.trigger("test")
    await until(lambda: rig.agent.phase.value == "caching", "B's download", in_thread=False)
    assert rig.journal.state.accepted_sequence == 2
    return rig.journal.state.position


@pytest.mark.parametrize("newer", ["the operator's rollback to A", "another release, C"])
def test_a_newer_revision_notified_mid_download_is_taken_without_applying_the_older(
    newer: str,
) -> None:
    """The reviewer's case: a rollout of B rolled back 12 s into B's long download. The
    notify stops the download at once; B is never applied."""

    async def scenario() -> None:
        rig = loop_rig()
        target = A if newer.endswith("A") else C
        try:
            before = await on_a_then_downloading_b(rig, download_sec=60)
            serve(rig, target, 3)
            rig.agent.signals.notify(3)  # as the MQTT link does for desired/notify
            await until(
                lambda: rig.agent.idle and rig.journal.state.running_key == target.key,
                "converged on sequence 3",
                timeout=5,
                in_thread=False,
            )
            assert B.key not in applied(rig, before)
            assert B.key not in rig.runtime.applied
            (stopped,) = stops(rig, before)
            assert (stopped.release_key, stopped.digests) == (B.key, [B.artifacts[0].digest])
            assert (stopped.sequence, stopped.accepted) == (3, 2)
            assert B.artifacts[0].digest in rig.artifacts.missing  # the download never ended
            assert rig.journal.state.accepted_sequence == 3
            outcome = rig.journal.state.last_outcome("dsr_3")
            assert outcome is not None and outcome.status == "converged"
            # The stop comes before the newer document in the journal: why it stopped.
            kinds = [type(r.event).__name__ for r in rig.journal.records(before)]
            assert kinds.index("PassPreempted") < kinds.index("DesiredVerified")
        finally:
            await rig.agent.stop()

    run(scenario)


def test_without_mqtt_the_poll_during_a_download_sees_a_newer_revision() -> None:
    """No notify: every poll interval during the download, a conditional fetch (a 304
    while nothing changed, the download going on); once the cloud has sequence 3, the
    download stops and the vehicle converges on it, B never applied."""

    async def scenario() -> None:
        rig = loop_rig(poll_s=0.3, poll_jitter=0.0)
        try:
            before = await on_a_then_downloading_b(rig, download_sec=60)
            fetches = rig.cloud.fetches
            await asyncio.sleep(1.0)
            assert rig.cloud.fetches >= fetches + 2  # polls during the download: 304s
            assert rig.agent.phase.value == "caching" and not stops(rig, before)
            serve(rig, C, 3)  # no notify
            await until(
                lambda: rig.agent.idle and rig.journal.state.running_key == C.key,
                "converged on C",
                timeout=5,
                in_thread=False,
            )
            assert B.key not in rig.runtime.applied
            (stopped,) = stops(rig, before)
            assert stopped.release_key == B.key
        finally:
            await rig.agent.stop()

    run(scenario)


def test_a_forged_notify_stops_a_download_at_most_once_and_the_vehicle_converges() -> None:
    """Notifies whose sequence the cloud does not have (forged, or a flood of them): the
    first stops the download, its fetch finds nothing newer, the download resumes and is
    stopped no more in this pass, B is applied (held back once, for one fetch more)."""

    async def scenario() -> None:
        rig = loop_rig()
        flood: asyncio.Task[None] | None = None
        try:
            before = await on_a_then_downloading_b(rig, download_sec=1.0)
            fetches = rig.cloud.fetches
            rig.agent.signals.notify(999)
            await until(lambda: len(stops(rig, before)) == 1, "the stop", in_thread=False)

            async def forge() -> None:
                for sequence in range(1000, 10_000):  # a new sequence every 20 ms
                    rig.agent.signals.notify(sequence)
                    await asyncio.sleep(0.02)

            flood = asyncio.create_task(forge())
            await until(
                lambda: rig.journal.state.running_key == B.key,
                "B applied all the same",
                timeout=6,
                in_thread=False,
            )
            assert len(stops(rig, before)) == 1
            assert applied(rig, before) == [B.key]
            assert rig.journal.state.accepted_sequence == 2  # nothing unverified moved it
            assert rig.cloud.fetches > fetches  # each stop was judged by a fetch
        finally:
            if flood is not None:
                flood.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flood
            await rig.agent.stop()

    run(scenario)


def test_a_notify_at_or_below_the_accepted_sequence_changes_nothing() -> None:
    async def scenario() -> None:
        rig = loop_rig()
        try:
            before = await on_a_then_downloading_b(rig, download_sec=1.0)
            fetches = rig.cloud.fetches
            rig.agent.signals.notify(2)
            rig.agent.signals.notify(1)
            await asyncio.sleep(0.3)
            assert rig.cloud.fetches == fetches and not stops(rig, before)
            assert rig.agent.phase.value == "caching"  # the download goes on
            await until(
                lambda: rig.journal.state.running_key == B.key, "B", timeout=5, in_thread=False
            )
            assert not stops(rig, before)
        finally:
            await rig.agent.stop()

    run(scenario)


class Hanging(FakeCloud):
    """A cloud whose next fetch hangs (a slow uplink, an API process stuck) until the
    vehicle gives up on it."""

    hang: bool = False

    async def latest(self, etag: str | None) -> Fetched | NotFetched:
        if self.hang:
            self.hang = False
            await asyncio.sleep(3600)
        return await super().latest(etag)


def test_a_fetch_asked_before_the_notify_is_asked_again_at_once() -> None:
    async def scenario() -> None:
        cloud = Hanging()
        rig = make_rig(
            cloud=cloud,
            clock=SystemClock(),  # type: ignore[arg-type]
            time_scale=1.0,
            poll_s=3600,
            drift_check_s=0.05,
            health_every_s=3600,
        )
        try:
            await rig.agent.start()
            serve(rig, A, 1)
            rig.agent.trigger("test")
            await until(lambda: rig.journal.state.running_key == A.key, "A", in_thread=False)
            cloud.hang = True
            rig.agent.trigger("poll")
            await until(lambda: rig.agent.phase.value == "fetching", "the fetch", in_thread=False)
            serve(rig, C, 3)
            rig.agent.signals.notify(3)
            await until(
                lambda: rig.journal.state.running_key == C.key, "C", timeout=5, in_thread=False
            )
        finally:
            await rig.agent.stop()

    run(scenario)


# -- the last moment before an apply, passes driven by hand ----------------------------------


class Committing(FakeCloud):
    """A cloud that commits sequence 3 (C) right after it answered a fetch with B, and
    notifies: the notify reaches the vehicle while its pass is about to apply B."""

    on_b: Any = None

    async def latest(self, etag: str | None) -> Fetched | NotFetched:
        got = await super().latest(etag)
        if self.on_b is not None and isinstance(got, Fetched) and got.sequence == 2:
            self.on_b()
        return got


def test_an_apply_is_held_back_for_a_newer_revision_announced_before_it() -> None:
    async def scenario() -> None:
        cloud = Committing()
        rig = await started(cloud=cloud)
        await converged_on(rig, A, 1)
        before = rig.journal.state.position

        def committed() -> None:
            cloud.on_b = None
            serve(rig, C, 3)
            rig.agent.signals.notify(3)

        cloud.on_b = committed
        serve(rig, B, 2)
        assert (await rig.reconcile()).kind == "converged"
        assert applied(rig, before) == [C.key]  # B was accepted, never applied
        assert [e.sequence for e in events(rig, ev.DesiredVerified, before)] == [2, 3]
        (held,) = events(rig, ev.PassPreempted, before)  # the journal says why
        assert (held.stopped, held.release_key, held.sequence, held.accepted) == (
            "apply",
            B.key,
            3,
            2,
        )
        assert rig.runtime.status().release == C.key

    run(scenario)


def test_a_hold_whose_fetch_finds_nothing_newer_applies_after_one_more_fetch() -> None:
    """The notify came before the cloud could serve it (or was forged): one fetch more,
    then the apply; the next pass takes the newer one."""

    async def scenario() -> None:
        cloud = Committing()
        rig = await started(cloud=cloud)
        await converged_on(rig, A, 1)
        before = rig.journal.state.position
        cloud.on_b = lambda: rig.agent.signals.notify(3)  # nothing committed yet
        serve(rig, B, 2)
        fetches = cloud.fetches
        assert (await rig.reconcile()).kind == "converged"
        assert cloud.fetches == fetches + 2  # the pass's fetch, and one for the hold
        assert applied(rig, before) == [B.key]
        position = rig.journal.state.position
        assert (await rig.reconcile()).kind == "converged"  # held once per sequence
        assert applied(rig, position) == []
        serve(rig, C, 3)
        assert (await rig.reconcile()).kind == "converged"
        assert rig.runtime.status().release == C.key

    run(scenario)
