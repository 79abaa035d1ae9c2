"""A set of trusted public keys and how many of them must sign (k-of-n)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from muto.domain.wire import Wire
from muto.trust.keys import KeyFileError, keyid, load_public_pem


class KeySet(Wire, frozen=True, kw_only=True):
    """PEM public keys (Ed25519) and a threshold. Keys are counted by key id, so the
    same key listed twice is one key; the threshold can never exceed the distinct keys
    (a key set nobody can satisfy would lock the fleet out)."""

    keys: list[str]
    threshold: Annotated[int, msgspec.Meta(ge=1)] = 1

    def __post_init__(self) -> None:
        # msgspec checks Meta(ge=1) only when decoding; a KeySet built in code with
        # threshold 0 would accept unsigned documents, so check it here too.
        if self.threshold < 1:
            raise ValueError(f"threshold {self.threshold} is below 1")
        try:
            distinct = len(self.trusted())
        except KeyFileError as exc:
            raise ValueError(str(exc)) from None
        if self.threshold > distinct:
            raise ValueError(f"threshold {self.threshold} exceeds {distinct} distinct keys")

    def trusted(self) -> dict[str, Ed25519PublicKey]:
        """Key id -> public key."""
        keys = (load_public_pem(pem) for pem in self.keys)
        return {keyid(key): key for key in keys}
