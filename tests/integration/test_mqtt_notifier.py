"""The notifier: an assignment becomes a retained desired/notify; an outage or a restart
loses none and republishes nothing already acknowledged (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import assign_desired_state
from muto.cloud.mqtt.bridge import Bridge
from muto.cloud.settings import Settings
from tests.conftest import Mosquitto
from tests.support.mqtt_watch import (
    FAST,
    RELEASE,
    Watcher,
    assign,
    expected_url,
    notify_topic,
    open_fleet,
    settings_for,
)
from tests.support.spine import cause, desired_request
from tests.support.waits import until

pytestmark = pytest.mark.mqtt


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _settings(backend: str, request: pytest.FixtureRequest, tmp: Path, url: str) -> Settings:
    pg = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    return settings_for(backend, tmp, url, pg)


def acked_through_head(bridge: Bridge, cp: ControlPlane) -> bool:
    return bridge.outbox.position() == cp.log.position()


def with_bridge(cp: ControlPlane, scenario: Callable[[Bridge], Awaitable[None]]) -> None:
    """Run `scenario` with the bridge started on `cp`; stop it, then close `cp`."""

    async def main() -> None:
        bridge = Bridge(cp, backoff=FAST)
        await bridge.start()
        try:
            await scenario(bridge)
        finally:
            await bridge.stop()

    try:
        asyncio.run(main())
    finally:
        cp.close()


def test_an_assignment_is_published_retained_with_revision_sequence_and_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, mosquitto: Mosquitto
) -> None:
    cp = open_fleet(_settings(backend, request, tmp_path, mosquitto.url), "v1", "v2")

    async def scenario(bridge: Bridge) -> None:
        async with Watcher(mosquitto.url, notify_topic("+")) as early:
            assignment = await assign(cp, "v1", "v2")
            await early.wait(lambda: early.notifies("v1") and early.notifies("v2"), "notifies")
        for vehicle_id in ("v1", "v2"):
            (notify,) = early.notifies(vehicle_id)
            assert notify.vehicle_id == vehicle_id
            assert notify.revision == assignment.revision
            assert notify.sequence == assignment.sequences[vehicle_id] == 1
            assert notify.url == expected_url(vehicle_id)
        # A vehicle that connects later still gets it: the notify is retained.
        async with Watcher(mosquitto.url, notify_topic("v1")) as late:
            await late.wait(lambda: late.notifies("v1"), "the retained notify")
        assert late.messages[0].retain
        assert late.notifies("v1") == early.notifies("v1")
        await until(lambda: acked_through_head(bridge, cp), "the position to reach the head")

    with_bridge(cp, scenario)


def test_a_first_start_publishes_only_the_latest_assignment_per_vehicle(
    tmp_path: Path,
    request: pytest.FixtureRequest,
    mosquitto: Mosquitto,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fleet = [f"v{i}" for i in range(1, 41)]  # one batch publishes them all at once
    cp = open_fleet(_settings("sqlite", request, tmp_path, mosquitto.url), *fleet)

    async def main() -> None:
        await assign(cp, *fleet)
        for _ in range(2):
            await assign(cp, "v1")
        async with Watcher(mosquitto.url, notify_topic("+")) as watcher:
            bridge = Bridge(cp, backoff=FAST)
            await bridge.start()
            try:
                await watcher.wait(lambda: all(watcher.notifies(v) for v in fleet), "notifies")
                await until(lambda: acked_through_head(bridge, cp), "the position")
            finally:
                await bridge.stop()
        # From position 0, one batch: coalesced to the newest per vehicle.
        assert [n.sequence for n in watcher.notifies("v1")] == [3]
        assert all([n.sequence for n in watcher.notifies(v)] == [1] for v in fleet[1:])
        assert len(watcher.messages) == len(fleet)
        warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert not [r for r in warned if r.name in ("mqtt", "muto.mqtt")]  # e.g. "pending calls"

    try:
        asyncio.run(main())
    finally:
        cp.close()


def test_notifies_missed_in_a_broker_outage_are_published_after_reconnect(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # A persistent broker keeps the watcher's session across the restart, so anything
    # the bridge publishes, even before the watcher is back, reaches the watcher.
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(
        tmp_path / "broker",
        f"allow_anonymous true\npersistence true\npersistence_location {tmp_path}/broker/\n",
    )
    broker.start()
    cp = open_fleet(_settings(backend, request, tmp_path, broker.url), "v1", "v2")
    session = {"identifier": "watcher", "clean_session": False}

    async def main() -> None:
        bridge = Bridge(cp, backoff=FAST)
        await bridge.start()
        try:
            async with Watcher(broker.url, notify_topic("+"), **session) as watcher:
                await assign(cp, "v1")
                await watcher.wait(lambda: watcher.notifies("v1"), "the first notify")
                await until(lambda: acked_through_head(bridge, cp), "the first position")
            before = bridge.outbox.position()

            broker.stop()
            await until(lambda: not bridge.connected, "the bridge to see the outage")
            await assign(cp, "v1")
            await assign(cp, "v1")
            await assign(cp, "v2")
            assert bridge.outbox.position() == before  # nothing acknowledged, nothing stored

            broker.start()
            async with Watcher(broker.url, notify_topic("+"), **session) as watcher:
                await watcher.wait(
                    lambda: (
                        {n.sequence for n in watcher.notifies("v1")} >= {3}
                        and watcher.notifies("v2")
                    ),
                    "the missed notifies",
                )
                await until(lambda: acked_through_head(bridge, cp), "the position after")
            assert 2 not in {n.sequence for n in watcher.notifies("v1")}  # coalesced
            assert [n.sequence for n in watcher.notifies("v2")] == [1]
            assert bridge.connections == 2
        finally:
            await bridge.stop()

    try:
        asyncio.run(main())
    finally:
        cp.close()
        broker.stop()


def test_a_restarted_cloud_resumes_from_its_stored_position(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, mosquitto: Mosquitto
) -> None:
    settings = _settings(backend, request, tmp_path, mosquitto.url)
    first = open_fleet(settings, "v1", "v2", "v3")
    still_open = [first]

    async def main() -> None:
        async with Watcher(mosquitto.url, notify_topic("+")) as watcher:
            bridge = Bridge(first, backoff=FAST)
            await bridge.start()
            await assign(first, "v1")
            await watcher.wait(lambda: watcher.notifies("v1"), "v1's notify")
            await assign(first, "v2")
            await bridge.stop()  # publishes what is due (v2) before it disconnects
            stored = bridge.outbox.position()
            assert stored == first.log.position()
            await watcher.wait(lambda: watcher.notifies("v2"), "v2's notify, flushed by stop")
            seen = len(watcher.messages)
            first.close()
            still_open.remove(first)

            second = ControlPlane.open(settings)
            still_open.append(second)
            bridge = Bridge(second, backoff=FAST)
            assert bridge.outbox.position() == stored
            await bridge.start()
            try:
                await assign(second, "v3")
                await watcher.wait(lambda: watcher.notifies("v3"), "v3's notify")
            finally:
                await bridge.stop()
            # Only the new assignment: nothing acknowledged before was published again.
            assert [m.topic.value for m in watcher.messages[seen:]] == [notify_topic("v3")]

    try:
        asyncio.run(main())
    finally:
        for cp in still_open:
            cp.close()


def test_a_notify_waits_until_the_views_serve_what_it_announces(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """An assignment stored but not yet projected is not announced: a vehicle fetching
    on the notify would be told "not modified" and wait for its next poll."""
    cp = open_fleet(settings_for("sqlite", tmp_path, mosquitto.url, None), "v1")

    async def scenario(bridge: Bridge) -> None:
        async with Watcher(mosquitto.url, notify_topic("+")) as watcher:
            request = desired_request("model=m3", RELEASE)
            command = assign_desired_state(request, ["v1"], cause(), cp.sign)
            assert cp.projector._thread is None  # views move only when told here
            await asyncio.to_thread(cp.writer.submit(command).result)
            assert cp.log.position() > cp.projector.position()
            passes = bridge.notifier.passes
            async with asyncio.timeout(30):  # five passes, however slow the machine
                while bridge.notifier.passes < passes + 5:
                    await asyncio.sleep(0.05)
            assert watcher.notifies("v1") == []
            assert bridge.outbox.position() < cp.log.position()
            await asyncio.to_thread(cp.projector.catch_up)
            await watcher.wait(lambda: watcher.notifies("v1"), "the notify, once served")
            served = cp.queries.desired_document("v1")
            assert served is not None
            assert watcher.notifies("v1")[0].sequence == served.sequence

    with_bridge(cp, scenario)
