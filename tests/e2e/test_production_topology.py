"""The production topology run as a whole (issue 15): one PostgreSQL database, Mosquitto
with a password file and the per-vehicle ACL (deploy/mosquitto), haproxy in front of
two API processes, two worker processes, and a fleet of real agents (simulated
runtime) reaching the cloud over MQTT and over HTTP through the load balancer.

A rollout runs to completion while one API process and the active worker are killed
with kill -9. Passes when: the rollout completes, every report an agent saw
acknowledged is stored exactly once, each vehicle's notifies arrive in sequence order,
the standby took over every duty, and no request answered 5xx except while a process
was being killed (those are counted and reported).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from muto.agent.journal.events import ReportDelivered, ReportQueued
from muto.domain.messages import DesiredNotify, Leaf, vehicle_topic
from muto.domain.wire import decode
from muto.sim.demo import release
from muto.sim.fleet import SimFleet, SimVehicle
from muto.sim.operator import OperatorClient
from muto.sim.profile import SimProfile, vehicle_ids
from muto.sim.services import Haproxy, Logged
from muto.trust import KeySet, Signer, TrustConfig
from muto.trust.keys import write_key_pair
from tests.faults.runs import runs
from tests.support.api_server import ApiServer
from tests.support.releases import signed
from tests.support.secured_broker import secured_broker
from tests.support.topology import load_balancer
from tests.support.waits import until

pytestmark = [pytest.mark.postgres, pytest.mark.mqtt]
TAKEOVER_S = 5.0
KILL_WINDOW_S = 5.0  # after a kill -9, 5xx answers are counted as caused by it
DUTY_NAMES = {"controller", "listener", "notifier", "projector"}


@dataclass
class Topology:
    apis: list[ApiServer]
    workers: list[ApiServer]
    lb: Haproxy
    operator: OperatorClient
    fleets: list[SimFleet]
    notifies: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    kills: list[tuple[float, str]] = field(default_factory=list)

    @property
    def vehicles(self) -> dict[str, SimVehicle]:
        return {k: v for fleet in self.fleets for k, v in fleet.vehicles.items()}


def keys(tmp: Path, data: Path) -> tuple[Signer, TrustConfig]:
    """The release key, and the control-plane signing key every process of the
    deployment shares (as a Kubernetes Secret would give it)."""
    releases = Signer.generate()
    control_plane = Signer.generate()
    write_key_pair(releases, tmp / "release.key", tmp / "release.pub")
    (data / "keys").mkdir(parents=True)
    write_key_pair(
        control_plane, data / "keys" / "control-plane.key", data / "keys" / "control-plane.pub"
    )
    trust = TrustConfig(
        release_keys=KeySet(keys=[releases.public_pem]),
        control_plane_keys=KeySet(keys=[control_plane.public_pem]),
    )
    return releases, trust


async def observe_notifies(broker_port: int, password: str, seen: dict[str, list[int]]) -> None:
    """Every desired/notify the broker delivers, per vehicle in arrival order (as the
    cloud's MQTT user, which may read the whole tree)."""
    async with aiomqtt.Client(
        "127.0.0.1", broker_port, username="muto-cloud", password=password, identifier="observer"
    ) as mqtt:
        await mqtt.subscribe(vehicle_topic("default", "+", Leaf.DESIRED_NOTIFY), qos=1)
        async for message in mqtt.messages:
            notify = decode(bytes(message.payload), DesiredNotify)  # type: ignore[arg-type]
            seen[notify.vehicle_id].append(notify.sequence)


def duties(worker: ApiServer) -> set[str]:
    import httpx

    held = httpx.get(f"{worker.url}/readyz", timeout=5).json()["data"]["duties"]
    return {name for name, mine in held.items() if mine}


@pytest.mark.parametrize("count", runs(24, 60))
def test_a_rollout_through_the_production_topology_survives_kill9s(
    count: int, tmp_path: Path, postgres_url: str
) -> None:
    data = tmp_path / "cloud"
    signer, trust = keys(tmp_path, data)
    fleet_ids = vehicle_ids(SimProfile(), count)
    passwords = {v: secrets.token_urlsafe(12) for v, _, _ in fleet_ids}
    cloud_password = secrets.token_urlsafe(12)
    broker = secured_broker(tmp_path / "broker", {"muto-cloud": cloud_password, **passwords})
    broker.start()
    cloud_mqtt = f"mqtt://muto-cloud:{cloud_password}@127.0.0.1:{broker.port}"
    apis = [ApiServer(data, postgres_url, role="api", name=f"api-{n}") for n in (1, 2)]
    lb = load_balancer(tmp_path, apis)
    workers = [
        ApiServer(
            data,
            postgres_url,
            role="worker",
            name=f"worker-{n}",
            mqtt_url=cloud_mqtt,
            public_url=lb.url,
        )
        for n in (1, 2)
    ]
    operator_token = apis[0].cli("token", "create", "--operator").stdout.splitlines()[0].strip()
    started: list[ApiServer] = []
    try:
        for process in [*apis, *workers]:
            process.start()
            started.append(process)
        lb.start()
        asyncio.run(
            scenario(
                Topology(apis, workers, lb, OperatorClient(lb.url, operator_token), []),
                signer,
                trust,
                fleet_ids,
                passwords,
                broker.port,
                cloud_password,
            )
        )
    finally:
        lb.stop()
        for process in started:
            was_running = process.running
            code = process.stop()
            if was_running:
                assert code == 0, process.tail()
                assert process.tracebacks() == [], process.name
        broker.stop()


async def scenario(
    t: Topology,
    signer: Signer,
    trust: TrustConfig,
    fleet_ids: list[tuple[str, str, str]],
    passwords: dict[str, str],
    broker_port: int,
    cloud_password: str,
) -> None:
    observer = asyncio.create_task(observe_notifies(broker_port, cloud_password, t.notifies))
    try:
        await t.operator.register_release(signed(release("1.0.0"), signer).envelope)
        half = len(fleet_ids) // 2
        for via, ids in (("mqtt", fleet_ids[:half]), ("http", fleet_ids[half:])):
            fleet = SimFleet(
                t.lb.url,
                trust,
                SimProfile(poll_s=2.0, reports_via=via),
                operator_token=t.operator.http.headers["authorization"].split()[1],
            )
            await fleet.provision(SimVehicle(v, r, m) for v, r, m in ids)
            for v in fleet.vehicles.values():
                v.mqtt_url = (
                    f"mqtt://{v.vehicle_id}:{passwords[v.vehicle_id]}@127.0.0.1:{broker_port}"
                )
            t.fleets.append(fleet)
        for fleet in t.fleets:
            await fleet.start()
            assert await fleet.connected(timeout_s=120) == len(fleet.vehicles)
        await t.operator.start_rollout(
            {
                "selector": "fleet=demo",
                "stack": "autonomy-core",
                "version": "1.0.0",
                "rolloutId": "r1",
                "thresholds": {"bakeSec": 1},  # watched 1 s after the wave gate
            }
        )

        async def canaries_reporting() -> bool:
            found = await t.operator.rollout("r1")
            return bool(found["phases"]["canary"]["converged"])

        await until(canaries_reporting, "the first canary to converge", 120)
        await kill9(t)
        await until(lambda: completed(t), "the rollout to complete", 300)
        await until(lambda: outboxes_empty(t), "every agent's reports delivered", 120)
        await asyncio.sleep(1.0)  # the last notifies reach the observer
    finally:
        for fleet in t.fleets:
            await fleet.stop()
        observer.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await observer
        await t.operator.aclose()
    await check(t)


async def kill9(t: Topology) -> None:
    """kill -9 one API process, then the worker holding the controller lease; the
    standby must hold every duty within TAKEOVER_S."""
    victim = t.apis[0]
    t.kills.append((time.time(), victim.name))
    assert victim.stop(signal.SIGKILL) == -9
    active = next(w for w in t.workers if "controller" in duties(w))
    standby = next(w for w in t.workers if w is not active)
    t.kills.append((time.time(), active.name))
    assert active.stop(signal.SIGKILL) == -9
    killed = time.monotonic()
    while (held := await asyncio.to_thread(duties, standby)) != DUTY_NAMES:
        assert time.monotonic() - killed < TAKEOVER_S, f"{standby.name} holds only {held}"
        await asyncio.sleep(0.05)
    print(f"\n{standby.name} took every duty over {time.monotonic() - killed:.2f} s after the kill")


async def completed(t: Topology) -> bool:
    return bool((await t.operator.rollout("r1"))["state"] == "completed")


async def outboxes_empty(t: Topology) -> bool:
    return all(
        v.agent is not None and not v.agent.parts.journal.state.outbox for v in t.vehicles.values()
    )


async def check(t: Topology) -> None:
    operator = OperatorClient(t.lb.url, t.operator.http.headers["authorization"].split()[1])
    try:
        rollout = await operator.rollout("r1")
        assert rollout["state"] == "completed", rollout
        running = {
            v["vehicleId"]: v["runningRelease"] for v in await operator.vehicles("fleet=demo")
        }
        assert set(running) == set(t.vehicles)
        assert set(running.values()) == {"autonomy-core@1.0.0"}
        for vehicle_id, vehicle in t.vehicles.items():
            assert vehicle.agent is not None
            stored = Counter(
                e["data"]["report"]["reportId"]
                for e in await operator.audit(vehicle_id)
                if e["eventType"] == "Vehicle.ReconcileReported"
            )
            assert [r for r, n in stored.items() if n > 1] == [], vehicle_id
            queued, delivered = set(), set()
            for record in vehicle.agent.parts.journal.records():
                if isinstance(record.event, ReportQueued) and record.event.kind == "reconcile":
                    queued.add(record.event.report_id)
                elif isinstance(record.event, ReportDelivered):
                    delivered.add(record.event.report_id)
            acknowledged = queued & delivered
            assert acknowledged, vehicle_id
            assert acknowledged <= set(stored), f"{vehicle_id}: acknowledged, not stored"
            assert set(stored) <= queued, f"{vehicle_id}: stored, never sent"
            seen = t.notifies[vehicle_id]
            assert seen, f"{vehicle_id}: no notify"
            assert seen == sorted(seen), f"{vehicle_id}: notifies out of order: {seen}"
    finally:
        await operator.aclose()
    answered = t.lb.requests()
    errors = [r for r in answered if r.status >= 500]
    during = [r for r in errors if any(0 <= r.at - at <= KILL_WINDOW_S for at, _ in t.kills)]
    print(
        f"{len(answered)} requests through haproxy; {len(errors)} answered 5xx, "
        f"{len(during)} of them within {KILL_WINDOW_S} s of a kill -9: "
        f"{Counter((r.status, r.path) for r in errors)}"
    )
    assert [r for r in errors if r not in during] == [], _say(errors)


def _say(errors: list[Logged]) -> str:
    return "; ".join(f"{r.at:.3f} {r.status} {r.method} {r.path} via {r.server}" for r in errors)
