"""One row per attack (after python-tuf's updater tests): start from a vehicle that has
accepted sequence 5, publish one bad variant of an otherwise good sequence-6 bundle, and
check the reason code and that the trust store on disk did not change by one byte."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest

from muto.domain.desired import DesiredStateBundle, Envelope
from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.wire import canonical
from muto.trust import (
    AuthenticDocumentRejected,
    Signer,
    TrustStore,
    open_desired_state,
    sign_release,
    verify_bundle,
)
from muto.trust.dsse import DESIRED_STATE_TYPE, MAX_PAYLOAD_CHARS, RELEASE_TYPE, sign_envelope
from tests.support.trust_kit import (
    NOW,
    VEHICLE,
    Fleet,
    a_document,
    a_release,
    flip_signature,
    unsigned,
)

FLEET = Fleet()
RELEASE = a_release("1.2.0")
OTHER_RELEASE = a_release("1.3.0", payload=b"other wheel")
ACCEPTED = a_document(RELEASE, sequence=5)
GOOD = a_document(RELEASE, sequence=6)
replace = msgspec.structs.replace
VSF = ReasonCode.VERIFY_SIGNATURE_FAILED
EXPIRED = ReasonCode.DESIRED_STATE_EXPIRED
GOOD_BYTES = canonical(GOOD)


GOOD_BUNDLE = FLEET.bundle(GOOD, RELEASE)


def good() -> DesiredStateBundle:
    return GOOD_BUNDLE


def with_document(**changes: object) -> DesiredStateBundle:
    return FLEET.bundle(replace(GOOD, **changes), RELEASE)


def with_desired(envelope: Envelope) -> DesiredStateBundle:
    return replace(GOOD_BUNDLE, desired_state=envelope)


def with_release(envelope: Envelope) -> DesiredStateBundle:
    return replace(GOOD_BUNDLE, release=envelope)


def control_signed(payload: bytes, payload_type: str = DESIRED_STATE_TYPE) -> Envelope:
    return sign_envelope(payload, payload_type, [FLEET.control])


def swapped_payload() -> DesiredStateBundle:
    """A genuinely signed document's signatures on another document's bytes."""
    other = GOOD_BUNDLE.desired_state
    forged = with_document(sequence=99).desired_state
    return with_desired(replace(forged, signatures=other.signatures))


def pointing_elsewhere() -> DesiredStateBundle:
    """Mix-and-match: a good document for release 1.2.0 shipped with signed release 1.3.0."""
    return with_release(sign_release(OTHER_RELEASE, FLEET.release_keys[:2]))


def non_canonical_base64() -> DesiredStateBundle:
    """Same bytes, same valid signature, but spelled with non-zero base64 padding bits."""
    payload = canonical(GOOD)
    payload += b" " * ((1 - len(payload)) % 3)  # JSON allows trailing space; ends in "=="
    envelope = control_signed(payload)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = envelope.payload[-3]
    respelled = envelope.payload[:-3] + alphabet[alphabet.index(last) + 1] + "=="
    assert base64.b64decode(respelled) == payload
    return with_desired(replace(envelope, payload=respelled))


def desired_by(*signers: Signer) -> DesiredStateBundle:
    return with_desired(sign_envelope(canonical(GOOD), DESIRED_STATE_TYPE, list(signers)))


def release_by(*signers: Signer) -> DesiredStateBundle:
    return with_release(sign_release(RELEASE, list(signers)))


def stack(**changes: object) -> DesiredStateBundle:
    return with_document(stack=replace(GOOD.stack, **changes))


def attack(
    name: str,
    bundle: Callable[[], DesiredStateBundle],
    code: ReasonCode = VSF,
    clock_trusted: bool = True,
) -> pytest.ParameterSet:
    return pytest.param(bundle, code, clock_trusted, id=name)


KEY_A = FLEET.release_keys[0]
HUGE = "A" * (MAX_PAYLOAD_CHARS + 4)
ATTACKS = [
    # arbitrary software: no, unknown, wrong-role or broken signatures
    attack("unsigned desired state", lambda: with_desired(unsigned(GOOD_BUNDLE.desired_state))),
    attack("unsigned release", lambda: with_release(unsigned(GOOD_BUNDLE.release))),
    attack("desired state by release keys", lambda: desired_by(*FLEET.release_keys)),
    attack("desired state by an unknown key", lambda: desired_by(Signer.generate())),
    attack("release by the control-plane key", lambda: release_by(FLEET.control)),
    attack("release by unknown keys", lambda: release_by(Signer.generate(), Signer.generate())),
    attack(
        "corrupted desired-state sig",
        lambda: with_desired(flip_signature(GOOD_BUNDLE.desired_state)),
    ),
    attack("corrupted release sig", lambda: with_release(flip_signature(GOOD_BUNDLE.release))),
    attack("signatures moved to other bytes", swapped_payload),
    # k-of-n
    attack("release below threshold", lambda: release_by(KEY_A)),
    attack("same release key twice", lambda: release_by(KEY_A, KEY_A)),
    # mix-and-match
    attack("other release in the bundle", pointing_elsewhere),
    attack("no release digest pinned", lambda: stack(manifest_digest=None)),
    attack("other version, same digest", lambda: stack(version="9.9.9")),
    # type confusion and malformed payloads
    attack(
        "payloadType of a release", lambda: with_desired(control_signed(GOOD_BYTES, RELEASE_TYPE))
    ),
    attack(
        "envelopes swapped",
        lambda: DesiredStateBundle(
            desired_state=GOOD_BUNDLE.release, release=GOOD_BUNDLE.desired_state
        ),
    ),
    attack("malformed payload", lambda: with_desired(control_signed(b"{not json"))),
    attack("payload of another schema", lambda: with_desired(control_signed(canonical(RELEASE)))),
    attack("non-canonical base64", non_canonical_base64),
    # endless data
    attack(
        "endless payload", lambda: with_desired(replace(GOOD_BUNDLE.desired_state, payload=HUGE))
    ),
    # rollback and replay
    attack("lower sequence", lambda: with_document(sequence=4), ReasonCode.STALE_REVISION),
    attack(
        "same sequence, other content", lambda: with_document(sequence=5), ReasonCode.STALE_REVISION
    ),
    # freeze
    attack("expired", lambda: with_document(expires_at=NOW - timedelta(seconds=1)), EXPIRED),
    attack("expires this instant", lambda: with_document(expires_at=NOW), EXPIRED),
    attack("clock not trusted", good, ReasonCode.UNTRUSTED_CLOCK, clock_trusted=False),
    # another vehicle's document
    attack(
        "another vehicle", lambda: with_document(vehicle_id="veh-002"), ReasonCode.WRONG_VEHICLE
    ),
]


@pytest.fixture
def store(tmp_path: Path) -> TrustStore:
    store = TrustStore.create(tmp_path / "trust.json", FLEET.config)
    first = verify_bundle(
        FLEET.bundle(ACCEPTED, RELEASE), store.config, store.trusted, VEHICLE, NOW
    )
    store.accept(first)
    return store


def test_the_good_bundle_passes(store: TrustStore) -> None:
    verified = verify_bundle(good(), store.config, store.trusted, VEHICLE, NOW)
    assert verified.document == GOOD
    assert verified.release == RELEASE


@pytest.mark.parametrize(
    ("bundle", "code", "clock_trusted"),
    ATTACKS,
)
def test_attack_is_rejected_and_nothing_changes(
    store: TrustStore,
    bundle: Callable[[], DesiredStateBundle],
    code: ReasonCode,
    clock_trusted: bool,
) -> None:
    before = store.path.read_bytes()
    with pytest.raises(ReasonError) as rejected:
        verify_bundle(
            bundle(), store.config, store.trusted, VEHICLE, NOW, clock_trusted=clock_trusted
        )
    assert rejected.value.code == code
    assert store.path.read_bytes() == before
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["trust.json"]


@pytest.mark.parametrize(("bundle", "code", "clock_trusted"), ATTACKS)
def test_a_rejection_carries_the_document_exactly_when_its_own_signature_held(
    store: TrustStore,
    bundle: Callable[[], DesiredStateBundle],
    code: ReasonCode,
    clock_trusted: bool,
) -> None:
    """What the agent reports a rejection under (muto/agent/reconcile/intake.py) comes
    from the carried document: only one whose control-plane signature holds."""
    attacked = bundle()
    try:
        opened: tuple[object, str] | None = open_desired_state(
            attacked.desired_state, store.config.control_plane_keys
        )
    except ReasonError:
        opened = None
    with pytest.raises(ReasonError) as rejected:
        verify_bundle(
            attacked, store.config, store.trusted, VEHICLE, NOW, clock_trusted=clock_trusted
        )
    if opened is None:
        assert not isinstance(rejected.value, AuthenticDocumentRejected)
    else:
        assert isinstance(rejected.value, AuthenticDocumentRejected)
        assert (rejected.value.document, rejected.value.document_digest) == opened
        assert rejected.value.code == code
