"""Two workers on one PostgreSQL database: the notifier's duty goes with the bridge
session, so when the listener lease moves to the other worker, that worker publishes
the notifies, and the one that left says it holds no notifier duty (/readyz)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.mqtt.bridge import Bridge
from muto.projections.locks import Lock
from tests.conftest import Mosquitto
from tests.support.mqtt_watch import FAST, Watcher, assign, notify_topic, open_fleet, settings_for
from tests.support.waits import until

pytestmark = [pytest.mark.mqtt, pytest.mark.postgres]


def end_the_session_holding(postgres_url: str, duty: Lock) -> None:
    """What an administrator, a pooler or a network fault does to the holder's session:
    PostgreSQL ends it, and the advisory lock goes with it (this test's database only:
    the server is shared)."""
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as admin:
            ended = admin.execute(
                text(
                    "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_database d"
                    " ON d.oid = l.database WHERE d.datname = current_database()"
                    " AND l.locktype = 'advisory'"
                    " AND ((l.classid::bigint << 32) | l.objid::bigint) = :key"
                ),
                {"key": int(duty)},
            ).all()
        assert ended == [(True,)], ended
    finally:
        engine.dispose()


def test_the_notifier_follows_the_listener_lease_to_its_next_holder(
    postgres_url: str,
    tmp_path: Path,
    mosquitto: Mosquitto,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: the worker that lost the listener lease kept the notifier's, ran no
    notifier, and the new holder's notifier was never leader: no notify ever again for
    the whole fleet, both workers ready, nothing logged; /readyz said the first still
    held the notifier."""
    caplog.set_level(logging.INFO, logger="muto")
    settings = settings_for("postgres", tmp_path, mosquitto.url, postgres_url)
    first = open_fleet(settings, "v1", "v2")
    second = ControlPlane.open(settings)

    async def main() -> None:
        async with Watcher(mosquitto.url, notify_topic("+")) as watcher:
            leaving = Bridge(first, backoff=FAST)
            await leaving.start()
            await until(lambda: leaving.connected, "the first worker's session")
            taking = Bridge(second, backoff=FAST)
            await taking.start()
            try:
                await assign(first, "v1")
                await watcher.wait(lambda: watcher.notifies("v1"), "the first worker's notify")
                assert leaving.outbox.lease.holding and not taking.outbox.lease.holding

                # The first worker loses its listener lease, and every race for it since.
                monkeypatch.setattr(leaving.lease, "held", lambda: False)
                end_the_session_holding(postgres_url, Lock.LISTENER)
                await until(lambda: taking.connected, "the second worker's session")

                await assign(second, "v2")
                await watcher.wait(lambda: watcher.notifies("v2"), "the second worker's notify")
                assert not leaving.outbox.lease.holding and taking.outbox.lease.holding
                assert not leaving.connected
            finally:
                await taking.stop()
                await leaving.stop()

    try:
        asyncio.run(main())
    finally:
        second.close()
        first.close()
    said = [r.getMessage() for r in caplog.records]
    assert "lost the listener lease: left the broker" in said
    assert "released the notifier lease" in said
