"""Any single-byte change to signed bytes is rejected: in an envelope's payload or
signature (decoded or as base64 text), and in artifact bytes fed to ArtifactVerifier."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from muto.domain.desired import Envelope, Signature
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import Artifact, ArtifactType
from muto.trust import open_desired_state, open_release
from muto.trust.artifacts import ArtifactVerifier
from muto.trust.releases import manifest_digest
from tests.support.trust_kit import Fleet, a_document, a_release

FLEET = Fleet()
RELEASE = a_release()
DOCUMENT = a_document(RELEASE, 7)
BUNDLE = FLEET.bundle(DOCUMENT, RELEASE)
CONFIG = FLEET.config


def open_desired(envelope: Envelope) -> object:
    return open_desired_state(envelope, CONFIG.control_plane_keys)


def open_signed_release(envelope: Envelope) -> object:
    return open_release(envelope, CONFIG.release_keys)


OPENERS: dict[str, tuple[Envelope, Callable[[Envelope], object]]] = {
    "desired state": (BUNDLE.desired_state, open_desired),
    "release": (BUNDLE.release, open_signed_release),
}
replace = msgspec.structs.replace


def flip(raw: bytes, index: int, xor: int) -> bytes:
    changed = bytearray(raw)
    changed[index % len(raw)] ^= xor
    return bytes(changed)


def assert_rejected(kind: str, envelope: Envelope) -> None:
    with pytest.raises(ReasonError) as failure:
        OPENERS[kind][1](envelope)
    assert failure.value.code == ReasonCode.VERIFY_SIGNATURE_FAILED


kinds = st.sampled_from(sorted(OPENERS))
xors = st.integers(1, 255)


def test_the_untampered_envelopes_open_to_what_was_signed() -> None:
    opened = {kind: opener(envelope) for kind, (envelope, opener) in OPENERS.items()}
    signed = base64.b64decode(BUNDLE.desired_state.payload)
    assert opened["desired state"] == (DOCUMENT, "sha256:" + hashlib.sha256(signed).hexdigest())
    assert opened["release"] == (RELEASE, manifest_digest(RELEASE))


@given(kind=kinds, index=st.integers(0, 10**6), xor=xors)
def test_a_changed_payload_byte_is_rejected(kind: str, index: int, xor: int) -> None:
    envelope = OPENERS[kind][0]
    payload = flip(base64.b64decode(envelope.payload), index, xor)
    assert_rejected(kind, replace(envelope, payload=base64.b64encode(payload).decode()))


@given(kind=kinds, which=st.integers(0, 1), index=st.integers(0, 63), xor=xors)
def test_a_changed_signature_byte_is_rejected(kind: str, which: int, index: int, xor: int) -> None:
    envelope = OPENERS[kind][0]
    signatures = list(envelope.signatures)
    target = signatures[which % len(signatures)]
    sig = flip(base64.b64decode(target.sig), index, xor)
    signatures[which % len(signatures)] = Signature(
        keyid=target.keyid, sig=base64.b64encode(sig).decode()
    )
    assert_rejected(kind, replace(envelope, signatures=signatures))


@given(kind=kinds, index=st.integers(0, 10**6), char=st.characters(codec="ascii"))
def test_a_changed_base64_character_is_rejected(kind: str, index: int, char: str) -> None:
    """Over the wire text too: canonical base64 means no two spellings of one payload."""
    envelope = OPENERS[kind][0]
    text = envelope.payload
    i = index % len(text)
    if text[i] == char:
        return
    assert_rejected(kind, replace(envelope, payload=text[:i] + char + text[i + 1 :]))


DATA = bytes(range(256)) * 40
ARTIFACT = Artifact(
    type=ArtifactType.FILE,
    ref="https://artifacts.example/map.bin",
    digest="sha256:" + hashlib.sha256(DATA).hexdigest(),
    size=len(DATA),
)


def feed(data: bytes, chunk: int) -> None:
    verifier = ArtifactVerifier(ARTIFACT)
    for start in range(0, len(data), chunk):
        verifier.update(data[start : start + chunk])
    verifier.finish()


@given(index=st.integers(0, len(DATA) - 1), xor=xors, chunk=st.integers(1, 5000))
def test_a_changed_artifact_byte_is_rejected(index: int, xor: int, chunk: int) -> None:
    with pytest.raises(ReasonError) as failure:
        feed(flip(DATA, index, xor), chunk)
    assert failure.value.code == ReasonCode.ARTIFACT_DOWNLOAD_FAILED
