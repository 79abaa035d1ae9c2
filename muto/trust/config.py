"""What a vehicle trusts (keys) and what it has already accepted (the highest revision)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from muto.domain.wire import Digest, Wire
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
