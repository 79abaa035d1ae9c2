"""Per-vehicle desired-state documents, signed by the control plane's own key."""

from __future__ import annotations

from muto.domain.desired import DesiredStateDocument, Envelope
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.wire import WireError, canonical, decode
from muto.trust.dsse import DESIRED_STATE_TYPE, digest, open_envelope, sign_envelope
from muto.trust.keys import Signer
from muto.trust.keyset import KeySet


def sign_desired_state(doc: DesiredStateDocument, key: Signer) -> Envelope:
    return sign_envelope(canonical(doc), DESIRED_STATE_TYPE, [key])


def open_desired_state(envelope: Envelope, keyset: KeySet) -> tuple[DesiredStateDocument, str]:
    """The verified document and the digest of its signed bytes."""
    payload = open_envelope(envelope, DESIRED_STATE_TYPE, keyset)
    try:
        document = decode(payload, DesiredStateDocument)
    except WireError as exc:
        raise ReasonError(ReasonCode.VERIFY_SIGNATURE_FAILED, f"desired state: {exc}") from None
    return document, digest(payload)
