"""The agent's MQTT contract against a real Mosquitto: retained presence and snapshots,
read-only refresh, notify as a hint, live heartbeat changes, reconnects, throttled
snapshot publishing."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as paho
import pytest

from muto.agent.journal.events import ReportDelivered, ReportQueued
from muto.agent.transport.mqtt import MqttLink
from muto.domain.broker import Broker
from muto.domain.desired import AgentConfig
from muto.domain.gates import DEFAULT_FLOOR
from muto.domain.messages import AgentPhase, DesiredNotify, RefreshRequest
from muto.domain.wire import encode, to_builtins
from tests.conftest import Mosquitto
from tests.support.agent_rig import VEHICLE, Rig, make_rig, release
from tests.support.mqtt_watch import Watcher
from tests.support.waits import WAIT_S, until

pytestmark = pytest.mark.mqtt
ROOT = f"muto/default/vehicles/{VEHICLE}"
A = release("1.0.0")
B = release("1.1.0")
IDS = itertools.count()
KEEPALIVE = 2  # seconds


async def listening(rig: Rig, watch: Watcher) -> None:
    """A first pass done and the link subscribed (it says online only after subscribing):
    a message published before that would reach nobody."""
    await until(lambda: rig.agent.verdict is not None, "a first pass")
    await until(
        lambda: any(p["state"] == "online" for p in watch.bodies("presence") if p), "online"
    )


def watching(broker: Mosquitto) -> Watcher:
    """Everything under the vehicle's subtree."""
    return Watcher(broker.url, f"{ROOT}/#", root=ROOT, identifier=f"watcher-{next(IDS)}")


def run(broker: Mosquitto, scenario: Callable[[Rig, Watcher], Awaitable[None]], **kw: Any) -> None:
    config = kw.pop("config", AgentConfig())

    async def main() -> None:
        rig = make_rig(broker=Broker.parse(broker.url), poll_s=3600, drift_check_s=3600, **kw)
        rig.cloud.serve(rig.signers.bundle(A, 1, config=config))
        async with watching(broker) as watcher:
            await rig.agent.start()
            try:
                await scenario(rig, watcher)
            finally:
                await rig.agent.stop()

    asyncio.run(main())


def test_presence_and_every_snapshot_are_retained_and_a_clean_stop_says_offline(
    mosquitto: Mosquitto,
) -> None:
    async def scenario(rig: Rig, watch: Watcher) -> None:
        await until(lambda: rig.agent.verdict is not None, "a first pass")
        await until(
            lambda: any(s and s["running"] for s in watch.bodies("agent/state")),
            "running in state",
        )
        async with watching(mosquitto) as late:  # a newcomer sees the retained picture
            wanted = {"presence", "agent/metadata", "agent/state", "agent/components",
                      "agent/cfg/state"}  # fmt: skip
            await until(
                lambda: wanted <= late.retained(),
                "every snapshot retained",
            )
        assert watch.bodies("presence")[0]["state"] == "online"
        metadata = watch.bodies("agent/metadata")[0]
        assert metadata["schema"] == "muto.agent-metadata.v2"
        assert metadata["safetyFloor"] == to_builtins(DEFAULT_FLOOR)  # as provisioned
        components = watch.bodies("agent/components")[-1]["components"]
        assert [c["role"] for c in components] == ["active"]
        await rig.agent.stop()
        await until(lambda: watch.bodies("presence")[-1]["state"] == "offline", "offline")

    run(mosquitto, scenario)


def test_refresh_republishes_and_answers_without_reconciling(mosquitto: Mosquitto) -> None:
    async def scenario(rig: Rig, watch: Watcher) -> None:
        await listening(rig, watch)
        fetches, applied = rig.cloud.fetches, list(rig.runtime.applied)
        request = encode(RefreshRequest(schema="muto.refresh-request.v1", request_id="req-7"))
        await watch.client.publish(f"{ROOT}/cmd/refresh", request, qos=1)
        await until(lambda: bool(watch.bodies("evt/refresh_result")), "a refresh result")
        result = watch.bodies("evt/refresh_result")[0]
        assert result["requestId"] == "req-7" and result["ok"]
        assert sorted(result["snapshotsUpdated"]) == [
            "agent/cfg/state", "agent/components", "agent/metadata", "agent/state",
        ]  # fmt: skip
        assert (rig.cloud.fetches, rig.runtime.applied) == (fetches, applied)

    run(mosquitto, scenario)


def test_a_refresh_without_its_schema_is_ignored_with_a_log_line(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """#14 item 14: every payload carries its schema version; an unversioned refresh is
    not answered (the versioned one after it is)."""

    async def scenario(rig: Rig, watch: Watcher) -> None:
        await listening(rig, watch)
        await watch.client.publish(f"{ROOT}/cmd/refresh", b'{"requestId": "bare"}', qos=1)
        request = encode(RefreshRequest(schema="muto.refresh-request.v1", request_id="versioned"))
        await watch.client.publish(f"{ROOT}/cmd/refresh", request, qos=1)
        await until(lambda: bool(watch.bodies("evt/refresh_result")), "a refresh result")
        assert [r["requestId"] for r in watch.bodies("evt/refresh_result")] == ["versioned"]

    with caplog.at_level(logging.WARNING, logger="muto.agent.mqtt"):
        run(mosquitto, scenario)
    assert "(malformed)" in caplog.text and "`schema`" in caplog.text


def test_an_oversized_refresh_is_dropped_with_its_size_and_not_echoed(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker without message_size_limit passes anything on: a megabyte refresh (the
    reviewer's was 100 MB, and came back on evt/refresh_result) is dropped undecoded and
    said with its size; the refresh after it is answered."""
    huge = msgspec.json.encode({"schema": "muto.refresh-request.v1", "requestId": "r" * 2**20})

    async def scenario(rig: Rig, watch: Watcher) -> None:
        await listening(rig, watch)
        await watch.client.publish(f"{ROOT}/cmd/refresh", huge, qos=1)
        request = encode(RefreshRequest(schema="muto.refresh-request.v1", request_id="after"))
        await watch.client.publish(f"{ROOT}/cmd/refresh", request, qos=1)
        await until(lambda: bool(watch.bodies("evt/refresh_result")), "a refresh result")
        assert [r["requestId"] for r in watch.bodies("evt/refresh_result")] == ["after"]
        link = rig.agent.mqtt
        assert link is not None and link.dropped == 1

    with caplog.at_level(logging.WARNING, logger="muto.agent.mqtt"):
        run(mosquitto, scenario)
    assert f"{ROOT}/cmd/refresh (too big): {len(huge)} bytes" in caplog.text


def test_notify_triggers_only_above_the_accepted_sequence(mosquitto: Mosquitto) -> None:
    async def scenario(rig: Rig, watch: Watcher) -> None:
        await listening(rig, watch)
        link = rig.agent.mqtt
        assert link is not None and link.accepted_sequence == 1
        reasons: list[str] = []
        rig.agent.signals.trigger = reasons.append  # type: ignore[method-assign,assignment]
        # The accepted one again (ignored), then hints above it: each triggers (the agent
        # coalesces triggers), duplicates and out-of-order ones too, as none moves the bar.
        for sequence in (1, 3, 2, 3, 4):
            notify = DesiredNotify(
                schema="muto.desired-notify.v1",
                vehicle_id=VEHICLE,
                revision="r",
                sequence=sequence,
                url="x",
            )
            await watch.client.publish(f"{ROOT}/desired/notify", encode(notify), qos=1)
        other = DesiredNotify(
            schema="muto.desired-notify.v1",
            vehicle_id="someone-else",
            revision="r",
            sequence=9,
            url="x",
        )
        await watch.client.publish(f"{ROOT}/desired/notify", encode(other), qos=1)
        wanted = ["notify:3", "notify:2", "notify:3", "notify:4"]
        await until(lambda: reasons == wanted, "four triggers")
        assert link.accepted_sequence == 1

    run(mosquitto, scenario)


def test_a_forged_high_notify_does_not_silence_the_next_genuine_one(
    mosquitto: Mosquitto,
) -> None:
    """On a broker without the shipped ACL anyone may publish a notify: a forged one with
    a high sequence triggers a harmless fetch and must not raise the bar."""

    async def scenario(rig: Rig, watch: Watcher) -> None:
        await listening(rig, watch)
        fetches = rig.cloud.fetches
        forged = DesiredNotify(
            schema="muto.desired-notify.v1",
            vehicle_id=VEHICLE,
            revision="forged",
            sequence=10**9,
            url="x",
        )
        await watch.client.publish(f"{ROOT}/desired/notify", encode(forged), qos=1)
        await until(lambda: rig.cloud.fetches > fetches, "the forged hint fetched")
        await until(lambda: rig.agent.idle, "that pass over")
        rig.cloud.serve(rig.signers.bundle(B, 2))  # a genuine assignment, polls are hours away
        genuine = DesiredNotify(
            schema="muto.desired-notify.v1", vehicle_id=VEHICLE, revision="r2", sequence=2, url="x"
        )
        await watch.client.publish(f"{ROOT}/desired/notify", encode(genuine), qos=1)
        await until(
            lambda: (desired := rig.journal.state.desired) is not None and desired.sequence == 2,
            "the genuine notify acted on",
        )
        link = rig.agent.mqtt
        assert link is not None
        await until(lambda: link.accepted_sequence == 2, "the bar moved by verified state")

    run(mosquitto, scenario)


def test_the_heartbeat_follows_the_desired_config_without_a_restart(
    mosquitto: Mosquitto,
) -> None:
    async def scenario(rig: Rig, watch: Watcher) -> None:
        await until(lambda: rig.agent.verdict is not None, "a first pass")
        assert rig.journal.state.config.heartbeat_s == 3600
        rig.cloud.serve(rig.signers.bundle(A, 2, config=AgentConfig(heartbeat_s=1)))
        await rig.agent.reconcile()
        online = len(watch.bodies("presence"))
        await until(lambda: len(watch.bodies("presence")) >= online + 2, "heartbeats")
        await until(  # a throttled snapshot: awaited, not assumed already there
            lambda: watch.bodies("agent/cfg/state")[-1]["config"]["heartbeatS"] == 1,
            "cfg/state",
        )

    run(mosquitto, scenario, config=AgentConfig(heartbeat_s=3600))


def test_keepalive_pings_hold_a_quiet_link_open(mosquitto: Mosquitto) -> None:
    """Mosquitto drops a client it has heard nothing from for 1.5 keepalives (and fires
    its Last Will): a link with nothing to say lives on its pings alone."""

    async def scenario(rig: Rig, watch: Watcher) -> None:
        link = rig.agent.mqtt
        assert link is not None
        await listening(rig, watch)
        await asyncio.sleep(4 * KEEPALIVE)  # no heartbeat, no snapshot change meanwhile
        assert link.connected and link.connections == 1
        assert [p["state"] for p in watch.bodies("presence")] == ["online"]

    run(mosquitto, scenario, config=AgentConfig(heartbeat_s=3600), mqtt_keepalive_s=KEEPALIVE)


def test_the_links_housekeeping_runs_every_quarter_keepalive(
    mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not aiomqtt's every second: 2,500 simulated links share one event loop."""
    calls: list[float] = []
    original = paho.Client.loop_misc

    def counted(client: paho.Client) -> paho.MQTTErrorCode:
        if client._client_id == f"muto-agent-{VEHICLE}".encode():  # not the watcher's
            calls.append(asyncio.get_running_loop().time())
        return original(client)

    monkeypatch.setattr(paho.Client, "loop_misc", counted)

    async def scenario(rig: Rig, watch: Watcher) -> None:
        await listening(rig, watch)
        calls.clear()
        await asyncio.sleep(4.5)
        gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
        assert gaps and min(gaps) >= 1.9  # at 8 s keepalive: every 2 s

    run(mosquitto, scenario, config=AgentConfig(heartbeat_s=3600), mqtt_keepalive_s=8)


def test_reconciling_goes_on_while_the_broker_is_down_and_the_link_comes_back(
    mosquitto: Mosquitto,
) -> None:
    async def scenario(rig: Rig) -> None:
        link = rig.agent.mqtt
        assert link is not None
        await until(lambda: link.connected, "connected")
        mosquitto.stop()
        await until(lambda: not link.connected, "disconnected")
        assert (await rig.agent.reconcile()).kind == "converged"
        mosquitto.start()
        await until(lambda: link.connections >= 2 and link.connected, "reconnected")

    async def main() -> None:
        rig = make_rig(broker=Broker.parse(mosquitto.url), poll_s=3600, drift_check_s=3600)
        rig.cloud.serve(rig.signers.bundle(A, 1))
        await rig.agent.start()
        try:
            await scenario(rig)
        finally:
            await rig.agent.stop()

    asyncio.run(main())


def test_a_report_a_crashed_broker_lost_is_published_again_on_reconnect(tmp_path: Path) -> None:
    """/tmp/review broker_crash_loss.sh in small. The cloud is away, so its persistent
    session queues the vehicle's report; the broker PUBACKs it (the journal says
    delivered) and is killed before it saves. Without the re-publish the cloud never
    hears it: its fleet view keeps the report before (`converged` on a rolled-back
    release, for good)."""
    (tmp_path / "broker").mkdir()
    config = (
        "allow_anonymous true\npersistence true\n"
        f"persistence_location {tmp_path}/broker/\nautosave_interval 3600\n"
    )
    if os.geteuid() == 0:  # as secured_broker.py: `mosquitto` could not write its database here
        config += "user root\n"
    broker = Mosquitto(tmp_path / "broker", config)
    broker.start()
    cloud = {"identifier": "cloud", "clean_session": False}
    topic = f"{ROOT}/reports/reconcile"

    async def main() -> None:
        async with Watcher(broker.url, topic, **cloud):
            pass  # the cloud subscribed, then went away: its session queues for it
        broker.stop()  # a clean stop saves that session
        broker.start()
        rig = make_rig(
            broker=Broker.parse(broker.url), poll_s=3600, drift_check_s=3600, reports_via="mqtt"
        )
        rig.cloud.serve(rig.signers.bundle(A, 1))
        await rig.agent.start()
        try:
            link = rig.agent.mqtt
            assert link is not None
            await until(
                lambda: (
                    rig.agent.verdict is not None
                    and not any(p.kind == "reconcile" for p in rig.journal.state.outbox.values())
                ),
                "the report acknowledged by the broker",
            )
            events = [r.event for r in rig.journal.records()]
            queued = [e for e in events if isinstance(e, ReportQueued) and e.kind == "reconcile"]
            report = queued[-1]
            delivered = [e for e in events if isinstance(e, ReportDelivered)]
            assert ("mqtt", report.report_id) in {(e.via, e.report_id) for e in delivered}
            broker.stop(kill=True)  # before its next save: the queued report is gone
            broker.start()
            await until(lambda: link.connections >= 2 and link.connected, "reconnected")
            async with Watcher(broker.url, topic, **cloud) as back:
                await back.wait(lambda: back.on(topic), "the lost report")
                got = [bytes(m.payload) for m in back.on(topic)]  # type: ignore[arg-type]
                assert got == [bytes(report.body)]  # the same report, byte for byte
        finally:
            await rig.agent.stop()
            broker.stop()

    asyncio.run(main())


def test_reports_can_travel_over_mqtt(mosquitto: Mosquitto) -> None:
    async def scenario(rig: Rig, watch: Watcher) -> None:
        await until(lambda: bool(watch.bodies("reports/reconcile")), "a report")
        report = watch.bodies("reports/reconcile")[0]
        assert (report["status"], report["vehicleId"]) == ("converged", VEHICLE)
        await until(lambda: not rig.journal.state.outbox, "acknowledged")
        assert rig.cloud.reports == []  # not over HTTP

    run(mosquitto, scenario, reports_via="mqtt")


@asynccontextmanager
async def settled_link(
    broker: Mosquitto, interval_s: float
) -> AsyncIterator[tuple[Rig, Watcher, MqttLink]]:
    """An agent that converged before its MQTT link started (no reconcile loop of its
    own), the link up and its connect publish seen: from here every snapshot publish is
    caused by the test."""
    rig = make_rig(broker=Broker.parse(broker.url), snapshot_interval_s=interval_s)
    rig.cloud.serve(rig.signers.bundle(A, 1))
    await rig.agent.start(loop=False)
    assert (await rig.agent.reconcile()).kind == "converged"
    link = rig.agent.mqtt
    assert link is not None
    async with watching(broker) as watch:
        session = asyncio.create_task(link.run())
        try:
            await until(lambda: len(watch.bodies("agent/state")) == 1, "the connect publish")
            yield rig, watch, link
        finally:
            await link.stop()
            await asyncio.wait_for(session, WAIT_S)
            await rig.agent.stop()


def test_a_burst_of_changes_is_folded_and_the_final_state_is_published(
    mosquitto: Mosquitto,
) -> None:
    """Throttle, not debounce: the first change goes out, the rest of the burst is folded
    into one trailing publish of the latest state, which is what stays retained."""
    bursts = 20

    async def main() -> None:
        async with settled_link(mosquitto, interval_s=2.0) as (rig, watch, _):
            for sequence in range(2, 2 + bursts):  # each pass: fetching ... idle, new sequence
                rig.cloud.serve(rig.signers.bundle(A, sequence))
                assert (await rig.agent.reconcile()).kind == "converged"
                await asyncio.sleep(0.01)  # spread the burst: an unthrottled link publishes each
            final = 1 + bursts
            await until(
                lambda: watch.bodies("agent/state")[-1]["sequence"] == final,
                "the final state",
            )
            published = watch.bodies("agent/state")[1:]  # after the connect publish
            assert 1 <= len(published) <= 2, [s["phase"] for s in published]
            assert published[-1]["phase"] == "idle"
            async with watching(mosquitto) as late:  # the retained value is the final one
                await until(lambda: bool(late.bodies("agent/state")), "the retained state")
                assert late.bodies("agent/state") == [published[-1]]

    asyncio.run(main())


def test_an_isolated_change_and_a_refresh_are_published_at_once(mosquitto: Mosquitto) -> None:
    """With an hour-long interval, a change after the connect publish is seen within the
    wait (the leading edge does not wait for the interval), and so is a change held by
    the throttle once cmd/refresh asks."""

    async def main() -> None:
        async with settled_link(mosquitto, interval_s=3600.0) as (rig, watch, _):
            rig.agent.signals.set_phase(AgentPhase.FETCHING)
            await until(
                lambda: watch.bodies("agent/state")[-1]["phase"] == "fetching", "the change"
            )
            rig.agent.signals.set_phase(AgentPhase.IDLE)  # within the interval: held
            request = encode(RefreshRequest(schema="muto.refresh-request.v1", request_id="req-8"))
            await watch.client.publish(f"{ROOT}/cmd/refresh", request, qos=1)
            await until(lambda: bool(watch.bodies("evt/refresh_result")), "a refresh result")
            assert watch.bodies("agent/state")[-1]["phase"] == "idle"  # published before the result

    asyncio.run(main())


def ended_by_peer(conn: socket.socket) -> bool:
    """Whether the other end closed `conn` (what it sent before is read and dropped)."""
    try:
        while data := conn.recv(4096):
            del data
    except BlockingIOError:
        return False
    return True


def test_each_attempt_on_a_broker_that_never_answers_closes_its_socket() -> None:
    """A broker that accepts but never sends CONNACK (one starting up, or overloaded):
    each attempt times out and the link tries again, and every attempt's socket is
    closed before the next (aiomqtt alone leaves it open until paho's keepalive check,
    or the garbage collector, closes it)."""

    async def main() -> None:
        silent = socket.create_server(("127.0.0.1", 0))
        silent.setblocking(False)
        accepted: list[socket.socket] = []

        async def accept() -> None:
            while True:
                conn, _ = await asyncio.get_running_loop().sock_accept(silent)
                accepted.append(conn)

        acceptor = asyncio.create_task(accept())
        broker = Broker.parse(f"mqtt://127.0.0.1:{silent.getsockname()[1]}")
        rig = make_rig(broker=broker, poll_s=3600, drift_check_s=3600, mqtt_timeout_s=0.2)
        rig.cloud.serve(rig.signers.bundle(A, 1))
        await rig.agent.start()
        try:
            await until(lambda: len(accepted) >= 3, "three attempts")
            # Closed before the next attempt began, not later by paho's keepalive check
            # or the garbage collector (a ResourceWarning then).
            assert all(ended_by_peer(c) for c in accepted[:-1])
        finally:
            await rig.agent.stop()
            acceptor.cancel()
            for conn in [*accepted, silent]:
                conn.close()

    asyncio.run(main())
