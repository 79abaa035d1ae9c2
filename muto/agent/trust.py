"""The agent's view of the trust store: what it verifies against and records acceptance in.

`TrustStore` (muto.trust) is the real one, a file in the data dir; `MemoryTrust` is for
in-process agents of the fleet simulator, with the same accept-only-forward rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from muto.domain.wire import decode
from muto.trust import TrustConfig, TrustedState, TrustStore, VerifiedDesiredState
from muto.trust.verify import check_fresh

TRUST_FILE = "trust.json"


class Trust(Protocol):
    @property
    def config(self) -> TrustConfig: ...

    @property
    def trusted(self) -> TrustedState: ...

    def accept(self, verified: VerifiedDesiredState) -> TrustedState: ...


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


def provision(data_dir: Path, config_file: Path | None) -> TrustStore:
    """The data dir's trust store. The first start creates it from `config_file` (a
    TrustConfig JSON); later starts use the stored one and ignore the file, so a
    re-deployed unit file cannot swap the keys a vehicle already trusts.

    Either is read whole here: a damaged one stops the start (ValueError naming the file
    and the field), rather than failing every pass of an agent that looks alive."""
    path = data_dir / TRUST_FILE
    if path.exists():
        store = TrustStore(path)
        try:
            store.read()
        except (OSError, ValueError) as exc:  # WireError names the field
            raise ValueError(f"trust store {path} is damaged or unreadable: {exc}") from None
        return store
    if config_file is None:
        raise FileNotFoundError(f"{path} does not exist: provision it with --trust FILE")
    try:
        config = decode(config_file.read_bytes(), TrustConfig)
    except ValueError as exc:
        raise ValueError(f"--trust {config_file}: {exc}") from None
    return TrustStore.create(path, config)
