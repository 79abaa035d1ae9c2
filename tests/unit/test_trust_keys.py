"""muto.trust.keys reads and writes Ed25519 public PEM itself (the agent does not import
cryptography's `serialization`): byte for byte what cryptography writes, and nothing else."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from muto.trust.keys import (
    KeyFileError,
    Signer,
    keyid,
    load_or_create_key_pair,
    load_public_pem,
    public_pem,
)


def spki_pem(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_public_pem_is_what_cryptography_writes_and_reads_back() -> None:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    assert public_pem(key).encode() == spki_pem(key)
    assert serialization.load_pem_public_key(public_pem(key).encode()) == key
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert keyid(key) == hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize(
    "variant",
    [
        lambda pem: pem,
        lambda pem: pem.replace("\n", "\r\n"),  # a file edited on Windows
        lambda pem: "explanatory text, as openssl allows\n" + pem,
        lambda pem: pem.strip(),
    ],
)
def test_load_public_pem_reads_the_key_cryptography_wrote(variant: object) -> None:
    signer = Signer.generate()
    pem = spki_pem(signer.public_key).decode()
    loaded = load_public_pem(variant(pem))  # type: ignore[operator]
    assert keyid(loaded) == signer.keyid
    message = b"signed"
    loaded.verify(signer.private_key.sign(message), message)  # the key itself, not a copy


@pytest.mark.parametrize(
    "pem",
    [
        spki_pem(ec.generate_private_key(ec.SECP256R1()).public_key()),
        spki_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()),
        b"not a key",
        b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n",  # short
        b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA!!!!\n-----END PUBLIC KEY-----\n",
        # the right header with one byte too many
        b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA"
        + b"A" * 44
        + b"\n-----END PUBLIC KEY-----\n",
    ],
)
def test_load_public_pem_refuses_any_other_key_or_encoding(pem: bytes) -> None:
    with pytest.raises(KeyFileError):
        load_public_pem(pem)


def test_a_missing_key_pair_is_made_once_then_loaded(tmp_path: Path) -> None:
    keys = tmp_path / "data" / "keys"
    old = os.umask(0)  # the modes are muto's, not the umask's
    try:
        first = load_or_create_key_pair(keys / "a.key", keys / "a.pub")
    finally:
        os.umask(old)
    mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (keys, keys / "a.key", keys / "a.pub")}
    assert mode == {"keys": 0o700, "a.key": 0o600, "a.pub": 0o644}
    assert (keys / "a.pub").read_text() == first.public_pem
    again = load_or_create_key_pair(keys / "a.key", keys / "a.pub")
    assert again.keyid == first.keyid  # loaded, never replaced
