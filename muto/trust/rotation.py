"""Release key rotation: a new key set is trusted only on the word of the current one.

Like a TUF root rotation, the new set must also meet its own threshold, proving the
new keys work before the vehicle depends on them (a typo cannot lock a fleet out).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal, NamedTuple

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


def decode_key_rotation(envelope: Envelope) -> KeyRotation:
    """What a rotation's envelope says, its signatures NOT checked. EnvelopeError
    (VERIFY_SIGNATURE_FAILED) for another payload type; WireError naming the rotation's
    bad field (`key rotation: ... at $.releaseKeys.threshold`), for an API to answer."""
    try:
        return decode(read_envelope(envelope, KEY_ROTATION_TYPE), KeyRotation)
    except WireError as exc:  # a field, or a KeySet nobody could satisfy
        at = f" at {exc.path}" if exc.path else ""
        raise WireError(f"key rotation: {exc.message}{at}", "$.payload") from None


def read_key_rotation(envelope: Envelope) -> KeyRotation:
    """As `decode_key_rotation`, every fault VERIFY_SIGNATURE_FAILED: to tell by its
    version whether a vehicle already applied it (one that lies about its version is
    either skipped, changing nothing, or refused by `apply_key_rotation`)."""
    try:
        return decode_key_rotation(envelope)
    except WireError as exc:
        raise ReasonError(ReasonCode.VERIFY_SIGNATURE_FAILED, str(exc)) from None


def apply_key_rotation(config: TrustConfig, envelope: Envelope) -> TrustConfig:
    """The config with the rotated release keys; pure. Raises VERIFY_SIGNATURE_FAILED
    (not signed by the threshold of the keys in force, or of its own new keys) or
    STALE_REVISION (a replayed or older rotation)."""
    rotation = read_key_rotation(envelope)
    open_envelope(envelope, KEY_ROTATION_TYPE, config.release_keys)
    open_envelope(envelope, KEY_ROTATION_TYPE, rotation.release_keys)
    if rotation.version <= config.release_keys_version:
        raise ReasonError(
            ReasonCode.STALE_REVISION,
            f"key set version {rotation.version}, trusted {config.release_keys_version}",
        )
    return msgspec.structs.replace(
        config, release_keys=rotation.release_keys, release_keys_version=rotation.version
    )


class Refused(NamedTuple):
    """A rotation a walk could not follow: its version (None: not a KeyRotation at all)
    and why (`error.code`, `error.detail`)."""

    envelope: Envelope
    version: int | None
    error: ReasonError


class Followed(NamedTuple):
    """Where a walk of the chain ended: the config with the keys in force, the rotations
    that took it there (in order; each one `apply_key_rotation` accepts on the config
    before it), and the newest rotation it could not follow and that the keys in force
    have not passed (None: none such)."""

    config: TrustConfig
    applied: list[Envelope]
    refused: Refused | None


def follow_chain(config: TrustConfig, chain: Sequence[Envelope]) -> Followed:
    """The release keys in force after the published `chain` (oldest first); pure. The
    one walk of the vehicles (intake) and of the control plane (cloud/signing.py).

    First a fast-forward: keys provisioned at a later set of the chain (a vehicle set up
    after a rotation, still at version 1) are that set at its version, taken from the
    newest rotation to exactly these keys and threshold that they signed themselves (a
    rotation to a set is signed by that set): it grants no key, only the version; the
    signatures are what stop a forged one from raising the version past the genuine
    rotations that follow. Then each rotation newer than the keys in force is applied in
    order, signed by the keys in force and by its own (`apply_key_rotation`). One that
    is not is passed over, and the walk goes on: the chain only grows, so stopping there
    would hold the vehicle at these keys for good, where a later rotation these very keys
    signed (the way back from a rotation the fleet could not follow, docs/trust.md) can
    still take it on. Passing over grants nothing: every rotation applied is signed by
    the keys in force when it comes."""
    applied: list[Envelope] = []
    refusals: list[Refused] = []
    ahead = _fast_forward(config, chain)
    if ahead is not None:
        config = apply_key_rotation(config, ahead)
        applied.append(ahead)
    for envelope in chain:
        try:
            version = read_key_rotation(envelope).version
        except ReasonError as exc:
            refusals.append(Refused(envelope, None, exc))
            continue
        if version <= config.release_keys_version:
            continue  # applied before (or fast-forwarded over)
        try:
            config = apply_key_rotation(config, envelope)
        except ReasonError as exc:
            refusals.append(Refused(envelope, version, exc))
            continue
        applied.append(envelope)
    behind = config.release_keys_version
    pending = [r for r in refusals if r.version is None or r.version > behind]
    return Followed(config, applied, pending[-1] if pending else None)


def _fast_forward(config: TrustConfig, chain: Sequence[Envelope]) -> Envelope | None:
    """The newest rotation of `chain` above the trusted version to the very keys in
    force (the same key ids and threshold) that those keys signed, if any."""
    ours = _named(config.release_keys)
    found: tuple[int, Envelope] | None = None
    for envelope in chain:
        try:
            rotation = read_key_rotation(envelope)
        except ReasonError:
            continue
        newer = rotation.version > (config.release_keys_version if found is None else found[0])
        if not newer or _named(rotation.release_keys) != ours:
            continue
        try:
            apply_key_rotation(config, envelope)
        except ReasonError:
            continue  # not signed by these keys: no version on its word
        found = (rotation.version, envelope)
    return None if found is None else found[1]


def _named(keys: KeySet) -> tuple[frozenset[str], int]:
    """A key set as compared: its distinct key ids and threshold (PEM text may differ)."""
    return frozenset(keys.trusted()), keys.threshold
