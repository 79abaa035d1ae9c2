"""Composition roots: a real agent from a data dir (the CLI), and cheap in-process agents
for the fleet simulator.

Everything a real agent knows lives under its data dir:
    journal.db (+ journal.lock, journal.db-head: its last commit)   the journal
    trust.json                    trust store            token        bearer token (0600)
    cache/                        artifact cache         runtime/     the runtime's workdir
    agent-config.json             agentConfig in force
    vehicle-state.json            default state file (other on-board processes write it)
The data dir and every directory under it are created 0700, secrets 0600, whatever the umask.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from muto.agent.agent import Agent
from muto.agent.artifacts import CachedArtifacts, SimulatedArtifacts
from muto.agent.cache import ArtifactCache
from muto.agent.clock import Clock, SystemClock
from muto.agent.config_file import CONFIG_FILE
from muto.agent.journal import Journal
from muto.agent.kill import KillSwitch
from muto.agent.parts import AgentParts, AgentSettings
from muto.agent.runtime import build_runtime
from muto.agent.runtime.archive_rules import ArchiveLimits
from muto.agent.runtime.factory import ARCHIVE_RUNTIMES
from muto.agent.runtime.simulated import BehaviourTable, SimulatedRuntime
from muto.agent.safety import FileStateProvider, SimulatedStateProvider
from muto.agent.transport.http import CloudClient, CloudPort
from muto.agent.trust import MemoryTrust, provision
from muto.domain.broker import Broker
from muto.domain.gates import SafetyFloor
from muto.domain.vehicle_state import VehicleState
from muto.trust import TrustConfig
from muto.trust.files import PRIVATE_FILE_MODE, atomic_write, private_dir

if TYPE_CHECKING:
    import httpx

    from muto.agent.transport.exchange import Exchanges

TOKEN_FILE = "token"
STATE_FILE = "vehicle-state.json"


@dataclass(frozen=True)
class RunOptions:
    vehicle_id: str
    data_dir: Path
    cloud_url: str | None = None
    mqtt_url: str | None = None
    vehicle_state: Path | None = None
    runtime: str = "process"
    trust: Path | None = None
    token: str | None = None  # from --token-file or MUTO_AGENT_TOKEN, never argv
    tenant: str = "default"
    cache_budget_mb: int = 4096
    archive_limits: ArchiveLimits = field(default_factory=ArchiveLimits)
    reports_via: Literal["http", "mqtt"] = "http"
    poll_s: float = 30.0
    new_incarnation: bool = False
    # The vehicle's own safety floor: a policy tightens the gates, never loosens them.
    floor: SafetyFloor = field(default_factory=SafetyFloor)


def local_agent(options: RunOptions, **settings: Any) -> Agent:
    """The agent `muto agent run` starts. Fault injection (MUTO_AGENT_KILL_AT) is read
    from the environment here, and only here."""
    if options.reports_via == "mqtt" and not options.mqtt_url:
        raise ValueError("--reports-via mqtt needs --mqtt-url")
    data = private_dir(options.data_dir)
    trust = provision(data, options.trust)
    token = _token(data, options.token)
    journal = Journal.open(data)
    cloud = CloudClient(options.cloud_url, options.vehicle_id, token) if options.cloud_url else None
    cache = ArtifactCache(
        data / "cache",
        options.cache_budget_mb * 1024 * 1024,
        free_disk=lambda: shutil.disk_usage(data).free,
    )
    artifacts = CachedArtifacts(
        cache,
        base_url=options.cloud_url.rstrip("/") + "/" if options.cloud_url else None,
        token=token,
        token_origin=options.cloud_url,
    )
    parts = AgentParts(
        journal=journal,
        trust=trust,
        runtime=build_runtime(
            options.runtime,
            data / "runtime",
            **(
                {"archive_limits": options.archive_limits}
                if options.runtime in ARCHIVE_RUNTIMES
                else {}
            ),
        ),
        vehicle=FileStateProvider(options.vehicle_state or data / STATE_FILE),
        artifacts=artifacts,
        cloud=cloud,
        broker=Broker.parse(options.mqtt_url) if options.mqtt_url else None,
        kill=KillSwitch.from_env(),
        data_dir=data,
        config_file=data / CONFIG_FILE,
    )
    agent_settings = AgentSettings(
        vehicle_id=options.vehicle_id,
        tenant=options.tenant,
        reports_via=options.reports_via,
        poll_s=options.poll_s,
        owns_logging=True,
        new_incarnation=options.new_incarnation,
        floor=options.floor,
        **settings,
    )
    return Agent(agent_settings, parts)


def simulated_agent(
    vehicle_id: str,
    trust: TrustConfig,
    *,
    cloud_url: str | None = None,
    cloud: CloudPort | None = None,
    http: httpx.AsyncClient | Exchanges | None = None,
    token: str | None = None,
    mqtt_url: str | None = None,
    vehicle: VehicleState | None = None,
    behaviours: BehaviourTable | None = None,
    time_scale: float = 1.0,
    clock: Clock | None = None,
    seed: int | None = None,
    journal: Journal | None = None,
    **settings: Any,
) -> Agent:
    """An agent for the fleet simulator: in-memory journal and trust, simulated runtime,
    artifacts and vehicle state; no thread, no file, no process. Either `cloud_url` (pass
    one shared `httpx.AsyncClient` or Exchanges, the simulator's FleetLink, as `http` for
    thousands of agents) or `cloud`, any CloudPort (an in-process cloud). Settings
    (poll_s, drift_check_s, ...) go to AgentSettings; agent.parts.vehicle is the
    SimulatedStateProvider to drive."""
    if cloud is None and cloud_url is not None:
        cloud = CloudClient(cloud_url, vehicle_id, token, client=http)
    parts = AgentParts(
        journal=journal or Journal.memory(),
        trust=MemoryTrust(trust),
        runtime=SimulatedRuntime(behaviours=behaviours, time_scale=time_scale),
        vehicle=SimulatedStateProvider(vehicle or VehicleState(free_disk_mb=1e6)),
        artifacts=SimulatedArtifacts(),
        cloud=cloud,
        broker=Broker.parse(mqtt_url) if mqtt_url else None,
        clock=clock or SystemClock(),
        rng=random.Random(seed if seed is not None else vehicle_id),
    )
    return Agent(AgentSettings(vehicle_id=vehicle_id, **settings), parts)


def _token(data_dir: Path, given: str | None) -> str | None:
    """A token given once is kept (0600) in the data dir; later starts reuse it."""
    path = data_dir / TOKEN_FILE
    if given:
        atomic_write(path, given.encode(), PRIVATE_FILE_MODE)
        return given
    return path.read_text().strip() if path.exists() else None
