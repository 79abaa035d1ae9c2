"""Journal events: a vehicle's life, built with the agent's own report builders."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from bench.agent.common import HEALTH_PER_ROLLOUT
from muto.agent.journal import JournalState
from muto.agent.journal import events as ev
from muto.agent.journal.fold import evolve
from muto.agent.journal.state import Outcome
from muto.agent.reports import health_event, reconcile_event
from muto.agent.runtime.base import RuntimeStatus
from muto.domain.desired import (
    AgentConfig,
    ApplyWindow,
    DesiredStateDocument,
    Policy,
    StackRef,
)
from muto.domain.release import (
    Artifact,
    ArtifactType,
    Compatibility,
    HealthModel,
    Launch,
    StackRelease,
)
from muto.domain.reports import ReconcileStatus
from muto.domain.wire import encode

T0 = datetime(2026, 1, 5, 1, 0, tzinfo=UTC)  # 02:00 in Berlin: inside the apply window
POLICY = Policy(
    apply_window=ApplyWindow(start_local="22:00", end_local="05:00"),
    require_battery_pct_min=30,
)


def bench_release(version: int) -> StackRelease:
    digest = "sha256:" + hashlib.sha256(f"nav-{version}".encode()).hexdigest()
    return StackRelease(
        stack_name="nav",
        version=f"1.{version}.0",
        artifacts=[
            Artifact(
                type=ArtifactType.ARCHIVE,
                ref=f"nav-1.{version}.0.tar.gz",
                digest=digest,
                size=48 << 20,
            )
        ],
        launch=Launch(command=["/opt/nav/bin/run", "--config", "/etc/nav.yaml"]),
        compatibility=Compatibility(
            vehicle_models=["m3"], os=["ubuntu-22.04"], ros_distro=["humble"]
        ),
        health_model=HealthModel(readiness_probe=["/opt/nav/bin/ready"]),
    )


def verified(version: int, at: datetime) -> ev.DesiredVerified:
    release = bench_release(version)
    document = DesiredStateDocument(
        vehicle_id="bench-car",
        revision=f"dsr_{version:020d}",
        sequence=version,
        stack=StackRef(name="nav", version=release.version, manifest_digest="sha256:" + "3" * 64),
        policy=POLICY,
        agent_config=AgentConfig(),
        correlation_id=f"rollout-{version}",
        issued_at=at,
        expires_at=at + timedelta(days=30),
    )
    return ev.DesiredVerified(
        at=at,
        revision=document.revision,
        sequence=version,
        document=document,
        release=release,
        document_digest="sha256:" + hashlib.sha256(encode(document)).hexdigest(),
        release_digest="sha256:" + hashlib.sha256(encode(release)).hexdigest(),
    )


def rollout(version: int, state: JournalState, at: datetime) -> Iterator[ev.Event]:
    """What one converging rollout journals; `state` is folded between events."""
    desired = verified(version, at)
    key, digest = desired.release.key, desired.release.artifacts[0].digest
    yield ev.AgentStarted(at=at, agent_version="0.1.0", runtime="process")
    yield ev.DesiredReceived(
        at=at, revision=desired.revision, sequence=version, etag=f'"{version}"'
    )
    yield desired
    yield ev.GatesEvaluated(at=at, revision=desired.revision, sequence=version, codes=[])
    yield ev.ArtifactCached(at=at, digest=digest, size=48 << 20, release_key=key)
    yield ev.ArtifactsVerified(at=at, release_key=key, digests=[digest])
    yield ev.ApplyStarted(
        at=at,
        release_key=key,
        revision=desired.revision,
        sequence=version,
        replacing=state.running_key,
    )
    yield ev.ApplySucceeded(at=at, release_key=key, apply_sec=2.5)
    yield ev.ReadinessPassed(at=at, release_key=key, readiness_sec=4.0)
    outcome = Outcome(revision=desired.revision, sequence=version, status=ReconcileStatus.CONVERGED)
    queued = reconcile_event("bench-car", state, outcome, at)
    yield queued
    yield ev.ReportDelivered(at=at, report_id=queued.report_id, via="http")


def health(state: JournalState, at: datetime) -> Iterator[ev.Event]:
    runtime = RuntimeStatus(
        release=state.running_key, alive=True, restart_count=0, crash_looping=False
    )
    queued = health_event("bench-car", state, runtime, at)
    yield queued
    yield ev.ReportDelivered(at=at, report_id=queued.report_id, via="http")


def life() -> Iterator[ev.Event]:
    """Endless: a rollout, then HEALTH_PER_ROLLOUT periodic health reports, again."""
    state, at, version = JournalState(), T0, 0
    while True:
        version += 1
        steps = [rollout(version, state, at)]
        for i in range(HEALTH_PER_ROLLOUT):
            steps.append(health(state, at + timedelta(minutes=5 * (i + 1))))
        for events in steps:
            for event in events:
                state.position += 1
                evolve(state, event)
                yield event
        at += timedelta(minutes=5 * (HEALTH_PER_ROLLOUT + 1))
