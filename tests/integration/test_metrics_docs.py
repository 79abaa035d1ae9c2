"""docs/metrics.md lists every metric the code exposes, and the Grafana dashboard
queries only metrics that exist."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from muto.agent.metrics_port import AgentCollector
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause
from muto.cloud.controller import RolloutController
from muto.cloud.metrics import CloudMetrics
from muto.cloud.rollouts import start_rollout
from muto.cloud.seed import seed_demo_fleet
from muto.domain.requests import RolloutRequest
from tests.support.spine import sqlite_settings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "metrics.md"
BOARD = ROOT / "deploy" / "grafana" / "muto-fleet.json"
DOCUMENTED = re.compile(r"^\| `(muto_[a-z0-9_]+)` \|", re.MULTILINE)
QUERIED = re.compile(r"\bmuto_[a-z0-9_]+")
SERIES_SUFFIXES = ("_bucket", "_sum", "_count", "_created")


@dataclass
class Link:
    connected: bool = True


def documented() -> set[str]:
    return set(DOCUMENTED.findall(DOC.read_text(encoding="utf-8")))


def family(sample_name: str, known: set[str]) -> str:
    """A histogram's `_bucket`/`_sum`/`_count` series belong to the documented family."""
    if sample_name in known:
        return sample_name
    for suffix in SERIES_SUFFIXES:
        if sample_name.endswith(suffix) and sample_name.removesuffix(suffix) in known:
            return sample_name.removesuffix(suffix)
    return sample_name


def exposed_by_the_cloud(tmp_path: Path) -> set[str]:
    """Every muto_* family of a registry that has seen requests, a write, an MQTT link
    and an active rollout, so that no family is missing for want of data."""
    settings = sqlite_settings(tmp_path)
    seed_demo_fleet(settings)
    plane = ControlPlane.open(settings)
    try:
        request = RolloutRequest(
            selector="model=vehicle-v4", stack="autonomy-core", version="1.1.0"
        )
        plane.execute(
            start_rollout(
                request,
                ["vehicle-v4-eu-west-00"],
                ["vehicle-v4-eu-west-01"],
                Cause.of("t"),
                plane.sign,
                plane.clock,
            )
        )
        metrics = CloudMetrics()
        controller = RolloutController(plane)
        metrics.attach(plane, Link(), controller)
        metrics.requests.observe("/vehicles", "GET", 200, 0.001)
        metrics.observe_batch(1, 0.001)
        try:
            return {
                f.name + ("_total" if f.type == "counter" else "")
                for f in metrics.registry.collect()
                if f.name.startswith("muto_")
            }
        finally:
            controller.close()
    finally:
        plane.close()


def exposed_by_the_agent() -> set[str]:
    figures = {
        "restarts": 0.0,
        "outbox": 0.0,
        "apply_seconds": 1.0,
        "readiness_seconds": 1.0,
        "journal_bytes": 1.0,
        "gate_blocks.DENY_MOVING": 1.0,
    }
    return {
        f.name + ("_total" if f.type == "counter" else "")
        for f in AgentCollector(lambda: figures).collect()
    }


def test_every_exposed_metric_is_documented_and_nothing_else(tmp_path: Path) -> None:
    exposed = exposed_by_the_cloud(tmp_path) | exposed_by_the_agent()
    assert exposed - documented() == set(), "metrics missing from docs/metrics.md"
    assert documented() - exposed == set(), "docs/metrics.md lists metrics nobody exposes"


def test_the_grafana_dashboard_queries_only_documented_metrics() -> None:
    board = json.loads(BOARD.read_text(encoding="utf-8"))
    known = documented()
    queried = {
        family(name, known)
        for panel in board["panels"]
        for target in panel.get("targets", [])
        for name in QUERIED.findall(target["expr"])
    }
    assert queried, "the dashboard queries nothing"
    assert queried - known == set(), "the dashboard queries metrics that do not exist"
    # Every panel has a query and a data source the importer can bind.
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}"
