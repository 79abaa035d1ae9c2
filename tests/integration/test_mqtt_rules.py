"""The bridge's pure rules: broker URLs, backoff bounds, topic parsing, coalescing.
(Plain functions, no broker; they live beside the bridge's other tests.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from muto.cloud.mqtt.link import Backoff
from muto.cloud.mqtt.listener import parse_topic
from muto.cloud.mqtt.outbox import latest_per_vehicle
from muto.domain.broker import Broker
from muto.domain.messages import Leaf


def test_a_broker_url_carries_credentials_tls_and_the_client_id() -> None:
    plain = Broker.parse("mqtt://127.0.0.1:1884")
    assert (plain.host, plain.port, plain.username, plain.tls, plain.client_id) == (
        "127.0.0.1",
        1884,
        None,
        False,
        None,
    )
    full = Broker.parse("mqtts://muto-cloud:p%40ss%20w@broker.example?clientId=cloud-a")
    assert (full.port, full.username, full.password, full.tls, full.client_id) == (
        8883,
        "muto-cloud",
        "p@ss w",
        True,
        "cloud-a",
    )
    with pytest.raises(ValueError, match="not an MQTT broker URL"):
        Broker.parse("http://broker:1883")


@given(st.integers(min_value=0, max_value=64))
def test_backoff_grows_to_its_cap_with_jitter(attempt: int) -> None:
    backoff = Backoff(base_s=0.5, cap_s=30.0)
    ceiling = min(30.0, 0.5 * 2.0**attempt)
    assert ceiling / 2 <= backoff.delay(attempt) <= ceiling <= 30.0


def test_backoff_stays_capped_however_long_the_outage() -> None:
    assert 15.0 <= Backoff(base_s=0.5, cap_s=30.0).delay(10**9) <= 30.0


@pytest.mark.parametrize(
    ("topic", "found"),
    [
        ("muto/default/vehicles/v1/presence", ("v1", Leaf.PRESENCE)),
        ("muto/default/vehicles/v1/reports/reconcile", ("v1", Leaf.REPORTS_RECONCILE)),
        ("muto/other/vehicles/v1/presence", None),  # another tenant
        ("muto/default/vehicles/v1/reports/unknown", None),
        ("muto/default/vehicles/v1", None),
        ("muto/default/robots/v1/presence", None),
    ],
)
def test_topics_name_the_vehicle_and_the_leaf(topic: str, found: object) -> None:
    assert parse_topic(topic, "default") == found


def test_assignments_coalesce_to_the_newest_per_vehicle_in_log_order() -> None:
    def assigned(vehicle_id: str, sequence: int) -> SimpleNamespace:
        revision = f"dsr_{vehicle_id}_{sequence}"
        return SimpleNamespace(
            vehicle_id=vehicle_id,
            sequence=sequence,
            assignment=SimpleNamespace(revision=revision),
        )

    events = [assigned("v1", 1), assigned("v2", 1), assigned("v1", 2), assigned("v1", 3)]
    notifies = latest_per_vehicle(events, "http://cloud/")
    assert [(n.vehicle_id, n.sequence, n.revision) for n in notifies] == [
        ("v1", 3, "dsr_v1_3"),
        ("v2", 1, "dsr_v2_1"),
    ]
    assert notifies[0].url == "http://cloud/desired-states/latest?vehicleId=v1"
