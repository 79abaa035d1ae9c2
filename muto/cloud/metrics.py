"""Prometheus metrics of one control-plane process (docs/metrics.md lists them all).

Two kinds, kept apart so that the request path pays only for the first:
- counted as things happen: requests (by route template, method, status) and their
  latency (`RequestTally`, in batches: `api.edge.Edge`), writer batches and commit
  latency (the library's histograms: a batch is rarer than a request);
- read at scrape time from what the process already keeps (log and projection positions,
  the MQTT link) and from the views (vehicles by status, reason and presence; rollouts by
  state; per-phase member counts): `FleetCollector`, run off the event loop.

Each process has its own registry and is scraped on its own (one target per `muto cloud
serve`): see docs/metrics.md for why this is not prometheus_client's multiprocess mode.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, or_, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from muto.cloud.api.context import operator
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.dashboard.reads import counts
from muto.cloud.request_tally import RequestTally
from muto.domain.model.rollout import FINAL_STATES

UNMATCHED = "unmatched"  # no route: never the raw path (unbounded label values)
# A request's method as a label: HTTP's own, else "other". Under h11 any token a client
# sends arrives as the method, and each would be a new series kept for the process's life.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Link(Protocol):
    """What the collector reads of the MQTT bridge."""

    connected: bool


class Ticking(Protocol):
    """What the collector reads of the rollout controller."""

    ticks: int


def route_templates(routes: Iterable[BaseRoute], prefix: str = "") -> dict[Any, str]:
    """endpoint -> path template, through mounts: the router leaves the endpoint it
    chose in the request scope, so labelling a request costs one dict lookup."""
    found: dict[Any, str] = {}
    for route in routes:
        if isinstance(route, Route):
            found.setdefault(route.endpoint, prefix + route.path)
        elif isinstance(route, Mount) and route.routes:
            found.update(route_templates(route.routes, prefix + route.path))
        elif isinstance(route, Mount):  # an app of its own (static files)
            found.setdefault(route.app, prefix + route.path + "/{path}")
    return found


class CloudMetrics:
    """The registry of one app, its hot-path instruments and its scrape-time collector."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        for standard in (ProcessCollector, PlatformCollector, GCCollector):
            standard(registry=self.registry)
        self.requests = RequestTally(LATENCY_BUCKETS)
        self.registry.register(self.requests)
        self.batch_size = Histogram(
            "muto_writer_batch_commands",
            "Commands saved together in one writer transaction (group commit).",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.commit_latency = Histogram(
            "muto_writer_commit_duration_seconds",
            "Time the writer took to run and save one batch.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._before_scrape: list[Callable[[], None]] = []
        self.fleet = FleetCollector()
        self.registry.register(self.fleet)

    def attach(
        self, plane: ControlPlane, link: Link | None, controller: Ticking | None = None
    ) -> Callable[[], None]:
        """Follow this control plane (and MQTT link, rollout controller); returns the detach."""
        self.fleet.plane, self.fleet.link, self.fleet.controller = plane, link, controller
        plane.writer.batch_observers.append(self.observe_batch)

        def detach() -> None:
            self.fleet.plane = self.fleet.link = self.fleet.controller = None
            observers = plane.writer.batch_observers
            if self.observe_batch in observers:
                observers.remove(self.observe_batch)

        return detach

    def observe_batch(self, commands: int, seconds: float) -> None:
        self.batch_size.observe(commands)
        self.commit_latency.observe(seconds)

    def before_scrape(self, hook: Callable[[], None]) -> None:
        """Run `hook` on the event loop before each scrape: what is held to be counted
        in a batch (the edge's answered requests) is counted then."""
        self._before_scrape.append(hook)

    def settle(self) -> None:
        """Count what is held (the scrape's first step, on the event loop)."""
        for hook in self._before_scrape:
            hook()

    def exposition(self) -> bytes:
        """The text format; runs the collector's queries (call it off the event loop)."""
        return generate_latest(self.registry)


class FleetCollector(Collector):
    """Gauges computed at scrape time from positions and views: nothing on the hot path."""

    def __init__(self) -> None:
        self.plane: ControlPlane | None = None
        self.link: Link | None = None
        self.controller: Ticking | None = None

    def describe(self) -> Iterable[Metric]:
        return []  # computed at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        plane = self.plane
        if plane is None:
            return
        head = plane.log.position()
        yield from self._positions(plane, head)
        if self.link is not None:  # no bridge (--no-mqtt): no MQTT series at all
            yield from self._mqtt(plane, self.link, head)
        if self.controller is not None:  # a process that runs no controller: no series
            yield CounterMetricFamily(
                "muto_rollout_controller_ticks",
                "Passes the rollout controller made over the active rollouts as the leader.",
                value=self.controller.ticks,
            )
        yield from self._vehicles(plane)
        yield from self._rollouts(plane)

    def _positions(self, plane: ControlPlane, head: int) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "muto_event_log_position", "Id of the last event in the log.", value=head
        )
        positions = plane.projector.positions()
        position = GaugeMetricFamily(
            "muto_projection_position", "Last event a projection applied.", labels=["projection"]
        )
        lag = GaugeMetricFamily(
            "muto_projection_lag_events",
            "Events in the log that a projection has not applied yet.",
            labels=["projection"],
        )
        for name, at in sorted(positions.items()):
            position.add_metric([name], at)
            lag.add_metric([name], max(0, head - at))
        yield position
        yield lag

    def _mqtt(self, plane: ControlPlane, link: Link, head: int) -> Iterator[Metric]:
        # Imported here: the MQTT package imports the control plane, not the reverse.
        from muto.cloud.mqtt.outbox import NOTIFIER

        yield GaugeMetricFamily(
            "muto_mqtt_connected",
            "1 when this process's MQTT bridge is connected to the broker.",
            value=1.0 if link.connected else 0.0,
        )
        notified = plane.views.store.position_of(NOTIFIER)
        yield GaugeMetricFamily(
            "muto_notify_outbox_lag_events",
            "Events in the log past the MQTT notifier's stored position (notifies not yet "
            "published are among them).",
            value=max(0, head - notified),
        )

    def _vehicles(self, plane: ControlPlane) -> Iterator[Metric]:
        found = counts(plane.queries)  # the fleet page's counts, over the whole fleet
        for name, label, text, values in (
            (
                "muto_vehicles_by_status",
                "status",
                "Vehicles by the status of their last reconcile report (none: no report yet).",
                found.by_status,
            ),
            (
                "muto_vehicles_by_reason",
                "reason",
                "Vehicles whose last reconcile report carries this reason code.",
                found.by_reason,
            ),
            (
                "muto_vehicles_by_presence",
                "presence",
                "Vehicles by presence (online, stale: online but silent for three "
                "heartbeats, offline; unknown: never seen on MQTT).",
                found.by_presence,
            ),
        ):
            family = GaugeMetricFamily(name, text, labels=[label])
            for value, count in sorted(values.items()):
                family.add_metric([value], count)
            yield family

    def _rollouts(self, plane: ControlPlane) -> Iterator[Metric]:
        rollouts, members = plane.views.rollouts.rollouts, plane.views.rollouts.vehicles
        with plane.views.store.reading() as s:
            by_state = s.execute(
                select(rollouts.c.state, func.count()).group_by(rollouts.c.state)
            ).all()
            # Only rollouts still moving: a finished one's series would stay forever.
            phases = s.execute(
                select(members.c.rollout_id, members.c.phase, members.c.status, func.count())
                .join(rollouts, rollouts.c.rollout_id == members.c.rollout_id)
                .where(
                    or_(
                        rollouts.c.state.not_in([str(state) for state in FINAL_STATES]),
                        # A final rollout's members that have not confirmed its rollback.
                        members.c.status == "rolling_back",
                    )
                )
                .group_by(members.c.rollout_id, members.c.phase, members.c.status)
            ).all()
        state = GaugeMetricFamily("muto_rollouts_by_state", "Rollouts by state.", labels=["state"])
        for value, count in sorted(by_state):
            state.add_metric([value], count)
        yield state
        phase = GaugeMetricFamily(
            "muto_rollout_phase_vehicles",
            "Members of each active rollout by phase and status (pending, assigned, converged, "
            "deferred: blocked by a gate, failed, rolling_back, rolled_back), and those of a "
            "final one still rolling_back (given its rollback, not confirmed).",
            labels=["rollout", "phase", "status"],
        )
        for rollout_id, name, status, count in sorted(phases):
            phase.add_metric([rollout_id, name, status], count)
        yield phase


async def scrape(request: Request) -> Response:
    """GET /metrics: an operator token, like every other non-health endpoint (Prometheus
    sends it with `authorization: {credentials_file: ...}`). The collector's queries run
    on a worker thread, so a scrape never holds the event loop."""
    await operator(request)
    metrics: CloudMetrics = request.state.metrics
    metrics.settle()
    body = await asyncio.to_thread(metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
