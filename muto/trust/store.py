"""TrustStore: the vehicle's trust configuration and accepted state, in one JSON file.

Invariants: verification never writes; `accept` is the only way TrustedState advances
and it never moves it backwards; every write replaces the whole file atomically.
One writer (the agent) at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from muto.domain.desired import Envelope
from muto.domain.wire import Wire, decode, encode
from muto.trust.config import TrustConfig, TrustedState
from muto.trust.files import atomic_write
from muto.trust.rotation import apply_key_rotation
from muto.trust.verify import VerifiedDesiredState, check_fresh


class TrustFile(Wire, frozen=True, kw_only=True):
    schema: Literal["muto.trust-store.v1"] = "muto.trust-store.v1"
    config: TrustConfig
    trusted: TrustedState


class TrustStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, path: Path, config: TrustConfig) -> TrustStore:
        """Start trusting `config` with nothing accepted yet; never overwrites."""
        if path.exists():
            raise FileExistsError(path)
        store = cls(path)
        store._write(TrustFile(config=config, trusted=TrustedState()))
        return store

    def read(self) -> TrustFile:
        return decode(self.path.read_bytes(), TrustFile)

    @property
    def config(self) -> TrustConfig:
        return self.read().config

    @property
    def trusted(self) -> TrustedState:
        return self.read().trusted

    def accept(self, verified: VerifiedDesiredState) -> TrustedState:
        """Record `verified` as the highest accepted document. Re-checks freshness against
        the file (it may have advanced since verification); an identical re-delivery is
        a no-op that does not touch the file."""
        current = self.read()
        document = verified.document
        check_fresh(document, verified.document_digest, current.trusted)
        if document.sequence == current.trusted.sequence:
            return current.trusted
        trusted = TrustedState(
            sequence=document.sequence,
            document_digest=verified.document_digest,
            revision=document.revision,
        )
        self._write(TrustFile(config=current.config, trusted=trusted))
        return trusted

    def rotate_release_keys(self, rotation: Envelope) -> TrustConfig:
        """Verify a signed KeyRotation against the stored keys and persist the new set."""
        current = self.read()
        config = apply_key_rotation(current.config, rotation)
        self._write(TrustFile(config=config, trusted=current.trusted))
        return config

    def _write(self, content: TrustFile) -> None:
        atomic_write(self.path, encode(content) + b"\n")
