"""The agent's view of the trust store: what it verifies against, records acceptance in
and rotates release keys in.

`TrustStore` (muto.trust) is the real one, a file in the data dir; `MemoryTrust` is for
in-process agents of the fleet simulator, with the same accept-only-forward rule and the
same rotation rule.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from muto.domain.desired import Envelope
from muto.domain.wire import decode
from muto.trust import (
    TrustConfig,
    TrustedState,
    TrustStore,
    VerifiedDesiredState,
    apply_key_rotation,
)
from muto.trust.keyset import KeySet
from muto.trust.verify import check_fresh

TRUST_FILE = "trust.json"

logger = logging.getLogger("muto.agent")


class Trust(Protocol):
    @property
    def config(self) -> TrustConfig: ...

    @property
    def trusted(self) -> TrustedState: ...

    def accept(self, verified: VerifiedDesiredState) -> TrustedState: ...

    def rotate_release_keys(self, rotation: Envelope) -> TrustConfig:
        """Verify a signed KeyRotation against the keys in force and keep the new set
        (persisted before it returns); ReasonError as `apply_key_rotation`."""
        ...


class MemoryTrust:
    def __init__(self, config: TrustConfig, trusted: TrustedState | None = None) -> None:
        self.config = config
        self.trusted = trusted or TrustedState()

    def accept(self, verified: VerifiedDesiredState) -> TrustedState:
        document = verified.document
        check_fresh(document, verified.document_digest, self.trusted)
        if document.sequence != self.trusted.sequence:
            self.trusted = TrustedState(
                sequence=document.sequence,
                document_digest=verified.document_digest,
                revision=document.revision,
            )
        return self.trusted

    def rotate_release_keys(self, rotation: Envelope) -> TrustConfig:
        self.config = apply_key_rotation(self.config, rotation)
        return self.config


def provision(data_dir: Path, config_file: Path | None) -> TrustStore:
    """The data dir's trust store. The first start creates it from `config_file` (a
    TrustConfig JSON); later starts use the stored one and ignore the file, so a
    re-deployed unit file cannot swap the keys a vehicle already trusts (a warning says
    so when the file's keys differ: release keys change by a KeyRotation only).

    Either is read whole here: a damaged one stops the start (ValueError naming the file
    and the field), rather than failing every pass of an agent that looks alive."""
    path = data_dir / TRUST_FILE
    if path.exists():
        store = TrustStore(path)
        try:
            store.read()
        except (OSError, ValueError) as exc:  # WireError names the field
            raise ValueError(f"trust store {path} is damaged or unreadable: {exc}") from None
        if config_file is not None:
            _warn_if_ignored(config_file, store.config, path)
        return store
    if config_file is None:
        raise FileNotFoundError(f"{path} does not exist: provision it with --trust FILE")
    try:
        config = decode(config_file.read_bytes(), TrustConfig)
    except ValueError as exc:
        raise ValueError(f"--trust {config_file}: {exc}") from None
    return TrustStore.create(path, config)


def _warn_if_ignored(config_file: Path, stored: TrustConfig, path: Path) -> None:
    """A `--trust` file whose keys differ from the stored ones is ignored, and said so at
    start: an operator who re-provisioned keys that way would otherwise believe the
    vehicle trusts them. Release keys that came by a rotation (key set version above 1)
    differ from the unit's file by design: not compared, or every vehicle of a fleet that
    rotated would warn at every start."""
    try:
        given = decode(config_file.read_bytes(), TrustConfig)
    except (OSError, ValueError) as exc:  # only a first start needs it: not fatal here
        logger.warning("--trust %s ignored (trust store %s in use): %s", config_file, path, exc)
        return
    compared = [
        (
            "control-plane keys",
            given.control_plane_keys,
            stored.control_plane_keys,
            "control-plane keys change only by provisioning the vehicle again",
        )
    ]
    if stored.release_keys_version > 1:
        logger.debug(
            "--trust %s: its release keys not compared: the trust store %s holds key set "
            "version %d, rotated from the provisioned one by a KeyRotation",
            config_file,
            path,
            stored.release_keys_version,
        )
    else:
        compared.insert(
            0,
            (
                "release keys",
                given.release_keys,
                stored.release_keys,
                "release keys change only by a published KeyRotation (muto release rotate-keys)",
            ),
        )
    for name, theirs, ours, how in compared:
        if _named(theirs) != _named(ours):
            logger.warning(
                "--trust %s ignored: it names %s %s, the trust store %s trusts %s; the file "
                "is read on the first start only, %s (docs/trust.md)",
                config_file,
                name,
                _named(theirs),
                path,
                _named(ours),
                how,
            )


def _named(keys: KeySet) -> str:
    """The threshold and key ids (as `muto release keygen` prints them): `2 of [ab.., ..]`."""
    return f"{keys.threshold} of [{', '.join(sorted(keys.trusted()))}]"
