"""Builders and fakes shared by the agent tests: signed bundles, a fake cloud that
implements the agent's ports, a hand-driven clock."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from muto.agent.agent import Agent
from muto.agent.artifacts import SimulatedArtifacts
from muto.agent.journal import Journal
from muto.agent.journal.events import DesiredVerified
from muto.agent.journal.state import JournalState, Running
from muto.agent.parts import AgentParts, AgentSettings
from muto.agent.runtime.base import SelfFetcher
from muto.agent.runtime.simulated import SimulatedBehaviour, SimulatedRuntime
from muto.agent.safety import SimulatedStateProvider
from muto.agent.transport.http import Delivery, Fetched, NotFetched, RetryLater
from muto.agent.trust import MemoryTrust
from muto.domain.broker import Broker
from muto.domain.desired import (
    AgentConfig,
    DesiredStateBundle,
    DesiredStateDocument,
    Policy,
    StackRef,
)
from muto.domain.release import HealthModel, StackRelease
from muto.domain.vehicle_state import VehicleState
from muto.trust import KeySet, Signer, TrustConfig, manifest_digest
from muto.trust.desired_state import sign_desired_state
from tests.support.releases import signed, stack_release

VEHICLE = "v-0001"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def release(version: str, stack: str = "nav", **health: Any) -> StackRelease:
    """A release the simulated runtime judges quickly (readiness within 5 s)."""
    return stack_release(
        stack, version, health=HealthModel(**{"readiness_timeout_sec": 5, **health})
    )


class ManualClock:
    """Wall and monotonic time that move only when told."""

    def __init__(self, at: datetime = T0) -> None:
        self.at = at
        self.mono = 0.0

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)
        self.mono += seconds


@dataclass
class Signers:
    release: Signer = field(default_factory=Signer.generate)
    control_plane: Signer = field(default_factory=Signer.generate)

    @property
    def trust(self) -> TrustConfig:
        return TrustConfig(
            release_keys=KeySet(keys=[self.release.public_pem]),
            control_plane_keys=KeySet(keys=[self.control_plane.public_pem]),
        )

    def bundle(
        self,
        target: StackRelease,
        sequence: int,
        *,
        vehicle_id: str = VEHICLE,
        policy: Policy | None = None,
        config: AgentConfig | None = None,
        issued: datetime = T0 - timedelta(hours=1),
        ttl: timedelta = timedelta(days=30),
        release_signer: Signer | None = None,
        revision: str | None = None,
    ) -> DesiredStateBundle:
        document = DesiredStateDocument(
            vehicle_id=vehicle_id,
            revision=revision or f"dsr_{sequence}",
            sequence=sequence,
            stack=StackRef(
                name=target.stack_name,
                version=target.version,
                manifest_digest=manifest_digest(target),
            ),
            policy=policy or Policy(),
            agent_config=config or AgentConfig(),
            correlation_id=f"c{sequence}",
            issued_at=issued,
            expires_at=issued + ttl,
        )
        return DesiredStateBundle(
            desired_state=sign_desired_state(document, self.control_plane),
            release=signed(target, release_signer or self.release).envelope,
        )


@dataclass
class FakeCloud:
    """The agent's DesiredSource and ReportSink: serves one bundle with an ETag,
    records delivered reports, and goes offline on request."""

    bundle: DesiredStateBundle | None = None
    online: bool = True
    refuse: set[str] = field(default_factory=set)  # report ids answered 422
    retry_after: float | None = None  # fetches answered 429 with this Retry-After
    unheard: int = 0  # fetches answered 304 by an API process that has not heard yet
    fetches: int = 0
    reports: list[dict[str, Any]] = field(default_factory=list)
    _etags: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    etag: str | None = None

    def serve(self, bundle: DesiredStateBundle) -> None:
        self.bundle, self.etag = bundle, f'"e{next(self._etags)}"'

    async def latest(self, etag: str | None) -> Fetched | NotFetched:
        self.fetches += 1
        if not self.online:
            return NotFetched("unreachable", "offline")
        if self.retry_after is not None:
            after = self.retry_after
            return NotFetched(
                "unreachable", RetryLater(f"HTTP 429, retry after {after:g} s", after)
            )
        if self.bundle is None:
            return NotFetched("none_assigned")
        if self.unheard:
            self.unheard -= 1
            return NotFetched("not_modified")
        if etag == self.etag:
            return NotFetched("not_modified")
        document = msgspec.json.decode(
            __import__("base64").b64decode(self.bundle.desired_state.payload)
        )
        return Fetched(self.bundle, self.etag, document["revision"], document["sequence"])

    async def deliver(self, kind: str, body: bytes) -> tuple[Delivery, str]:
        if not self.online:
            return "retry", "offline"
        report = msgspec.json.decode(body)
        if report["reportId"] in self.refuse:
            return "drop", "HTTP 422"
        self.reports.append({"kind": kind, **report})
        return "ack", "HTTP 200"

    async def aclose(self) -> None:
        pass

    def reconcile_reports(self) -> list[tuple[str | None, str, list[str]]]:
        return [
            (r["desiredStateRevision"], r["status"], r["reasonCodes"])
            for r in self.reports
            if r["kind"] == "reconcile"
        ]


@dataclass
class Rig:
    """One in-process agent on fakes, driven pass by pass."""

    signers: Signers
    cloud: FakeCloud
    runtime: SimulatedRuntime
    vehicle: SimulatedStateProvider
    artifacts: SimulatedArtifacts
    clock: ManualClock
    journal: Journal
    agent: Agent

    async def reconcile(self) -> Any:
        return await self.agent.reconcile()

    async def deliver(self) -> bool:
        return await self.agent.courier.drain()

    def restart(self, **settings: Any) -> Rig:
        """A new agent on the same journal (the runtime forgets: a real restart)."""
        return make_rig(
            signers=self.signers,
            cloud=self.cloud,
            journal=self.journal,
            clock=self.clock,
            vehicle=self.vehicle,
            behaviours=self.runtime.behaviours,
            artifacts=self.artifacts,
            time_scale=self.runtime.time_scale,
            **settings,
        )


def make_rig(
    *,
    signers: Signers | None = None,
    cloud: FakeCloud | None = None,
    journal: Journal | None = None,
    clock: ManualClock | None = None,
    vehicle: SimulatedStateProvider | None = None,
    behaviours: Any = None,
    artifacts: SimulatedArtifacts | None = None,
    time_scale: float = 1e-6,
    broker: Broker | None = None,
    fetcher: SelfFetcher | None = None,
    **settings: Any,
) -> Rig:
    """`clock` may be the system's (a `SystemClock`, for the agent's own loop); `fetcher`:
    the runtime's own images (SimulatedImages)."""
    signers = signers or Signers()
    cloud = cloud or FakeCloud()
    clock = clock or ManualClock()
    journal = journal or Journal.memory()
    vehicle = vehicle or SimulatedStateProvider(VehicleState(free_disk_mb=100_000))
    runtime = SimulatedRuntime(
        behaviours=behaviours or {}, clock=clock.monotonic, time_scale=time_scale, fetcher=fetcher
    )
    artifacts = artifacts or SimulatedArtifacts()
    parts = AgentParts(
        journal=journal,
        trust=MemoryTrust(signers.trust),
        runtime=runtime,
        vehicle=vehicle,
        artifacts=artifacts,
        cloud=cloud,
        clock=clock,
        broker=broker,
    )
    agent = Agent(AgentSettings(vehicle_id=VEHICLE, **settings), parts)
    return Rig(signers, cloud, runtime, vehicle, artifacts, clock, journal, agent)


def failing(
    apply: bool = False, ready: bool = True, crash_loop: bool = False
) -> SimulatedBehaviour:
    return SimulatedBehaviour(
        apply_fails=apply,
        ready_after_sec=0.0 if ready else None,
        restart_every_sec=0.001 if crash_loop else None,
    )


def codes(values: Sequence[Any]) -> list[str]:
    return [str(v) for v in values]


# A whole agent driven by hand (tests/unit/test_agent_reconcile.py and the retry rules).
A, B, C = release("1.0.0"), release("2.0.0"), release("3.0.0")
MOVING = VehicleState(speed_mps=4.0, free_disk_mb=100_000)
PARKED = VehicleState(free_disk_mb=100_000)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def types(rig: Rig, after: int = 0) -> list[str]:
    return [type(r.event).__name__ for r in rig.journal.records(after)]


async def started(**kwargs: Any) -> Rig:
    rig = make_rig(**kwargs)
    await rig.agent.start(loop=False)
    return rig


async def restarted(rig: Rig) -> Rig:
    """`rig`'s agent restarted on its journal and started (its start-up pass run)."""
    again = rig.restart()
    await again.agent.start(loop=False)
    return again


async def converged_on(rig: Rig, target: Any, sequence: int) -> None:
    rig.cloud.serve(rig.signers.bundle(target, sequence))
    verdict = await rig.reconcile()
    assert verdict.kind == "converged", verdict
    await rig.deliver()


def desired_of(
    target: StackRelease, sequence: int = 2, policy: Policy | None = None, ttl_h: float = 24
) -> DesiredVerified:
    document = DesiredStateDocument(
        vehicle_id="v",
        revision=f"dsr_{sequence}",
        sequence=sequence,
        stack=StackRef(name=target.stack_name, version=target.version),
        policy=policy or Policy(),
        agent_config=AgentConfig(),
        correlation_id="c",
        issued_at=T0 - timedelta(hours=1),
        expires_at=T0 + timedelta(hours=ttl_h),
    )
    return DesiredVerified(
        at=T0,
        revision=document.revision,
        sequence=sequence,
        document=document,
        release=target,
        document_digest="sha256:" + "1" * 64,
        release_digest="sha256:" + "2" * 64,
    )


def journal_of(
    desired: DesiredVerified | None = None, running_key: str | None = None, **fields: object
) -> JournalState:
    """A journal's state that desires `desired` and runs `running_key` (known good)."""
    state = JournalState(desired=desired, **fields)  # type: ignore[arg-type]
    state.releases = {r.key: r for r in (A, B, C)}
    if running_key is not None:
        state.running = Running(key=running_key, since=T0, position=1, revision=None, cause="x")
        if running_key not in state.known_good:
            state.known_good = [*state.known_good, running_key]
    return state
