"""Ed25519 keys: generation, PEM files, key ids, the `Signer` used for every signature
and `verify`.

A key id is the hex sha256 of the raw 32-byte public key, so it names the key itself
and never depends on how the key was encoded. Trusted public keys are read and counted
as raw bytes and signatures checked by libsodium (`verify`); cryptography (its own
OpenSSL: ~8 MiB of RSS) is imported only to make keys and signatures, which a vehicle's
agent never does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from muto.domain.desired import Signature
from muto.trust.files import (
    PRIVATE_FILE_MODE,
    PUBLIC_FILE_MODE,
    atomic_write,
    private_dir,
    write_new,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

PRIVATE_KEY_MODE = PRIVATE_FILE_MODE
# An Ed25519 SubjectPublicKeyInfo in DER is always this 12-byte header (SEQUENCE,
# AlgorithmIdentifier id-Ed25519 without parameters, BIT STRING of 33 bytes) then the raw
# 32-byte key (RFC 8410): what `public_pem` writes and `openssl pkey -pubout` prints.
ED25519_SPKI_HEADER = bytes.fromhex("302a300506032b6570032100")
PEM_PUBLIC_KEY = re.compile(
    rb"-----BEGIN PUBLIC KEY-----\r?\n(?P<body>[A-Za-z0-9+/=\s]*?)-----END PUBLIC KEY-----"
)


class KeyFileError(ValueError):
    """A key file or PEM string is unreadable or not an Ed25519 key."""


def keyid(public_key: Ed25519PublicKey) -> str:
    return raw_keyid(public_key.public_bytes_raw())


def raw_keyid(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def public_pem(public_key: Ed25519PublicKey) -> str:
    der = base64.b64encode(ED25519_SPKI_HEADER + public_key.public_bytes_raw()).decode()
    return f"-----BEGIN PUBLIC KEY-----\n{der}\n-----END PUBLIC KEY-----\n"


def load_public_pem(pem: str | bytes) -> Ed25519PublicKey:
    """The Ed25519 key of a PEM SubjectPublicKeyInfo, as cryptography's key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(raw_public_key(pem))


def raw_public_key(pem: str | bytes) -> bytes:
    """The raw 32-byte key of an Ed25519 PEM SubjectPublicKeyInfo. Read here rather than
    with cryptography's `serialization`, whose import (every key format, SSH, ciphers)
    costs ~1.3 MiB of RSS; a key of any other algorithm or encoding is refused."""
    data = pem.encode() if isinstance(pem, str) else pem
    found = PEM_PUBLIC_KEY.search(data)
    if found is None:
        raise KeyFileError("not a PEM public key: no BEGIN/END PUBLIC KEY block")
    try:
        der = base64.b64decode(b"".join(found["body"].split()), validate=True)
    except binascii.Error as exc:
        raise KeyFileError(f"not a PEM public key: {exc}") from None
    if len(der) != len(ED25519_SPKI_HEADER) + 32 or not der.startswith(ED25519_SPKI_HEADER):
        raise KeyFileError("not an Ed25519 public key (RFC 8410 SubjectPublicKeyInfo)")
    return der[len(ED25519_SPKI_HEADER) :]


def verify(raw_key: bytes, signature: bytes, message: bytes) -> bool:
    """Whether `signature` is the Ed25519 signature of `message` by the raw key: every
    signature muto checks, checked here, by libsodium (PyNaCl). It is as strict as RFC
    8032 and stricter on keys (small-order and non-canonical ones are refused), and costs a
    process ~1.2 MiB where cryptography's own OpenSSL costs ~9 (docs/dependencies.md)."""
    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey

    try:
        VerifyKey(raw_key).verify(message, signature)
    except (BadSignatureError, ValueError, TypeError):  # bad signature; malformed key or sig
        return False
    return True


@dataclass(frozen=True)
class Signer:
    """A private key and its key id: what signs releases, desired state and rotations."""

    private_key: Ed25519PrivateKey
    keyid: str

    @classmethod
    def generate(cls) -> Signer:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls.from_private_key(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_key(cls, private_key: Ed25519PrivateKey) -> Signer:
        return cls(private_key, keyid(private_key.public_key()))

    @classmethod
    def load(cls, path: Path) -> Signer:
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization  # signing side only
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

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
    from cryptography.hazmat.primitives import serialization  # signing side only

    pem = signer.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # An existing key is never silently replaced; its bytes are never readable by others.
    write_new(private_path, pem, PRIVATE_KEY_MODE)
    # A trust anchor: readable by all, writable by its owner only, whatever the umask.
    atomic_write(public_path, signer.public_pem.encode(), PUBLIC_FILE_MODE)


def load_or_create_key_pair(private_path: Path, public_path: Path) -> Signer:
    """The signer kept at `private_path`, made on first use: a fresh key written by
    `write_key_pair` (its directory created 0700, the public half at `public_path`)."""
    if not private_path.exists():
        private_dir(private_path.parent)
        write_key_pair(Signer.generate(), private_path, public_path)
    return Signer.load(private_path)
