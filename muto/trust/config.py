"""What a vehicle trusts (keys) and what it has already accepted (the highest revision);
and fresh keys for a whole trust root (FleetKeys)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

from muto.domain.wire import Digest, Wire
from muto.trust.keys import Signer
from muto.trust.keyset import KeySet


class TrustConfig(Wire, frozen=True, kw_only=True):
    """Release keys (k-of-n, rotated only by a signed KeyRotation) and control-plane keys.
    The two sets are separate: a control-plane compromise cannot forge a release."""

    schema: Literal["muto.trust-config.v1"] = "muto.trust-config.v1"
    release_keys: KeySet
    # Version of the release key set; a rotation must carry a higher one.
    release_keys_version: Annotated[int, msgspec.Meta(ge=1)] = 1
    control_plane_keys: KeySet


class TrustedState(Wire, frozen=True, kw_only=True):
    """The highest accepted desired-state document: the rollback/replay floor."""

    sequence: Annotated[int, msgspec.Meta(ge=0)] = 0
    document_digest: Annotated[str, Digest] | None = None
    revision: str | None = None


@dataclass(frozen=True)
class FleetKeys:
    """The private keys of a trust root, in memory: release signers (any `threshold` of
    them sign a release) and the control plane's signer; `config` is what a vehicle
    trusts for them. For throwaway fleets (tests, benchmarks): a real fleet's release
    keys are made apart and kept offline (`muto release keygen`)."""

    release_keys: list[Signer]
    control: Signer
    threshold: int = 1

    @classmethod
    def generate(cls, releasers: int = 1, threshold: int = 1) -> FleetKeys:
        return cls([Signer.generate() for _ in range(releasers)], Signer.generate(), threshold)

    @property
    def config(self) -> TrustConfig:
        return TrustConfig(
            release_keys=KeySet(
                keys=[k.public_pem for k in self.release_keys], threshold=self.threshold
            ),
            control_plane_keys=KeySet(keys=[self.control.public_pem]),
        )
