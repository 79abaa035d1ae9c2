"""Release key rotation: a new key set is trusted only on the word of the current one.

Like a TUF root rotation, the new set must also meet its own threshold, proving the
new keys work before the vehicle depends on them (a typo cannot lock a fleet out).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import msgspec

from muto.domain.desired import Envelope
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.wire import Wire, WireError, canonical, decode
from muto.trust.config import TrustConfig
from muto.trust.dsse import KEY_ROTATION_TYPE, open_envelope, read_envelope, sign_envelope
from muto.trust.keys import Signer
from muto.trust.keyset import KeySet


class KeyRotation(Wire, frozen=True, kw_only=True):
    schema: Literal["muto.key-rotation.v1"] = "muto.key-rotation.v1"
    version: Annotated[int, msgspec.Meta(ge=2)]
    release_keys: KeySet


def sign_key_rotation(rotation: KeyRotation, signers: Sequence[Signer]) -> Envelope:
    """`signers`: at least the current threshold of current keys and the new threshold
    of new keys (one key may be in both)."""
    return sign_envelope(canonical(rotation), KEY_ROTATION_TYPE, signers)


def read_key_rotation(envelope: Envelope) -> KeyRotation:
    """The rotation an envelope carries, its signatures NOT checked: only to tell by its
    version whether a vehicle already applied it (one that lies about its version is
    either skipped, changing nothing, or refused by `apply_key_rotation`). Raises
    VERIFY_SIGNATURE_FAILED for one that is not a KeyRotation."""
    return _decoded(read_envelope(envelope, KEY_ROTATION_TYPE))


def apply_key_rotation(config: TrustConfig, envelope: Envelope) -> TrustConfig:
    """The config with the rotated release keys; pure. Raises VERIFY_SIGNATURE_FAILED
    or STALE_REVISION (a replayed or older rotation)."""
    rotation = _decoded(open_envelope(envelope, KEY_ROTATION_TYPE, config.release_keys))
    open_envelope(envelope, KEY_ROTATION_TYPE, rotation.release_keys)
    if rotation.version <= config.release_keys_version:
        raise ReasonError(
            ReasonCode.STALE_REVISION,
            f"key set version {rotation.version}, trusted {config.release_keys_version}",
        )
    return msgspec.structs.replace(
        config, release_keys=rotation.release_keys, release_keys_version=rotation.version
    )


def _decoded(payload: bytes) -> KeyRotation:
    try:
        return decode(payload, KeyRotation)
    except WireError as exc:  # a field, or a KeySet nobody could satisfy
        raise ReasonError(ReasonCode.VERIFY_SIGNATURE_FAILED, f"key rotation: {exc}") from None
