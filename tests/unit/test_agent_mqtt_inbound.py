"""What the agent's MQTT link does with what it receives and what it delivered, on plain
data: a payload over the size limit is dropped undecoded, the payload schemas bound what
the agent echoes, every drop is said once per cause, and the last reconcile report the
broker acknowledged is published again on reconnect (spec/mqtt-topics.md, rules 6, 10)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import msgspec
import pytest

from muto.agent.signals import Signals
from muto.agent.transport.mqtt import MAX_INBOUND_BYTES, MqttLink
from muto.domain.broker import Broker
from muto.domain.messages import DesiredNotify, Leaf, RefreshRequest, RefreshResult
from muto.domain.wire import Wire, WireError, decode

VEHICLE = "car-1"
ROOT = f"muto/default/vehicles/{VEHICLE}"


class View:
    def snapshots(self) -> dict[Leaf, Wire]:
        return {}

    def heartbeat_s(self) -> float:
        return 30.0

    def accepted_sequence(self) -> int:
        return 1


class Client:
    """What the link calls on aiomqtt's client: publish, recorded."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, topic: str, payload: bytes, **_: Any) -> None:
        self.published.append((topic, payload))


def make_link() -> tuple[MqttLink, Signals]:
    signals = Signals()
    link = MqttLink(
        Broker.parse("mqtt://127.0.0.1:1883"),
        "default",
        VEHICLE,
        view=View(),
        signals=signals,
        clock_now=lambda: datetime(2025, 1, 1, tzinfo=UTC),
        snapshot_interval_s=1.0,
    )
    return link, signals


def handle(link: MqttLink, client: Client, leaf: str, payload: bytes) -> None:
    message = aiomqtt.Message(
        f"{ROOT}/{leaf}", payload, qos=1, retain=False, mid=1, properties=None
    )
    asyncio.run(link._handle(client, message))  # type: ignore[arg-type]


def refresh(request_id: str) -> bytes:
    body = {"schema": "muto.refresh-request.v1", "requestId": request_id}
    return msgspec.json.encode(body)


def notify(vehicle_id: str = VEHICLE, **fields: Any) -> bytes:
    body = {
        "schema": "muto.desired-notify.v1",
        "vehicleId": vehicle_id,
        "revision": "dsr_1",
        "sequence": 2,
        "url": "http://cloud/desired-states/latest?vehicleId=car-1",
        **fields,
    }
    return msgspec.json.encode(body)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_refresh_over_the_size_limit_is_dropped_undecoded_with_one_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 100 MB refresh took an agent from 40 to 540 MB and came back echoed: now it is
    not decoded, not answered, and said once (a flood of them is not)."""
    link, _ = make_link()
    client = Client()
    decoded: list[object] = []
    monkeypatch.setattr("muto.agent.transport.mqtt.decode", lambda *a: decoded.append(a))
    huge = refresh("r" * MAX_INBOUND_BYTES)
    with caplog.at_level(logging.DEBUG, logger="muto.agent.mqtt"):
        for _ in range(3):
            handle(link, client, "cmd/refresh", huge)
    assert (client.published, decoded, link.dropped) == ([], [], 3)
    (said,) = warnings(caplog)
    assert f"{ROOT}/cmd/refresh" in said and f"{len(huge)} bytes" in said


def test_a_payload_at_the_limit_is_still_read() -> None:
    link, signals = make_link()
    body = notify()
    padded = body[:-1] + b" " * (MAX_INBOUND_BYTES - len(body)) + b"}"  # JSON whitespace
    handle(link, Client(), "desired/notify", padded)
    assert signals.triggers == ["notify:2"] and link.dropped == 0


def test_a_request_id_over_its_bound_is_refused_not_echoed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    link, _ = make_link()
    client = Client()
    with caplog.at_level(logging.WARNING, logger="muto.agent.mqtt"):
        handle(link, client, "cmd/refresh", refresh("r" * 129))
    assert client.published == [] and link.dropped == 1
    (said,) = warnings(caplog)
    assert "(malformed)" in said and "$.requestId" in said
    handle(link, client, "cmd/refresh", refresh("r" * 128))  # the bound itself is fine
    assert client.published[-1][0] == f"{ROOT}/evt/refresh_result"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("revision", "r" * 129),
        ("revision", "has space"),
        ("url", "u" * 2049),
        ("vehicleId", "v" * 129),
        ("vehicleId", "car/2"),
    ],
)
def test_notify_strings_are_bounded(field: str, value: str) -> None:
    fields = {"vehicle_id": value} if field == "vehicleId" else {field: value}
    with pytest.raises(WireError) as refused:
        decode(notify(**fields), DesiredNotify)
    assert refused.value.path == f"$.{field}"


def test_request_ids_are_bounded_both_ways() -> None:
    with pytest.raises(WireError, match=r"\$\.requestId"):
        decode(refresh("r" * 129), RefreshRequest)
    result = {"schema": "muto.refresh-result.v1", "requestId": "r" * 129, "ok": True}
    with pytest.raises(WireError, match=r"\$\.requestId"):
        decode(msgspec.json.encode(result), RefreshResult)


def test_another_vehicles_notify_is_ignored_with_one_warning_naming_both(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The cloud warns when a payload names another vehicle; the agent dropped one
    without a word. Now it says so, once per cause: a flood is one line."""
    link, signals = make_link()
    with caplog.at_level(logging.DEBUG, logger="muto.agent.mqtt"):
        for sequence in (5, 6, 7):
            handle(link, Client(), "desired/notify", notify("car-2", sequence=sequence))
    assert signals.triggers == [] and link.dropped == 3
    (said,) = warnings(caplog)
    assert f"{ROOT}/desired/notify" in said and "'car-2'" in said and "'car-1'" in said
    assert sum("car-2" in r.getMessage() for r in caplog.records) == 3  # repeats at debug


def test_old_news_is_no_drop() -> None:
    link, signals = make_link()
    handle(link, Client(), "desired/notify", notify(sequence=1))  # the accepted sequence
    assert signals.triggers == [] and link.dropped == 0


def test_the_last_acknowledged_reconcile_report_is_published_again_on_reconnect() -> None:
    """A PUBACK is the broker's, not the cloud's: a broker that crashes before saving
    loses the report it queued for an absent cloud. The link sends the newest reconcile
    report again, byte for byte, so the cloud stores it or de-duplicates it."""
    link, _ = make_link()
    first, second = Client(), Client()

    async def scenario() -> None:
        link._client = first  # type: ignore[assignment]
        assert await link.deliver("reconcile", b'{"reportId":"a"}') == ("ack", "PUBACK")
        assert await link.deliver("reconcile", b'{"reportId":"b"}') == ("ack", "PUBACK")
        assert await link.deliver("health", b'{"reportId":"h"}') == ("ack", "PUBACK")
        await link._redeliver(second)  # type: ignore[arg-type]

    asyncio.run(scenario())
    assert second.published == [(f"{ROOT}/reports/reconcile", b'{"reportId":"b"}')]


def test_nothing_is_published_again_before_a_delivery_or_after_a_failed_one() -> None:
    link, _ = make_link()
    client = Client()

    class Refusing(Client):
        async def publish(self, topic: str, payload: bytes, **_: Any) -> None:
            raise aiomqtt.MqttError("timed out")

    async def scenario() -> None:
        await link._redeliver(client)  # type: ignore[arg-type]
        link._client = Refusing()  # type: ignore[assignment]
        verdict, _ = await link.deliver("reconcile", b'{"reportId":"c"}')
        assert verdict == "retry"
        await link._redeliver(client)  # type: ignore[arg-type]

    asyncio.run(scenario())
    assert client.published == []
