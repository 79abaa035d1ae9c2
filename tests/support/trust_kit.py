"""Builders shared by the trust tests: a fleet's keys, a good release,
a good desired-state document and the bundle that carries both, and ways to spoil an
envelope's signatures."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec

from muto.domain.desired import (
    AgentConfig,
    DesiredStateBundle,
    DesiredStateDocument,
    Envelope,
    Policy,
    Signature,
    StackRef,
)
from muto.domain.release import Artifact, ArtifactType, StackRelease
from muto.trust import (
    FleetKeys,
    Signer,
    manifest_digest,
    sign_desired_state,
    sign_release,
)
from tests.support.releases import stack_release

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
VEHICLE = "veh-001"


def a_release(version: str = "1.2.0", payload: bytes = b"wheel bytes") -> StackRelease:
    return stack_release(
        "perception",
        version,
        [
            Artifact(
                type=ArtifactType.PYTHON_WHEEL,
                ref=f"https://artifacts.example/perception-{version}-py3-none-any.whl",
                digest="sha256:" + hashlib.sha256(payload).hexdigest(),
                size=len(payload),
                dist_name="perception",
            )
        ],
    )


def a_document(
    release: StackRelease, sequence: int, vehicle: str = VEHICLE, **changes: object
) -> DesiredStateDocument:
    doc = DesiredStateDocument(
        vehicle_id=vehicle,
        revision=f"rev-{sequence}",
        sequence=sequence,
        stack=StackRef(
            name=release.stack_name,
            version=release.version,
            manifest_digest=manifest_digest(release),
        ),
        policy=Policy(),
        agent_config=AgentConfig(),
        correlation_id=f"corr-{sequence}",
        issued_at=NOW - timedelta(hours=1),
        expires_at=NOW + timedelta(days=1),
    )
    return msgspec.structs.replace(doc, **changes)


@dataclass(frozen=True)
class Fleet(FleetKeys):
    """Three release keys (2-of-3) and one control-plane key."""

    release_keys: list[Signer] = field(default_factory=lambda: [Signer.generate() for _ in "abc"])
    control: Signer = field(default_factory=Signer.generate)
    threshold: int = 2

    def bundle(self, document: DesiredStateDocument, release: StackRelease) -> DesiredStateBundle:
        return DesiredStateBundle(
            desired_state=sign_desired_state(document, self.control),
            release=sign_release(release, self.release_keys[:2]),
        )


def flip_signature(envelope: Envelope) -> Envelope:
    raw = bytearray(base64.b64decode(envelope.signatures[0].sig))
    raw[10] ^= 0x01
    bad = Signature(keyid=envelope.signatures[0].keyid, sig=base64.b64encode(raw).decode())
    return msgspec.structs.replace(envelope, signatures=[bad, *envelope.signatures[1:]])


def unsigned(envelope: Envelope) -> Envelope:
    return msgspec.structs.replace(envelope, signatures=[])
