"""DSSE envelopes: sign the pre-authentication encoding, verify k-of-n offline.

PAE binds the payload type to the bytes, so a document signed as one kind can never be
accepted as another. Every failure here is VERIFY_SIGNATURE_FAILED.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

from muto.domain.desired import Envelope
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.trust.keys import Signer, verify
from muto.trust.keyset import KeySet

RELEASE_TYPE = "application/vnd.muto.release.v1+json"
DESIRED_STATE_TYPE = "application/vnd.muto.desired-state.v1+json"
KEY_ROTATION_TYPE = "application/vnd.muto.key-rotation.v1+json"

# Endless-data defence: no signed document of ours comes near this (base64 characters).
MAX_PAYLOAD_CHARS = 1 << 20


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSEv1 pre-authentication encoding: the exact bytes that get signed."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def digest(payload: bytes) -> str:
    return "sha256:" + hashlib.sha256(payload).hexdigest()


def sign_envelope(payload: bytes, payload_type: str, signers: Sequence[Signer]) -> Envelope:
    message = pae(payload_type, payload)
    return Envelope(
        payload_type=payload_type,
        payload=base64.b64encode(payload).decode(),
        signatures=[signer.sign(message) for signer in signers],
    )


def cosign(envelope: Envelope, signer: Signer) -> Envelope:
    """Add one more signature (k-of-n signing by separate key holders)."""
    payload = _strict_b64(envelope.payload, "payload", "$.payload")
    extra = signer.sign(pae(envelope.payload_type, payload))
    return Envelope(
        payload_type=envelope.payload_type,
        payload=envelope.payload,
        signatures=[*envelope.signatures, extra],
    )


class EnvelopeError(ReasonError):
    """VERIFY_SIGNATURE_FAILED; `path` names the envelope field whose encoding is at
    fault (`$.payload`), so that an API can answer it as a malformed field."""

    def __init__(self, detail: str, path: str | None = None) -> None:
        super().__init__(ReasonCode.VERIFY_SIGNATURE_FAILED, detail)
        self.path = path


def read_envelope(envelope: Envelope, payload_type: str) -> bytes:
    """The payload bytes of an envelope of `payload_type`, its signatures not checked:
    the first half of `open_envelope`, alone for a control plane that has no release
    keys to check registered releases against."""
    if envelope.payload_type != payload_type:
        raise EnvelopeError(f"payloadType {envelope.payload_type!r}, expected {payload_type!r}")
    if len(envelope.payload) > MAX_PAYLOAD_CHARS:
        raise EnvelopeError(f"payload larger than {MAX_PAYLOAD_CHARS} characters", "$.payload")
    return _strict_b64(envelope.payload, "payload", "$.payload")


def open_envelope(envelope: Envelope, payload_type: str, keyset: KeySet) -> bytes:
    """Return the payload bytes once `keyset.threshold` distinct trusted keys signed them.

    Signatures by unknown keys are ignored, and a key counts once however often it signs;
    only trusted, not yet counted keys cost a verification."""
    payload = read_envelope(envelope, payload_type)
    message = pae(payload_type, payload)
    trusted = keyset.trusted()
    counted: set[str] = set()
    for signature in envelope.signatures:
        key = trusted.get(signature.keyid)
        if key is None or signature.keyid in counted:
            continue
        try:
            if not verify(key, _strict_b64(signature.sig, "signature"), message):
                continue
        except ReasonError:  # not canonical base64
            continue
        counted.add(signature.keyid)
    if len(counted) < max(keyset.threshold, 1):  # never zero signatures, whatever the config
        raise EnvelopeError(
            f"{len(counted)} valid signature(s) from trusted keys, need {keyset.threshold}"
        )
    return payload


def _strict_b64(text: str, what: str, path: str | None = None) -> bytes:
    # Canonical base64 only: otherwise two different envelopes could carry one payload.
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise EnvelopeError(f"{what} is not base64", path) from None
    if base64.b64encode(raw).decode() != text:
        raise EnvelopeError(f"{what} is not canonical base64", path)
    return raw
