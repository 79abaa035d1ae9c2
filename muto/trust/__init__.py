"""The trust chain: signed releases, signed desired state, offline verification.

The agent calls `verify_bundle` then `TrustStore.accept`; the cloud calls
`sign_desired_state`; the release process uses `muto release sign`.
"""

from muto.trust.config import FleetKeys, TrustConfig, TrustedState
from muto.trust.desired_state import open_desired_state, sign_desired_state
from muto.trust.keys import Signer
from muto.trust.keyset import KeySet
from muto.trust.releases import manifest_digest, open_release, sign_release
from muto.trust.rotation import KeyRotation, apply_key_rotation, sign_key_rotation
from muto.trust.store import TrustStore
from muto.trust.verify import AuthenticDocumentRejected, VerifiedDesiredState, verify_bundle

__all__ = [
    "AuthenticDocumentRejected",
    "FleetKeys",
    "KeyRotation",
    "KeySet",
    "Signer",
    "TrustConfig",
    "TrustStore",
    "TrustedState",
    "VerifiedDesiredState",
    "apply_key_rotation",
    "manifest_digest",
    "open_desired_state",
    "open_release",
    "sign_desired_state",
    "sign_key_rotation",
    "sign_release",
    "verify_bundle",
]
