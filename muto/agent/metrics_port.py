"""The agent's optional local /metrics port, for the vehicle's node exporter or a local
Prometheus agent (`muto agent run --metrics-port 9108`; off by default). Imported only
when enabled: prometheus_client stays out of an agent's memory otherwise.

The figures are the health report's (muto/agent/figures.py), read at scrape time on the
server's thread; nothing is counted twice."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from muto.agent.figures import GATE_BLOCKS

# health-report key -> (gauge name, help)
SIMPLE = {
    "apply_seconds": (
        "muto_agent_last_apply_duration_seconds",
        "Duration of the last apply (start of the stack's switch to running).",
    ),
    "readiness_seconds": (
        "muto_agent_last_readiness_duration_seconds",
        "Time the last applied release took to become ready.",
    ),
    "outbox": ("muto_agent_outbox_reports", "Reports queued, not yet acknowledged."),
    "journal_bytes": ("muto_agent_journal_bytes", "Size of the journal on disk."),
    "restarts": (
        "muto_agent_runtime_restarts",
        "Restarts of the running stack's processes counted by the runtime.",
    ),
}


class AgentCollector(Collector):
    def __init__(self, figures: Callable[[], dict[str, float]]) -> None:
        self.figures = figures

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        found = self.figures()
        for key, (name, text) in SIMPLE.items():
            if key not in found:
                continue
            yield GaugeMetricFamily(name, text, value=found[key])
        blocks = CounterMetricFamily(
            "muto_agent_gate_blocks",
            "Passes that turned blocked, by the safety gate's reason code.",
            labels=["reason"],
        )
        for key, count in sorted(found.items()):
            if key.startswith(GATE_BLOCKS):
                blocks.add_metric([key.removeprefix(GATE_BLOCKS)], count)
        yield blocks


def serve_metrics(
    figures: Callable[[], dict[str, float]], port: int, address: str = "127.0.0.1"
) -> tuple[Any, Any]:
    """Start the exporter on a daemon thread; returns (server, thread) to shut it down."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(AgentCollector(figures))
    server, thread = start_http_server(port, addr=address, registry=registry)
    return server, thread
