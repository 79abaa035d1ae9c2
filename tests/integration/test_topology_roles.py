"""Several `muto cloud serve` processes on one PostgreSQL database, each with a role:
one worker active per duty and the standby taking over from a kill -9 (the 5 s bound
checked from what it rests on, not with a stopwatch), in-process
caches right across replicas (LISTEN/NOTIFY), and a replica that loses PostgreSQL
answering 503 `unavailable` and reporting not-ready."""

from __future__ import annotations

import asyncio
import inspect
import re
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
from sqlalchemy import create_engine, text

from muto.cloud.controller import controller_factory
from muto.cloud.mqtt.bridge import LEASE_CHECK_S, Bridge
from muto.domain.messages import DesiredNotify, Leaf, vehicle_topic
from muto.domain.wire import decode
from muto.projections.locks import DUTIES
from muto.projections.runner import ProjectionRunner
from tests.conftest import Mosquitto
from tests.support.api_server import ApiServer, health_body, vehicle_body
from tests.support.releases import release_envelope
from tests.support.topology import TcpProxy
from tests.support.waits import eventually

pytestmark = [pytest.mark.postgres]
DUTY_NAMES = sorted(d.name.lower() for d in DUTIES)
DEPLOY_DOC = Path(__file__).parents[2] / "docs" / "deploy.md"
# Far below the token cache's 60 s: b refusing within it proves the revocation reached
# b (LISTEN/NOTIFY), not that b's cached token expired. A bound on a hang, not a pace: the
# promise's 5 s is checked without a stopwatch in test_revocation_reach.py.
HEARD_S = 30.0


@contextmanager
def processes(*servers: ApiServer) -> Iterator[tuple[ApiServer, ...]]:
    """Start them all; SIGTERM the ones still running on the way out (exit 0, no
    traceback in any log)."""
    with ExitStack() as stack:
        for server in servers:
            server.start()
            stack.callback(_stopped, server)
        yield servers


def _stopped(server: ApiServer) -> None:
    was_running = server.running
    code = server.stop()
    if was_running:
        assert code == 0, server.tail()
        assert server.tracebacks() == [], server.name


def operator_token(first: ApiServer) -> str:
    return first.cli("token", "create", "--operator").stdout.splitlines()[0].strip()


def client(server: ApiServer, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def duties(server: ApiServer) -> dict[str, bool]:
    found: dict[str, bool] = httpx.get(f"{server.url}/readyz", timeout=5).json()["data"]["duties"]
    return found


def holders(workers: list[ApiServer]) -> dict[str, list[str]]:
    held = {w.name: duties(w) for w in workers if w.running}
    return {d: sorted(n for n, mine in held.items() if mine.get(d)) for d in DUTY_NAMES}


def promised_takeover_s() -> float:
    found = re.search(r"the bound it must meet is\s+(\d+) s", DEPLOY_DOC.read_text())
    assert found, "docs/deploy.md no longer states the takeover bound"
    return float(found.group(1))


def standby_waits() -> dict[str, float]:
    """The longest a standby waits, once a duty's lock is free, before it asks for it
    again: the intervals a `muto cloud serve` worker runs its duties with. The notifier
    is asked for only in the listener's broker session (after the listener's check)."""

    def default(function: Any, name: str) -> float:
        found: float = inspect.signature(function).parameters[name].default
        return found

    notifier_poll = default(Bridge.__init__, "poll_s")
    return {
        "projector": default(ProjectionRunner.start, "interval"),
        "controller": default(controller_factory, "interval"),
        "listener": LEASE_CHECK_S,
        "notifier": LEASE_CHECK_S + notifier_poll,
    }


def test_a_standby_asks_for_every_duty_well_within_the_takeover_bound() -> None:
    """The takeover promise, without a stopwatch (a loaded 2-core machine makes any
    wall-clock bound flaky): a kill -9 frees the holder's locks at once (the kernel closes
    its sockets, PostgreSQL ends the sessions: checked below on real processes), so what
    remains is the standby's own wait before it asks again. Half the bound is left for
    the round trips and the listener's broker connect."""
    waits = standby_waits()
    assert set(waits) == set(DUTY_NAMES)
    assert max(waits.values()) <= promised_takeover_s() / 2, waits


def lock_holders(postgres_url: str) -> dict[str, int]:
    """duty -> the PostgreSQL backend (pid) holding its advisory lock."""
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            found = connection.execute(
                text("SELECT objid, pid FROM pg_locks WHERE locktype = 'advisory' AND granted")
            ).all()
    finally:
        engine.dispose()
    names = {int(d): d.name.lower() for d in DUTIES}
    return {names[int(key)]: pid for key, pid in found if int(key) in names}


def backends(postgres_url: str) -> set[int]:
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            return set(connection.execute(text("SELECT pid FROM pg_stat_activity")).scalars())
    finally:
        engine.dispose()


def sessions_left(postgres_url: str, pids: set[int]) -> str:
    """What PostgreSQL says of the sessions `pids` still there: a wait that outlives its
    client shows why (a session waits on a lock, not reading its closed socket)."""
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT pid, state, wait_event_type, wait_event, left(query, 120) "
                    "FROM pg_stat_activity WHERE pid = ANY(:pids)"
                ),
                {"pids": sorted(pids)},
            ).all()
    finally:
        engine.dispose()
    return "the killed sessions ended; still there: " + "; ".join(map(str, rows))


@pytest.mark.mqtt
def test_one_worker_per_duty_and_the_standby_takes_over_a_kill9(
    tmp_path: Path, postgres_url: str, mosquitto: Mosquitto
) -> None:
    data = tmp_path / "cloud"
    workers = [
        ApiServer(data, postgres_url, role="worker", mqtt_url=mosquitto.url, name=f"worker-{n}")
        for n in (1, 2)
    ]
    operator_token(workers[0])  # as role all: makes the control-plane key they share
    with processes(*workers):
        split = eventually(
            lambda: (h := holders(workers)) and all(len(h[d]) == 1 for d in DUTY_NAMES) and h,
            "every duty held by exactly one worker",
        )
        for _ in range(10):  # and it stays so: the standby never takes a held duty
            assert all(len(found) == 1 for found in holders(workers).values())
            time.sleep(0.1)
        active = next(w for w in workers if w.name == split["listener"][0])
        standby = next(w for w in workers if w is not active)
        assert httpx.get(f"{standby.url}/readyz").status_code == 200  # a standby is ready
        mine = {d for d, held in duties(active).items() if held}
        sessions = {pid for d, pid in lock_holders(postgres_url).items() if d in mine}
        assert len(sessions) == len(mine) > 0  # one session per lease
        assert active.stop(signal.SIGKILL) == -9
        # What the bound rests on: the killed process's sessions end (its locks with them)
        # without any timeout to run out...
        eventually(
            lambda: not sessions & backends(postgres_url),
            lambda: sessions_left(postgres_url, sessions),
        )
        # ...and the standby, asking on its own intervals, takes every duty over.
        eventually(lambda: all(duties(standby).values()), "the standby holds every duty")
        assert sorted(duties(standby)) == DUTY_NAMES
        assert not sessions & set(lock_holders(postgres_url).values())
        eventually(lambda: "connected to the broker" in standby.tail(100_000), "standby's session")


def test_a_revoked_token_is_refused_by_every_replica(tmp_path: Path, postgres_url: str) -> None:
    data = tmp_path / "cloud"
    a, b = (ApiServer(data, postgres_url, role="api", name=n) for n in ("api-a", "api-b"))
    operator = operator_token(a)
    with processes(a, b), client(a, operator) as on_a:
        on_a.post("/vehicles", json=vehicle_body("v1")).raise_for_status()
        issued = on_a.post("/tokens", json={"role": "vehicle", "vehicleId": "v1"}).json()["data"]
        with client(b, issued["token"]) as vehicle_on_b:
            assert vehicle_on_b.get("/vehicles/v1").status_code == 200  # now cached on b
            assert on_a.post(f"/tokens/{issued['tokenId']}/revoke").status_code == 200
            eventually(
                lambda: vehicle_on_b.get("/vehicles/v1").status_code == 401,
                "b to refuse the revoked token",
                HEARD_S,
                interval=0.02,
            )
            assert vehicle_on_b.get("/vehicles/v1").json()["error"]["code"] == "unauthorized"


@pytest.mark.mqtt
def test_a_notified_vehicle_gets_the_new_revision_from_any_replica(
    tmp_path: Path, postgres_url: str, mosquitto: Mosquitto
) -> None:
    data = tmp_path / "cloud"
    a, b = (ApiServer(data, postgres_url, role="api", name=n) for n in ("api-a", "api-b"))
    worker = ApiServer(data, postgres_url, role="worker", mqtt_url=mosquitto.url, name="worker")
    operator = operator_token(a)
    with processes(a, b, worker), client(a, operator) as on_a, client(b, operator) as on_b:
        on_a.post("/vehicles", json=vehicle_body("v1")).raise_for_status()
        for version in ("1.0.0", "1.1.0"):
            on_a.post("/releases", json=release_envelope("core", version)).raise_for_status()

        def assign(version: str) -> None:
            body = {"target": {"type": "vehicle", "selector": "v1"},
                    "stack": {"name": "core", "version": version}}  # fmt: skip
            on_a.post("/desired-states", json=body).raise_for_status()

        assign("1.0.0")
        old = on_b.get("/desired-states/latest", params={"vehicleId": "v1"}).headers["etag"]
        poll = on_b.get(
            "/desired-states/latest", params={"vehicleId": "v1"}, headers={"If-None-Match": old}
        )
        assert poll.status_code == 304  # b remembers the vehicle's ETag now
        notified = asyncio.run(until_notified(mosquitto, "v1", 2, then=lambda: assign("1.1.0")))
        fetched = on_b.get(
            "/desired-states/latest", params={"vehicleId": "v1"}, headers={"If-None-Match": old}
        )
        assert fetched.status_code == 200, "b answered from a stale ETag memory"
        assert fetched.json()["metadata"]["sequence"] == notified.sequence


async def until_notified(
    broker: Mosquitto, vehicle_id: str, sequence: int, then: Any = None
) -> DesiredNotify:
    """The retained notify of `vehicle_id` once it reaches `sequence`; `then()` runs (in a
    thread) once subscribed."""
    async with aiomqtt.Client("127.0.0.1", broker.port) as mqtt:
        await mqtt.subscribe(vehicle_topic("default", vehicle_id, Leaf.DESIRED_NOTIFY), qos=1)
        if then is not None:
            await asyncio.to_thread(then)
        async with asyncio.timeout(60):
            async for message in mqtt.messages:
                notify = decode(bytes(message.payload), DesiredNotify)  # type: ignore[arg-type]
                if notify.sequence >= sequence:
                    return notify
    raise AssertionError("no notify")


def test_a_replica_that_cannot_reach_postgresql_answers_503_and_is_not_ready(
    tmp_path: Path, postgres_url: str
) -> None:
    prefix, _, rest = postgres_url.partition("@127.0.0.1:")
    port, _, database = rest.partition("/")
    proxy = TcpProxy(int(port))
    behind = f"{prefix}@127.0.0.1:{proxy.port}/{database}"
    data = tmp_path / "cloud"
    api = ApiServer(data, behind, role="api", name="api")
    operator = operator_token(api)
    try:
        with processes(api), client(api, operator) as http:
            http.post("/vehicles", json=vehicle_body("v1")).raise_for_status()
            assert httpx.get(f"{api.url}/readyz").status_code == 200
            proxy.cut()
            answered = http.get("/vehicles/v1")
            assert answered.status_code == 503, answered.text
            assert answered.json()["error"]["code"] == "unavailable"
            written = http.post("/vehicles", json=vehicle_body("v2"))
            assert written.status_code == 503, written.text
            ready = httpx.get(f"{api.url}/readyz", timeout=10)
            assert ready.status_code == 503
            assert ready.json()["data"]["status"] == "unavailable"
            assert ready.json()["data"]["database"] is False
            assert httpx.get(f"{api.url}/livez").status_code == 200  # alive: do not restart
            proxy.restore()
            eventually(lambda: httpx.get(f"{api.url}/readyz").status_code == 200, "ready again")
            eventually(lambda: http.get("/vehicles/v1").status_code == 200, "served again")
            assert http.post("/vehicles", json=vehicle_body("v2")).status_code == 201
    finally:
        proxy.close()


def test_writes_through_two_replicas_see_each_other(tmp_path: Path, postgres_url: str) -> None:
    """The aggregate cache fast-forwards (another replica wrote the vehicle since), and
    the health-status memory forgets a transition another replica stored."""
    data = tmp_path / "cloud"
    a, b = (ApiServer(data, postgres_url, role="api", name=n) for n in ("api-a", "api-b"))
    operator = operator_token(a)
    with processes(a, b), client(a, operator) as on_a, client(b, operator) as on_b:
        on_a.post("/vehicles", json=vehicle_body("v1")).raise_for_status()
        for n, (http, status) in enumerate(
            [(on_a, "healthy"), (on_b, "degraded"), (on_a, "healthy"), (on_b, "degraded")]
        ):
            http.post("/reports/health", json=health_body("v1", f"h{n}", status)).raise_for_status()
            assert on_a.get("/vehicles/v1").json()["data"]["health"] == status
            assert on_b.get("/vehicles/v1").json()["data"]["health"] == status
        for n, http in enumerate([on_a, on_b, on_a]):
            version = http.get("/vehicles/v1").json()["data"]["version"]
            patched = http.patch(
                "/vehicles/v1",
                json={"labels": {"model": "m3", "step": str(n)}},
                headers={"If-Match": str(version)},
            )
            assert patched.status_code == 200, patched.text
            assert on_b.get("/vehicles/v1").json()["data"]["labels"]["step"] == str(n)
