"""What passes, and how the TrustStore records it: happy path, idempotent re-delivery,
a fleet rollback as a new revision, and accept never moving backwards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from muto.domain.errors import ReasonError
from muto.domain.reasons import ReasonCode
from muto.domain.release import StackRelease
from muto.trust import TrustedState, TrustStore, verify_bundle
from tests.support.trust_kit import NOW, VEHICLE, Fleet, a_document, a_release

FLEET = Fleet()
OLD, NEW = a_release("1.0.0", b"old wheel"), a_release("2.0.0", b"new wheel")


@pytest.fixture
def store(tmp_path: Path) -> TrustStore:
    return TrustStore.create(tmp_path / "trust.json", FLEET.config)


def deliver(store: TrustStore, sequence: int, release: StackRelease = NEW) -> TrustedState:
    bundle = FLEET.bundle(a_document(release, sequence), release)
    verified = verify_bundle(bundle, store.config, store.trusted, VEHICLE, NOW)
    return store.accept(verified)


def test_happy_path_returns_both_documents_and_accept_records_them(store: TrustStore) -> None:
    document = a_document(NEW, 3)
    verified = verify_bundle(FLEET.bundle(document, NEW), store.config, store.trusted, VEHICLE, NOW)
    assert (verified.document, verified.release) == (document, NEW)
    assert verified.release_digest == document.stack.manifest_digest
    assert store.trusted == TrustedState()  # verification alone never writes

    store.accept(verified)
    reopened = TrustStore(store.path).trusted
    assert reopened == TrustedState(
        sequence=3, document_digest=verified.document_digest, revision="rev-3"
    )
    assert json.loads(store.path.read_text())["schema"] == "muto.trust-store.v1"


def test_identical_redelivery_passes_and_leaves_the_file_alone(store: TrustStore) -> None:
    deliver(store, 3)
    before = store.path.read_bytes()
    assert deliver(store, 3).sequence == 3
    assert store.path.read_bytes() == before


def test_fleet_rollback_is_a_higher_sequence_pointing_to_an_older_release(
    store: TrustStore,
) -> None:
    deliver(store, 3, OLD)
    deliver(store, 4, NEW)
    assert deliver(store, 5, OLD) == TrustedState(
        sequence=5, document_digest=store.trusted.document_digest, revision="rev-5"
    )


def test_accept_rechecks_against_the_file(store: TrustStore) -> None:
    """Two bundles verified against the same state: accepting the newer first makes the
    older one stale, so the floor never moves back."""
    trusted = store.trusted
    older = verify_bundle(
        FLEET.bundle(a_document(NEW, 3), NEW), FLEET.config, trusted, VEHICLE, NOW
    )
    newer = verify_bundle(
        FLEET.bundle(a_document(NEW, 4), NEW), FLEET.config, trusted, VEHICLE, NOW
    )
    store.accept(newer)
    before = store.path.read_bytes()
    with pytest.raises(ReasonError) as stale:
        store.accept(older)
    assert stale.value.code == ReasonCode.STALE_REVISION
    assert store.path.read_bytes() == before


def test_create_never_overwrites(store: TrustStore) -> None:
    deliver(store, 1)  # a store with history: overwriting it would lose the floor
    before = store.path.read_bytes()
    with pytest.raises(FileExistsError):
        TrustStore.create(store.path, FLEET.config)
    assert store.path.read_bytes() == before


def test_writes_leave_no_temporary_files(store: TrustStore) -> None:
    for sequence in (1, 2, 3):
        deliver(store, sequence)
    assert [p.name for p in store.path.parent.iterdir()] == ["trust.json"]
