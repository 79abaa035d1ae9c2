"""GET /metrics: who may scrape, requests labelled by route template (never the raw
path), writer batches, and the fleet gauges equal to what the views say."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from muto.cloud.api.app import create_app
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause, record_reconcile
from muto.cloud.seed import seed_demo_fleet
from muto.cloud.tokens import Role, issue_token
from muto.domain.reasons import ReasonCode
from muto.domain.reports import ReconcileStatus
from tests.support.spine import reconcile_report, sqlite_settings

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Scraper:
    client: TestClient
    plane: ControlPlane
    operator: dict[str, str]
    vehicle: dict[str, str]

    def scrape(self) -> Samples:
        response = self.client.get("/metrics", headers=self.operator)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples
        }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def scraper(tmp_path: Path) -> Iterator[Scraper]:
    settings = sqlite_settings(tmp_path)
    seed_demo_fleet(settings)  # 24 vehicles, 12 converged in a completed rollout
    plane = ControlPlane.open(settings)
    tokens = []
    for role, vehicle in ((Role.OPERATOR, None), (Role.VEHICLE, "vehicle-v3-eu-west-01")):
        secret, command = issue_token(role, vehicle, Cause.of("test"))
        plane.execute(command)
        tokens.append({"Authorization": f"Bearer {secret}"})
    try:
        with TestClient(create_app(settings, plane=plane)) as client:
            yield Scraper(client, plane, *tokens)
    finally:
        plane.close()


def test_scraping_needs_an_operator_token(scraper: Scraper) -> None:
    anonymous = scraper.client.get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert anonymous.json()["error"]["code"] == "unauthorized"
    assert scraper.client.get("/metrics", headers=scraper.vehicle).status_code == 403


def test_requests_are_counted_by_route_template_method_and_status(scraper: Scraper) -> None:
    c, op = scraper.client, scraper.operator
    for vehicle_id in ("vehicle-v3-eu-west-01", "vehicle-v4-us-east-00"):
        assert c.get(f"/vehicles/{vehicle_id}", headers=op).status_code == 200
    assert c.get("/vehicles/nobody", headers=op).status_code == 404
    assert c.get("/no/such/path/4711", headers=op).status_code == 404

    samples = scraper.scrape()
    total = "muto_http_requests_total"
    template = "/vehicles/{vehicle_id}"
    assert value(samples, total, route=template, method="GET", status="200") == 2
    assert value(samples, total, route=template, method="GET", status="404") == 1
    assert value(samples, total, route="unmatched", method="GET", status="404") == 1
    count = "muto_http_request_duration_seconds_count"
    assert value(samples, count, route=template, method="GET") == 3
    routes = {dict(labels).get("route") for _, labels in samples}
    assert not {r for r in routes if r and ("nobody" in r or "4711" in r or "eu-west" in r)}


def test_a_method_of_the_clients_own_making_is_counted_as_other(scraper: Scraper) -> None:
    """Under h11 any token arrives as the method: as labels, each would be a series kept
    for the process's life (a client could grow /metrics without bound)."""
    c = scraper.client
    for n in range(5):
        c.request(f"BREW{n}", "/healthz")
    assert c.request("PATCH", "/healthz").status_code == 405
    samples = scraper.scrape()
    methods = {dict(labels).get("method") for _, labels in samples} - {None}
    assert not {m for m in methods if m.startswith("BREW")}
    total = "muto_http_requests_total"
    assert value(samples, total, route="/healthz", method="other", status="405") == 5
    assert value(samples, total, route="/healthz", method="PATCH", status="405") == 1


def test_an_unknown_dashboard_path_costs_its_batch_nothing(
    scraper: Scraper, caplog: pytest.LogCaptureFixture
) -> None:
    """An unknown page under /ui leaves the dashboard mount's Router (unhashable) as the
    request's endpoint: it is counted as unmatched, and the requests folded with it
    (the same LOG_EVERY_S batch: no wait between them) keep their counts and lines."""
    c = scraper.client
    bad = ["/ui/nope/deeper", "/ui/vehicles/a%2F..%2Fb/x", "/ui/static/../../etc"]
    with caplog.at_level(logging.INFO, logger="muto"):
        assert c.get("/healthz", params={"marker": "before"}).status_code == 200
        statuses = [c.get(path).status_code for path in bad]
        assert c.get("/healthz", params={"marker": "after"}).status_code == 200
        samples = scraper.scrape()  # folds what the edge holds, before the next tick
    total = "muto_http_requests_total"
    assert value(samples, total, route="/healthz", method="GET", status="200") == 2
    unmatched = sum(
        v
        for (name, labels), v in samples.items()
        if name == total and dict(labels)["route"] == "unmatched"
    )
    assert unmatched == len(bad), statuses
    routes = {dict(labels).get("route") for _, labels in samples}
    assert not {r for r in routes if r and ("nope" in r or ".." in r or "etc" in r)}
    lines = [
        json.loads(line)
        for r in caplog.records
        if r.name == "muto.access"
        for line in r.getMessage().splitlines()
    ]
    assert [line["path"] for line in lines if line["path"] == "/healthz"] == ["/healthz"] * 2
    assert {line["path"] for line in lines} >= {"/ui/nope/deeper", "/ui/vehicles/a/../b/x"}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_writer_batches_and_commit_latency_are_observed(scraper: Scraper) -> None:
    body = {"vehicleId": "extra-01", "labels": {"model": "vehicle-v3", "region": "eu-west"}}
    assert scraper.client.post("/vehicles", json=body, headers=scraper.operator).status_code == 201

    samples = scraper.scrape()
    batches = value(samples, "muto_writer_batch_commands_count")
    assert batches is not None and batches >= 1
    assert value(samples, "muto_writer_batch_commands_sum") == batches  # one command each
    assert value(samples, "muto_writer_commit_duration_seconds_count") == batches


def test_fleet_gauges_say_what_the_views_say(scraper: Scraper) -> None:
    plane = scraper.plane
    blocked = reconcile_report(
        "vehicle-v3-eu-west-01",
        "metrics-blocked-1",
        ReconcileStatus.BLOCKED,
        reason_codes=[ReasonCode.DENY_OUTSIDE_WINDOW],
        minute=24 * 60 * 365 * 10,  # newer than the seed's reports
    )
    plane.execute(record_reconcile(blocked, "vehicle:vehicle-v3-eu-west-01"))

    samples = scraper.scrape()
    assert value(samples, "muto_event_log_position") == plane.log.position()
    for name in plane.projector.projections:
        assert value(samples, "muto_projection_lag_events", projection=name) == 0
        assert value(samples, "muto_projection_position", projection=name) == plane.log.position()
    assert value(samples, "muto_vehicles_by_status", status="converged") == 11
    assert value(samples, "muto_vehicles_by_status", status="blocked") == 1
    assert value(samples, "muto_vehicles_by_status", status="none") == 12
    assert value(samples, "muto_vehicles_by_reason", reason="DENY_OUTSIDE_WINDOW") == 1
    assert value(samples, "muto_vehicles_by_presence", presence="unknown") == 24
    assert value(samples, "muto_rollouts_by_state", state="completed") == 1
    # No bridge in this app: no MQTT series rather than a made-up value.
    assert value(samples, "muto_mqtt_connected") is None


def test_an_active_rollout_has_per_phase_member_counts(scraper: Scraper) -> None:
    wanted = {"selector": "model=vehicle-v4", "stack": "autonomy-core", "version": "1.1.0"}
    started = scraper.client.post("/rollouts", json=wanted, headers=scraper.operator)
    assert started.status_code == 201, started.text
    rollout = started.json()["data"]

    samples = scraper.scrape()
    for phase, counts in rollout["phases"].items():
        for status in ("pending", "assigned"):
            found = value(
                samples,
                "muto_rollout_phase_vehicles",
                rollout=rollout["rolloutId"],
                phase=phase,
                status=status,
            )
            assert (found or 0) == counts[status], (phase, status)
    assert value(samples, "muto_rollouts_by_state", state="canary") == 1
    # The finished seed rollout has no per-phase series (it would stay forever).
    phases = [dict(labels) for name, labels in samples if name == "muto_rollout_phase_vehicles"]
    assert {p["rollout"] for p in phases} == {rollout["rolloutId"]}
