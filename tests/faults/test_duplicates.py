"""Scenario 6: duplicate, reordered and stale notifies and reports, through the real cloud
process and a real Mosquitto.

Notifies: while the cloud assigns one new revision after another, the agent's notify
topic is also flooded with copies of every notify, in shuffled order, and with stale
ones. The agent applies each revision at most once, in increasing order, never going
back, and ends on the highest; stale notifies cause no pass at all.
Reports: each report is sent many times at once, over HTTP and over MQTT, shuffled: the
cloud stores exactly one event per report id.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from muto.agent.agent import Agent
from muto.agent.journal.events import DesiredReceived, DesiredVerified
from muto.agent.runtime.simulated import SimulatedRuntime
from muto.domain.messages import DesiredNotify, Leaf, vehicle_topic
from muto.domain.wire import encode
from muto.trust import Signer
from tests.conftest import Mosquitto
from tests.faults.cloud import duplicates
from tests.faults.fleet import reconcile_reports
from tests.faults.runs import runs
from tests.faults.sim import sim_agents
from tests.support.api_server import reconcile_body, running, vehicle_body
from tests.support.processes import CloudProcess
from tests.support.releases import stack_release
from tests.support.waits import until

pytestmark = pytest.mark.mqtt
COPIES = 5  # of every notify and every report
WINDOW = 100  # distinct reports shuffled together


def notify(vehicle_id: str, revision: str, sequence: int) -> bytes:
    url = f"http://cloud.invalid/desired-states/latest?vehicleId={vehicle_id}"
    return encode(
        DesiredNotify(
            schema="muto.desired-notify.v1",
            vehicle_id=vehicle_id,
            revision=revision,
            sequence=sequence,
            url=url,
        )
    )


def broker_address(broker: Mosquitto) -> tuple[str, int]:
    return "127.0.0.1", broker.port


async def flood_notifies(broker: Mosquitto, agent: Agent, sent: list[tuple[str, int]]) -> int:
    """Every notify sent so far, COPIES times, shuffled, plus stale ones (sequence 0);
    returns how many messages it published."""
    topic = vehicle_topic("default", agent.settings.vehicle_id, Leaf.DESIRED_NOTIFY)
    messages = [notify(agent.settings.vehicle_id, r, s) for r, s in sent * COPIES]
    messages += [notify(agent.settings.vehicle_id, "dsr_stale", 0)] * COPIES
    random.Random(len(sent)).shuffle(messages)
    async with aiomqtt.Client(*broker_address(broker)) as client:
        for message in messages:
            await client.publish(topic, message, qos=1)
    return len(messages)


@pytest.mark.parametrize("count", runs(4, 60))
def test_notifies_duplicated_reordered_and_stale(
    count: int, tmp_path: Path, mosquitto: Mosquitto
) -> None:
    cloud = CloudProcess(tmp_path, mosquitto.url)
    cloud.start()
    signer = Signer.generate()
    (agent,) = sim_agents(cloud, signer, ["car-dup"], "dup", mqtt_url=mosquitto.url, poll_s=3600)
    releases = [stack_release("sim", f"1.0.{n}") for n in range(count)]
    for release in releases:
        cloud.publish(release, signer)

    async def scenario() -> None:
        await agent.start()
        try:
            await until(lambda: agent.mqtt and agent.mqtt.connected, "MQTT")
            sent: list[tuple[str, int]] = []
            for n, release in enumerate(releases, start=1):
                assigned = await asyncio.to_thread(cloud.desire, "vehicle=car-dup", release)
                sent.append((assigned["desiredStateRevision"], n))
                await flood_notifies(mosquitto, agent, sent)
            last = releases[-1].key
            await until(lambda: agent.journal.state.running_key == last, "the highest")
            before, link = agent.journal.state.position, agent.mqtt
            assert link is not None
            handled = link.handled
            flooded = await flood_notifies(mosquitto, agent, sent)  # all of them stale by now
            await until(
                lambda: link.handled >= handled + flooded and agent.idle,
                "the agent took every copy and has no pass to run",
            )
            fetched = [r for r in agent.journal.records(before)
                       if isinstance(r.event, DesiredReceived)]  # fmt: skip
            assert fetched == []
        finally:
            await agent.stop()

    try:
        asyncio.run(scenario())
    finally:
        cloud.stop()
    runtime = agent.parts.runtime
    assert isinstance(runtime, SimulatedRuntime)
    order = [r.key for r in releases]
    applied = [order.index(key) for key in runtime.applied]
    assert applied == sorted(set(applied)) and applied[-1] == count - 1  # once, never back
    verified = [r.event.sequence for r in agent.journal.records()
                if isinstance(r.event, DesiredVerified)]  # fmt: skip
    assert verified == sorted(set(verified))
    print(f"\nscenario 6 notifies: {count} revisions, {COPIES} copies of each notify, "
          f"stale ones; {len(applied)} releases applied, each once, in order")  # fmt: skip


def send_shuffled(cloud: CloudProcess, broker: Mosquitto, reports: list[dict[str, Any]]) -> None:
    """COPIES of each report, shuffled, half over HTTP (four posters), half over MQTT."""
    copies = [r for r in reports for _ in range(COPIES)]
    random.Random(len(reports)).shuffle(copies)
    over_http, over_mqtt = copies[: len(copies) // 2], copies[len(copies) // 2 :]

    def post_all(bodies: list[dict[str, Any]]) -> None:
        headers = {"Authorization": f"Bearer {cloud.operator}"}
        with httpx.Client(base_url=cloud.url, headers=headers, timeout=30) as http:
            for body in bodies:
                assert http.post("/reports/reconcile", json=body).status_code == 200

    async def publish_all() -> None:
        topic = vehicle_topic("default", "car-rep", Leaf.REPORTS_RECONCILE)
        async with aiomqtt.Client(*broker_address(broker)) as client:
            for body in over_mqtt:
                await client.publish(topic, json.dumps(body).encode(), qos=1)

    posters = [threading.Thread(target=post_all, args=(over_http[i::4],)) for i in range(4)]
    for poster in posters:
        poster.start()
    asyncio.run(publish_all())
    for poster in posters:
        poster.join()


@pytest.mark.parametrize("count", runs(20, 500))
def test_reports_duplicated_and_reordered(count: int, tmp_path: Path, mosquitto: Mosquitto) -> None:
    """In batches of WINDOW distinct reports: the cloud recognizes a report id among the
    vehicle's last 256 (docs/event-store.md); a copy later than that would be stored
    again. Real redelivery stays far inside it: a courier resends only its oldest
    unacknowledged report, the broker only its in-flight window."""
    cloud = CloudProcess(tmp_path, mosquitto.url)
    cloud.start()
    try:
        cloud.register("car-rep", model="m3")
        reports = [reconcile_body("car-rep", f"rep-{uuid.uuid4().hex}") for _ in range(count)]
        for start in range(0, count, WINDOW):
            batch = reports[start : start + WINDOW]
            send_shuffled(cloud, mosquitto, batch)
            wanted = {r["reportId"] for r in reports[: start + WINDOW]}

            def all_stored(wanted: set[str] = wanted) -> list[str] | None:
                stored = [r["reportId"] for r in reconcile_reports(cloud, "car-rep")]
                return stored if set(stored) == wanted else None

            stored = asyncio.run(until(all_stored, "the batch stored"))
    finally:
        cloud.stop()
    assert duplicates(stored) == [] and len(stored) == count
    print(f"\nscenario 6 reports: {count} reports x {COPIES} copies over HTTP and MQTT, "
          f"shuffled in batches of {WINDOW}: {len(stored)} events, none twice")  # fmt: skip


def test_a_stale_report_does_not_move_the_vehicle_view_back(tmp_path: Path) -> None:
    newer = reconcile_body("car-stale", "rep-new", "converged", revision="dsr_2")
    older = reconcile_body("car-stale", "rep-old", "failed", revision="dsr_1")
    older["reasonCodes"] = ["APPLY_FAILED"]  # a failure says why (#14 item 13)
    newer |= {"sequence": 2, "observedAt": "2026-01-02T00:00:00Z"}
    older |= {"sequence": 1, "observedAt": "2026-01-01T00:00:00Z"}
    with running("sqlite", tmp_path, "operator") as (server, tokens):
        http = server.client(tokens["operator"][0])
        assert http.post("/vehicles", json=vehicle_body("car-stale")).status_code == 201
        for report in (newer, older):  # the older one arrives last
            assert http.post("/reports/reconcile", json=report).status_code == 200
        seen = http.get("/vehicles/car-stale").json()["data"]
        http.close()
    assert (seen["lastStatus"], seen["lastReportAt"]) == ("converged", "2026-01-02T00:00:00Z")
