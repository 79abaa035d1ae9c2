"""A database that refuses writes for a while (a primary demoted in a failover, a full
disk) while the bridge keeps its lease: what vehicles sent over MQTT is not lost. A
report the broker handed over is stored once writes come back, or left unacknowledged
for the next session when the bridge stops first; a message the cloud refuses for what
it says is still acknowledged, dropped and logged (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import sqlalchemy.exc
from eventsourcing.persistence import OperationalError

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.errors import Conflict
from muto.cloud.mqtt.bridge import Bridge
from muto.cloud.mqtt.listener import FAULT_TRIES
from muto.domain.gates import DEFAULT_FLOOR
from muto.domain.messages import AgentMetadata, Leaf, vehicle_topic
from tests.conftest import Mosquitto
from tests.support.mqtt_watch import FAST, TENANT, events, open_fleet, payload, settings_for
from tests.support.spine import reconcile_report
from tests.support.waits import until

pytestmark = pytest.mark.mqtt
RECONCILE = Leaf.REPORTS_RECONCILE
OLD_ATTEMPTS = 3  # the listener once tried three times, then acknowledged and dropped


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def plane(request: pytest.FixtureRequest, tmp_path: Path, mosquitto: Mosquitto) -> ControlPlane:
    pg = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    cp = open_fleet(settings_for(request.param, tmp_path, mosquitto.url, pg), "v1", "v2")
    request.addfinalizer(cp.close)
    return cp


class ReadOnly:
    """The store refusing writes, as a read-only database does, until `writable()`:
    every append to the event log and every snapshot write fails; reads, and the
    sessions holding the leases, still answer."""

    def __init__(self, plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> None:
        self.refusing = True
        self.refused = 0  # writes refused so far
        recorder, snapshots = plane.log.recorder, plane.snapshots
        monkeypatch.setattr(recorder, "insert_events", self._guard(recorder.insert_events))
        monkeypatch.setattr(snapshots, "record_many", self._guard(snapshots.record_many))

    def _guard(self, write: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if self.refusing:
                self.refused += 1
                cause = "cannot execute INSERT in a read-only transaction"
                if write.__name__ == "insert_events":
                    raise OperationalError(cause)
                raise sqlalchemy.exc.OperationalError("INSERT", None, Exception(cause))
            return write(*args, **kwargs)

        return guarded

    def writable(self) -> None:
        self.refusing = False


def topic(vehicle_id: str, leaf: Leaf) -> str:
    return vehicle_topic(TENANT, vehicle_id, leaf)


def report_ids(cp: ControlPlane) -> list[tuple[str, str]]:
    return [(e.vehicle_id, e.report.report_id) for e in events(cp, "ReconcileReported")]


def metadata(vehicle_id: str) -> AgentMetadata:
    return AgentMetadata(
        schema="muto.agent-metadata.v2",
        vehicle_id=vehicle_id,
        agent_version="1.2.3",
        os="ubuntu-22.04",
        runtime="process",
        safety_floor=DEFAULT_FLOOR,
    )


def vehicle_client(cp: ControlPlane) -> aiomqtt.Client:
    host, port = (cp.settings.mqtt_url or "").removeprefix("mqtt://").rsplit(":", 1)
    return aiomqtt.Client(host, int(port), identifier="vehicle")


async def started(cp: ControlPlane) -> Bridge:
    bridge = Bridge(cp, backoff=FAST)
    bridge.listener.retry = FAST  # try again quickly: the test waits on tries, not time
    await bridge.start()
    await until(lambda: bridge.connected, "the bridge to subscribe")
    return bridge


def test_a_report_the_store_refuses_for_a_while_is_stored_once_it_can(
    plane: ControlPlane, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: tried three times over 3 s, then acknowledged and dropped without a line;
    the agent, holding the PUBACK, never sent it again."""
    caplog.set_level(logging.INFO, logger="muto.mqtt")
    store = ReadOnly(plane, monkeypatch)

    async def main() -> None:
        bridge = await started(plane)
        try:
            async with vehicle_client(plane) as vehicle:
                await vehicle.publish(topic("v1", RECONCILE), b"{not json", qos=1)
                report = payload(reconcile_report("v1", "r1"))
                await vehicle.publish(topic("v1", RECONCILE), report, qos=1)
                await vehicle.publish(
                    topic("v2", Leaf.AGENT_METADATA), payload(metadata("v2")), qos=1
                )
                await until(lambda: store.refused > 2 * OLD_ATTEMPTS, "the store to refuse r1")
                assert report_ids(plane) == []
                store.writable()
                await until(lambda: bridge.listener.stored == 2, "r1 and v2's metadata")
        finally:
            await bridge.stop()
        assert report_ids(plane) == [("v1", "r1")]
        assert (bridge.listener.dropped, set(plane.snapshots.reported(["v1", "v2"]))) == (1, {"v2"})

        # Everything settled was acknowledged: a new session gets nothing again, only news.
        again = await started(plane)
        try:
            async with vehicle_client(plane) as vehicle:
                report = payload(reconcile_report("v1", "r2"))
                await vehicle.publish(topic("v1", RECONCILE), report, qos=1)
                await until(lambda: again.listener.stored, "r2")
        finally:
            await again.stop()
        assert (again.listener.stored, again.listener.dropped) == (1, 0)

    asyncio.run(main())
    said = [r.getMessage() for r in caplog.records]
    dropped = [line for line in said if "dropped" in line]
    assert len(dropped) == 1 and "malformed JSON" in dropped[0], dropped
    assert any("storing reports/reconcile on" in line and "read-only" in line for line in said)
    assert any(line.startswith("stored reports/reconcile on") for line in said), said


def test_a_bridge_stopping_while_the_store_refuses_leaves_the_report_to_the_broker(
    plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM during the outage: the stop is not held by the message in hand, which
    stays unacknowledged; the broker delivers it to the next session, which stores it."""
    store = ReadOnly(plane, monkeypatch)

    async def main() -> None:
        bridge = await started(plane)
        try:
            async with vehicle_client(plane) as vehicle:
                report = payload(reconcile_report("v1", "in-hand"))
                await vehicle.publish(topic("v1", RECONCILE), report, qos=1)
                await until(lambda: store.refused, "the store to refuse the report")
        finally:
            await bridge.stop()
        assert (report_ids(plane), bridge.listener.dropped) == ([], 0)

        store.writable()
        again = await started(plane)
        try:
            await until(lambda: report_ids(plane), "the report, delivered again")
        finally:
            await again.stop()
        assert report_ids(plane) == [("v1", "in-hand")]

    asyncio.run(main())


def test_a_report_that_loses_every_write_race_is_tried_again_not_dropped(
    plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Conflict (other writers won each of the writer's tries) is the store's state,
    not the message's: it was acknowledged and dropped like a malformed report."""
    listener = Bridge(plane, backoff=FAST).listener
    listener.retry = FAST
    ingest, lost = plane.ingest.reconcile, [2]

    async def contended(*args: Any, **kwargs: Any) -> Any:
        if lost[0]:
            lost[0] -= 1
            raise Conflict("gave up after 5 concurrent-write conflicts")
        return await ingest(*args, **kwargs)

    monkeypatch.setattr(plane.ingest, "reconcile", contended)
    report = payload(reconcile_report("v1", "r-contended"))
    asyncio.run(listener.handle(topic("v1", RECONCILE), report, retained=False))
    assert (listener.dropped, listener.failures) == (0, 2)
    assert report_ids(plane) == [("v1", "r-contended")]


def test_a_fault_of_the_clouds_own_drops_the_message_after_a_few_tries_loudly(
    plane: ControlPlane, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither the database's state nor the message's (a bug): tried FAULT_TRIES times,
    then dropped with an error line, so that one message never holds back the reports of
    every vehicle behind it; the next message is stored."""
    listener = Bridge(plane, backoff=FAST).listener
    listener.retry = FAST
    ingest = plane.ingest.reconcile

    async def buggy(report: Any, actor: str) -> Any:
        if report.report_id == "r-poison":
            raise KeyError("a bug")
        return await ingest(report, actor)

    monkeypatch.setattr(plane.ingest, "reconcile", buggy)
    with caplog.at_level(logging.ERROR, logger="muto.mqtt"):
        for report_id in ("r-poison", "r-next"):
            report = payload(reconcile_report("v1", report_id))
            asyncio.run(listener.handle(topic("v1", RECONCILE), report, retained=False))
    assert (listener.failures, listener.dropped) == (FAULT_TRIES, 1)
    assert report_ids(plane) == [("v1", "r-next")]
    assert any("dropping reports/reconcile" in r.getMessage() for r in caplog.records)


def test_an_outage_waited_out_spends_none_of_the_fault_tries(
    plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The code review's case: four tries refused by the database, then one odd error as
    it comes back: stored on the next try, not dropped as a fifth fault."""
    listener = Bridge(plane, backoff=FAST).listener
    listener.retry = FAST
    ingest = plane.ingest.reconcile
    failures: list[Exception] = [
        *(OperationalError("database is locked") for _ in range(FAULT_TRIES - 1)),
        KeyError("once, as it comes back"),
    ]

    async def recovering(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop(0)
        return await ingest(*args, **kwargs)

    monkeypatch.setattr(plane.ingest, "reconcile", recovering)
    report = payload(reconcile_report("v1", "r-after-outage"))
    asyncio.run(listener.handle(topic("v1", RECONCILE), report, retained=False))
    assert (listener.dropped, listener.failures) == (0, FAULT_TRIES)
    assert report_ids(plane) == [("v1", "r-after-outage")]
