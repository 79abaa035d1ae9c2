"""What an Agent is made of: settings, the adapters it runs on (each injectable), and the
internal wiring between reconciler, executor, intake, courier and MQTT link."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from muto.agent.artifacts import ArtifactSource, SimulatedArtifacts
from muto.agent.clock import Clock, SystemClock
from muto.agent.journal import Journal
from muto.agent.kill import KillSwitch
from muto.agent.reconcile.executor import Executor
from muto.agent.reconcile.intake import Intake
from muto.agent.reconcile.reconciler import Reconciler
from muto.agent.reconcile.recovery import RETRY_LIMIT
from muto.agent.runtime.base import RuntimeAdapter
from muto.agent.safety import VehicleStateProvider
from muto.agent.signals import Signals
from muto.agent.snapshots import snapshots
from muto.agent.transport.courier import Courier
from muto.agent.transport.http import CloudPort
from muto.agent.trust import Trust
from muto.domain.broker import Broker
from muto.domain.gates import SafetyFloor
from muto.domain.messages import Leaf
from muto.domain.wire import Wire

if TYPE_CHECKING:
    from muto.agent.transport.mqtt import MqttLink

AGENT_VERSION = "0.1.0"
SNAPSHOT_INTERVAL_S = 1.0  # at most one change-driven MQTT snapshot publish per interval


@dataclass(frozen=True)
class AgentSettings:
    vehicle_id: str
    tenant: str = "default"
    agent_version: str = AGENT_VERSION
    poll_s: float = 30.0
    poll_jitter: float = 0.2  # each poll waits poll_s * uniform(1 - j, 1 + j)
    drift_check_s: float = 5.0  # also how often health transitions are looked for
    health_every_s: float = 300.0  # periodic health report (plus one per transition)
    retry_limit: int = RETRY_LIMIT
    reports_via: Literal["http", "mqtt"] = "http"  # the one path that acknowledges
    flush_s: float = 10.0  # how long stop() waits for the outbox and the MQTT session
    snapshot_interval_s: float = SNAPSHOT_INTERVAL_S  # change-driven snapshot throttle
    # MQTT keepalive and broker round-trip timeout; None: the link's defaults (30 s, 10 s).
    # The fleet simulator lengthens both: thousands of its links share one event loop.
    mqtt_keepalive_s: int | None = None
    mqtt_timeout_s: float | None = None
    stop_runtime_on_exit: bool = True
    owns_logging: bool = False  # apply agentConfig.logLevel to the process's "muto" loggers
    # Start a new report incarnation: for a data dir restored from a backup, whose report
    # count is behind what the cloud saw (docs/reliability.md, report order).
    new_incarnation: bool = False
    # The vehicle's own safety floor: the cloud's policy may tighten the gates, never
    # loosen them below it (muto.domain.gates.stricter).
    floor: SafetyFloor = field(default_factory=SafetyFloor)


@dataclass
class AgentParts:
    """The adapters. A fleet simulator passes a memory journal, MemoryTrust, the
    simulated runtime, SimulatedArtifacts and a SimulatedStateProvider (see compose.py)."""

    journal: Journal
    trust: Trust
    runtime: RuntimeAdapter
    vehicle: VehicleStateProvider
    artifacts: ArtifactSource = field(default_factory=SimulatedArtifacts)
    cloud: CloudPort | None = None  # None: offline by design
    broker: Broker | None = None  # None: no MQTT
    clock: Clock = field(default_factory=SystemClock)
    rng: random.Random = field(default_factory=random.Random)
    kill: KillSwitch = field(default_factory=KillSwitch)
    data_dir: Path | None = None  # free disk is measured here when the state omits it
    config_file: Path | None = None  # where the agentConfig in force is mirrored

    async def close(self) -> None:
        if self.cloud is not None:
            await self.cloud.aclose()
        self.journal.close()


class AgentView:
    """What the MQTT link reads of its agent (transport.mqtt.VehicleView): snapshots, the
    heartbeat in force, the sequence a notify must beat. All from the journal, the
    adapters and the phase in `signals`; the link writes none of it."""

    def __init__(self, s: AgentSettings, p: AgentParts, signals: Signals) -> None:
        self._settings, self._parts, self._signals = s, p, signals

    def snapshots(self) -> dict[Leaf, Wire]:
        s, p = self._settings, self._parts
        return snapshots(
            s.vehicle_id,
            s.agent_version,
            p.runtime.name,
            p.vehicle.read(),
            p.journal.state,
            self._signals.phase,
            lambda digest: bool(p.artifacts.present([digest])),
            s.floor,
        )

    def heartbeat_s(self) -> float:
        return self._parts.journal.state.config.heartbeat_s

    def accepted_sequence(self) -> int:
        return self._parts.journal.state.accepted_sequence


@dataclass
class Wiring:
    """The parts of one agent, wired to each other through `signals` only."""

    signals: Signals
    reconciler: Reconciler
    courier: Courier
    mqtt: MqttLink | None

    @classmethod
    def build(cls, s: AgentSettings, p: AgentParts) -> Wiring:
        signals = Signals()
        executor = Executor(
            vehicle_id=s.vehicle_id,
            journal=p.journal,
            runtime=p.runtime,
            artifacts=p.artifacts,
            clock=p.clock,
            kill=p.kill,
            signals=signals,
        )
        intake = Intake(
            vehicle_id=s.vehicle_id,
            source=p.cloud,
            trust=p.trust,
            journal=p.journal,
            clock=p.clock,
            kill=p.kill,
            signals=signals,
        )
        reconciler = Reconciler(
            journal=p.journal,
            intake=intake,
            executor=executor,
            runtime=p.runtime,
            artifacts=p.artifacts,
            vehicle=p.vehicle,
            clock=p.clock,
            data_dir=p.data_dir,
            floor=s.floor,
            signals=signals,
        )
        mqtt = None
        if p.broker is not None:
            # Imported here: an agent without a broker never loads aiomqtt and paho.
            from muto.agent.transport.mqtt import MqttLink

            mqtt = MqttLink(
                p.broker,
                s.tenant,
                s.vehicle_id,
                view=AgentView(s, p, signals),
                signals=signals,
                clock_now=p.clock.now,
                rng=p.rng,
                snapshot_interval_s=s.snapshot_interval_s,
                **_mqtt_tuning(s),
            )
        sink = mqtt if s.reports_via == "mqtt" else p.cloud
        courier = Courier(
            p.journal,
            sink,
            p.clock,
            via=s.reports_via,
            kill=p.kill,
            rng=p.rng,
            woken=signals.report,
        )
        return cls(signals, reconciler, courier, mqtt)


def _mqtt_tuning(s: AgentSettings) -> dict[str, Any]:
    """The MqttLink arguments the settings override (unset ones keep the link's)."""
    given = {"keepalive_s": s.mqtt_keepalive_s, "timeout_s": s.mqtt_timeout_s}
    return {name: value for name, value in given.items() if value is not None}
