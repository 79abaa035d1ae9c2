"""k-of-n release signatures and release key rotation."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.wire import WireError, convert
from muto.trust import (
    KeyRotation,
    KeySet,
    Signer,
    TrustStore,
    apply_key_rotation,
    open_release,
    sign_key_rotation,
    sign_release,
)
from muto.trust.dsse import cosign
from tests.support.trust_kit import Fleet, a_release

RELEASE = a_release()
A, B, C = (Signer.generate() for _ in range(3))
TWO_OF_THREE = KeySet(keys=[A.public_pem, B.public_pem, C.public_pem], threshold=2)


def rejected(call: object) -> ReasonCode:
    assert callable(call)
    with pytest.raises(ReasonError) as failure:
        call()
    return failure.value.code


@pytest.mark.parametrize(
    ("signers", "passes"),
    [
        pytest.param([A], False, id="1 of 2-of-3"),
        pytest.param([A, A], False, id="same key twice counts once"),
        pytest.param([A, Signer.generate()], False, id="an unknown key does not count"),
        pytest.param([B, C], True, id="2 of 2-of-3"),
        pytest.param([Signer.generate(), A, C], True, id="unknown keys are ignored"),
        pytest.param([A, B, C], True, id="3 of 2-of-3"),
    ],
)
def test_threshold(signers: list[Signer], passes: bool) -> None:
    envelope = sign_release(RELEASE, signers)
    if passes:
        assert open_release(envelope, TWO_OF_THREE)[0] == RELEASE
    else:
        code = rejected(lambda: open_release(envelope, TWO_OF_THREE))
        assert code == ReasonCode.VERIFY_SIGNATURE_FAILED


def test_signatures_can_be_collected_one_holder_at_a_time() -> None:
    envelope = cosign(sign_release(RELEASE, [A]), C)
    assert open_release(envelope, TWO_OF_THREE)[0] == RELEASE


@pytest.mark.parametrize(
    "keyset",
    [
        {"keys": [A.public_pem], "threshold": 2},
        {"keys": [A.public_pem, A.public_pem], "threshold": 2},  # one key listed twice
        {"keys": ["not a key"], "threshold": 1},
        {"keys": [A.public_pem], "threshold": 0},
    ],
)
def test_an_unsatisfiable_or_broken_key_set_is_refused(keyset: dict[str, object]) -> None:
    with pytest.raises(WireError):
        convert(keyset, KeySet)


def test_a_zero_threshold_is_refused_when_built_in_code_too() -> None:
    """msgspec checks constraints only when decoding; threshold 0 would trust nothing
    signed at all, so KeySet refuses it on construction as well."""
    with pytest.raises(ValueError):
        KeySet(keys=[A.public_pem], threshold=0)


# Rotation: from 2-of-3 (A, B, C) to 2-of-2 (D, E).
D, E = Signer.generate(), Signer.generate()
NEXT = KeyRotation(version=2, release_keys=KeySet(keys=[D.public_pem, E.public_pem], threshold=2))


@pytest.fixture
def store(tmp_path: Path) -> TrustStore:
    fleet = Fleet(release_keys=[A, B, C])
    return TrustStore.create(tmp_path / "trust.json", fleet.config)


def test_rotation_signed_by_the_current_threshold_is_accepted(store: TrustStore) -> None:
    config = store.rotate_release_keys(sign_key_rotation(NEXT, [A, C, D, E]))
    assert TrustStore(store.path).config == config
    assert config.release_keys == NEXT.release_keys and config.release_keys_version == 2
    assert open_release(sign_release(RELEASE, [D, E]), config.release_keys)[0] == RELEASE
    old_keys = sign_release(RELEASE, [A, B])
    assert rejected(lambda: open_release(old_keys, config.release_keys)) == (
        ReasonCode.VERIFY_SIGNATURE_FAILED
    )


@pytest.mark.parametrize(
    ("rotation", "signers", "code"),
    [
        pytest.param(NEXT, [A, D, E], ReasonCode.VERIFY_SIGNATURE_FAILED, id="below current"),
        pytest.param(NEXT, [A, B, D], ReasonCode.VERIFY_SIGNATURE_FAILED, id="below new"),
        pytest.param(NEXT, [D, E], ReasonCode.VERIFY_SIGNATURE_FAILED, id="new keys only"),
    ],
)
def test_rotation_is_rejected_without_changing_the_store(
    store: TrustStore, rotation: KeyRotation, signers: list[Signer], code: ReasonCode
) -> None:
    before = store.path.read_bytes()
    envelope = sign_key_rotation(rotation, signers)
    assert rejected(lambda: store.rotate_release_keys(envelope)) == code
    assert store.path.read_bytes() == before


def test_a_replayed_rotation_cannot_roll_keys_back(store: TrustStore) -> None:
    """A -> (A, D) at v2, then back to (A, B, C) at v3; replaying v2 is stale even though
    A, which signed it, is still trusted."""
    fleet_config = store.config
    to_v2 = KeyRotation(version=2, release_keys=KeySet(keys=[A.public_pem, D.public_pem]))
    v2 = sign_key_rotation(to_v2, [A, B, D])
    config = apply_key_rotation(fleet_config, v2)
    to_v3 = KeyRotation(version=3, release_keys=fleet_config.release_keys)
    config = apply_key_rotation(config, sign_key_rotation(to_v3, [A, B, C]))
    assert rejected(lambda: apply_key_rotation(config, v2)) == ReasonCode.STALE_REVISION
    same_version = sign_key_rotation(msgspec.structs.replace(NEXT, version=3), [A, B, D, E])
    assert rejected(lambda: apply_key_rotation(config, same_version)) == (ReasonCode.STALE_REVISION)
