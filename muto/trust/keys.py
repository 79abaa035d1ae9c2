"""Ed25519 keys: generation, PEM files, key ids, and the `Signer` used for every signature.

A key id is the hex sha256 of the raw 32-byte public key, so it names the key itself
and never depends on how the key was encoded.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from muto.domain.desired import Signature
from muto.trust.files import PRIVATE_FILE_MODE, PUBLIC_FILE_MODE, atomic_write, write_new

PRIVATE_KEY_MODE = PRIVATE_FILE_MODE


class KeyFileError(ValueError):
    """A key file or PEM string is unreadable or not an Ed25519 key."""


def keyid(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_pem(pem: str | bytes) -> Ed25519PublicKey:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"not an Ed25519 public key: {type(key).__name__}")
    return key


@dataclass(frozen=True)
class Signer:
    """A private key and its key id: what signs releases, desired state and rotations."""

    private_key: Ed25519PrivateKey
    keyid: str

    @classmethod
    def generate(cls) -> Signer:
        return cls.from_private_key(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_key(cls, private_key: Ed25519PrivateKey) -> Signer:
        return cls(private_key, keyid(private_key.public_key()))

    @classmethod
    def load(cls, path: Path) -> Signer:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise KeyFileError(f"{path}: not an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{path}: not an Ed25519 private key")
        return cls.from_private_key(key)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def public_pem(self) -> str:
        return public_pem(self.public_key)

    def sign(self, message: bytes) -> Signature:
        sig = self.private_key.sign(message)
        return Signature(keyid=self.keyid, sig=base64.b64encode(sig).decode())


def write_key_pair(signer: Signer, private_path: Path, public_path: Path) -> None:
    """Write PKCS8 PEM (mode 0600, never overwriting) and the public PEM beside it."""
    pem = signer.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # An existing key is never silently replaced; its bytes are never readable by others.
    write_new(private_path, pem, PRIVATE_KEY_MODE)
    # A trust anchor: readable by all, writable by its owner only, whatever the umask.
    atomic_write(public_path, signer.public_pem.encode(), PUBLIC_FILE_MODE)
