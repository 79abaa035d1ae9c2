"""The rule of adding signatures to a registered release: its content never changes;
only signatures by keys not yet on it are added, each verified alone against a key the
control plane trusts (registration's check); one that fails refuses them all; nothing
new is a no-op; another digest is still a conflict. And what serves it stays exact:
the bundle's ETag and the envelope memory follow the count of added signatures."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from muto.audit.lines import describe
from muto.audit.source import Entry
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause, register_release
from muto.cloud.commands.releases import Registration
from muto.cloud.envelopes import ReleaseEnvelopes
from muto.cloud.errors import Conflict
from muto.cloud.signing import Signing
from muto.domain.desired import Envelope, Signature
from muto.domain.errors import ReasonError
from muto.domain.model.release import Release, signatures_by_new_keys
from muto.domain.reasons import ReasonCode
from muto.domain.wire import to_builtins
from muto.projections.desired import bundle_etag, etag_for
from muto.trust import KeySet, Signer, sign_release
from muto.trust.releases import manifest_digest, open_release
from tests.support.releases import stack_release
from tests.support.spine import memory_settings
from tests.support.trust_kit import flip_signature

A, B, C, STRANGER = (Signer.generate() for _ in range(4))
RELEASE = stack_release("core", "1.0.0")
DIGEST = manifest_digest(RELEASE)
CAUSE = Cause.of("operator:t1", "corr-1")


def sig(keyid: str, value: str = "c2ln") -> Signature:
    return Signature(keyid=keyid, sig=value)


def offered_by(*signers: Signer) -> Envelope:
    return sign_release(RELEASE, list(signers))


def registered(*signers: Signer) -> Release:
    return Release(
        key=RELEASE.key,
        manifest_digest=DIGEST,
        manifest=RELEASE,
        envelope=sign_release(RELEASE, list(signers)),
        actor="operator:t1",
        correlation_id="corr-0",
    )


def signing(threshold: int = 1) -> Signing:
    keys = KeySet(keys=[A.public_pem, B.public_pem, C.public_pem], threshold=threshold)
    return Signing(Signer.generate(), keys)


# -- the domain rule ----------------------------------------------------------------------


def test_only_keys_not_yet_on_it_are_new_the_first_signature_of_each() -> None:
    on = [sig("a")]
    offered = [sig("a", "b3RoZXI="), sig("b"), sig("c"), sig("b", "c2Vjb25k")]
    assert signatures_by_new_keys(on, offered) == [sig("b"), sig("c")]
    assert signatures_by_new_keys(on, [sig("a")]) == []


def test_signatures_are_added_in_an_event_and_the_content_stays() -> None:
    release = registered(A)
    offered = sign_release(RELEASE, [A, B])
    new = release.new_signatures(offered)
    assert [s.keyid for s in new] == [B.keyid]
    release.add_signatures(new, "operator:t2", "corr-2")
    events = release.collect_events()
    assert [type(e).__qualname__ for e in events] == ["Release.Registered", "Release.Signed"]
    signed: Any = events[-1]
    assert (signed.key, signed.manifest_digest, signed.actor) == (
        RELEASE.key,
        DIGEST,
        "operator:t2",
    )
    assert release.envelope == offered
    assert (release.manifest, release.manifest_digest) == (RELEASE, DIGEST)
    assert release.keyids == [A.keyid, B.keyid]
    assert release.new_signatures(offered) == []


def test_a_key_on_it_is_never_signed_again_nor_replaced() -> None:
    release = registered(A)
    with pytest.raises(ValueError, match="a key signs once"):
        release.add_signatures([sign_release(RELEASE, [A]).signatures[0]], "op", "c")
    with pytest.raises(ValueError, match="a key signs once"):
        release.add_signatures([sig(B.keyid), sig(B.keyid)], "op", "c")
    release.add_signatures([], "op", "c")  # nothing: no event
    assert len(release.collect_events()) == 1


def test_a_stored_signature_that_does_not_count_gives_way_to_its_keys_valid_one() -> None:
    valid_b = sign_release(RELEASE, [B]).signatures[0]
    broken_b = flip_signature(sign_release(RELEASE, [B])).signatures[0]
    valid_a = sign_release(RELEASE, [A]).signatures[0]
    release = Release(
        key=RELEASE.key,
        manifest_digest=DIGEST,
        manifest=RELEASE,
        envelope=msgspec.structs.replace(offered_by(A), signatures=[valid_a, broken_b]),
        actor="operator:t1",
        correlation_id="corr-0",
    )
    offered = sign_release(RELEASE, [B])

    def counts(s: Signature) -> bool:
        return s != broken_b

    assert release.new_signatures(offered) == []  # nothing verifiable: B counts as signed
    assert release.new_signatures(offered, counts) == [valid_b]
    release.add_signatures([valid_b], "operator:t2", "corr-2", counts)
    assert release.envelope.signatures == [valid_a, valid_b]
    events = release.collect_events()
    assert [s.keyid for s in events[-1].signatures] == [B.keyid]  # type: ignore[attr-defined]
    replayed = None
    for e in events:  # the stored events rebuild it: the broken one is gone there too
        replayed = e.mutate(replayed)
    assert replayed is not None and replayed.envelope == release.envelope
    assert release.new_signatures(offered, counts) == []  # now it counts: never replaced
    with pytest.raises(ValueError, match="a key signs once"):
        release.add_signatures([broken_b], "op", "c", counts)


def test_a_vehicle_ignores_a_signature_that_does_not_verify_beside_valid_ones() -> None:
    """Why a stored broken signature was harmless on its own (only the missing valid
    one was): a vehicle's open_envelope skips a signature it cannot verify, and still
    counts that key's valid signature after it."""
    broken_b = flip_signature(sign_release(RELEASE, [B])).signatures[0]
    both = KeySet(keys=[A.public_pem, B.public_pem], threshold=2)
    a_only = sign_release(RELEASE, [A])
    with_broken = msgspec.structs.replace(a_only, signatures=[*a_only.signatures, broken_b])
    with pytest.raises(ReasonError, match="1 valid signature"):
        open_release(with_broken, both)
    valid_b = sign_release(RELEASE, [B]).signatures[0]
    alongside = msgspec.structs.replace(with_broken, signatures=[*with_broken.signatures, valid_b])
    assert open_release(alongside, both) == (RELEASE, DIGEST)


def test_another_payloads_signatures_are_not_this_releases() -> None:
    other = sign_release(stack_release("core", "1.0.0", size=2), [B])
    with pytest.raises(ValueError, match="another payload"):
        registered(A).new_signatures(other)


# -- the control plane's check ------------------------------------------------------------


def test_each_new_signature_must_verify_alone_by_a_trusted_key() -> None:
    envelope = sign_release(RELEASE, [A, B])
    signing().check_signatures(envelope, envelope.signatures)
    stranger = sign_release(RELEASE, [STRANGER]).signatures
    forged = flip_signature(sign_release(RELEASE, [C])).signatures
    other = sign_release(stack_release("core", "1.0.1"), [C]).signatures  # signs another
    for bad, why in ((stranger, "not a trusted release key"), (forged, "not a valid"),
                     (other, "not a valid")):  # fmt: skip
        with pytest.raises(ReasonError) as refused:
            signing().check_signatures(envelope, [envelope.signatures[1], *bad])
        assert refused.value.code == ReasonCode.VERIFY_SIGNATURE_FAILED
        assert why in refused.value.detail and bad[0].keyid in refused.value.detail
    Signing(Signer.generate(), None).check_signatures(envelope, stranger)  # checks nothing


def test_an_envelope_short_of_the_threshold_is_opened_with_its_refusal() -> None:
    release, digest, refusal = signing(2).open_or_refusal(sign_release(RELEASE, [A, B]))
    assert (release, digest, refusal) == (RELEASE, DIGEST, None)
    release, digest, refusal = signing(2).open_or_refusal(sign_release(RELEASE, [B]))
    assert (release, digest) == (RELEASE, DIGEST)
    assert refusal is not None and "need 2" in refusal.detail
    not_a_release = msgspec.structs.replace(sign_release(RELEASE, [A]), payload_type="x")
    with pytest.raises(ReasonError):
        signing(2).open_or_refusal(not_a_release)


# -- the command --------------------------------------------------------------------------


@pytest.fixture
def cp(tmp_path: Path) -> Any:
    plane = ControlPlane.open(memory_settings(tmp_path))
    yield plane
    plane.close()


def post(cp: ControlPlane, envelope: Envelope, check: Signing | None = None) -> Registration:
    s = check or signing(2)
    release, digest, refusal = s.open_or_refusal(envelope)
    command = register_release(
        release, digest, envelope, CAUSE, check=s.check_signatures, refusal=refusal
    )
    value: Registration = cp.execute(command).value
    return value


def test_registration_then_additions(cp: ControlPlane) -> None:
    assert post(cp, sign_release(RELEASE, [A]), signing(1)) == Registration(created=True)
    with pytest.raises(ReasonError, match="need 2"):  # unregistered: the threshold holds
        post(cp, sign_release(stack_release("core", "2.0.0"), [A]))
    position = cp.log.position()
    with pytest.raises(ReasonError, match=STRANGER.keyid):
        post(cp, sign_release(RELEASE, [B, STRANGER]))  # one bad: none added
    assert cp.log.position() == position
    assert post(cp, sign_release(RELEASE, [B])) == Registration(False, (B.keyid,))
    assert post(cp, sign_release(RELEASE, [C, A, B])) == Registration(False, (C.keyid,))
    assert post(cp, sign_release(RELEASE, [B])) == Registration(False)
    assert cp.log.position() == position + 2
    with pytest.raises(Conflict):
        post(cp, sign_release(stack_release("core", "1.0.0", size=2), [A, B]))
    with pytest.raises(ReasonError, match="need 2"):  # short, and another digest
        post(cp, sign_release(stack_release("core", "1.0.0", size=2), [A]))
    cp.projector.catch_up()
    shown = cp.queries.release("core", "1.0.0")
    assert [s.keyid for s in shown.envelope.signatures] == [A.keyid, B.keyid, C.keyid]
    assert cp.queries.release_envelope(RELEASE.key) == (to_builtins(shown.envelope), 2)
    lines = [describe(e) for e in audit_entries(cp) if e.type == "Release.Signed"]
    assert lines == [
        f"release core@1.0.0 signed by 1 more key(s): {B.keyid[:16]} ({DIGEST})",
        f"release core@1.0.0 signed by 1 more key(s): {C.keyid[:16]} ({DIGEST})",
    ]


def test_a_broken_signature_stored_at_registration_never_blocks_its_keys_valid_one(
    cp: ControlPlane,
) -> None:
    """Registration stores the envelope as pushed: A's valid signature registers it (a
    threshold of one) with B's broken one beside it. B's valid signature then replaces
    it, and a vehicle needing both accepts what the view serves."""
    broken = msgspec.structs.replace(
        offered_by(A),
        signatures=[*offered_by(A).signatures, *flip_signature(offered_by(B)).signatures],
    )
    assert post(cp, broken, signing(1)) == Registration(created=True)
    position = cp.log.position()
    with pytest.raises(ReasonError, match=B.keyid):  # the broken one again: still refused
        post(cp, broken)
    assert post(cp, offered_by(B)) == Registration(False, (B.keyid,))
    assert post(cp, offered_by(B)) == Registration(False)  # now it counts
    assert post(cp, broken) == Registration(False)  # and is never replaced by a broken one
    assert cp.log.position() == position + 1
    cp.projector.catch_up()
    shown = cp.queries.release("core", "1.0.0").envelope
    assert shown == offered_by(A, B)  # the broken one is gone, not served beside
    assert cp.queries.release_envelope(RELEASE.key) == (to_builtins(shown), 1)
    vehicle = KeySet(keys=[A.public_pem, B.public_pem], threshold=2)
    assert open_release(shown, vehicle) == (RELEASE, DIGEST)
    signed = [e for e in audit_entries(cp) if e.type == "Release.Signed"]
    assert [s["keyid"] for s in signed[0].data["signatures"]] == [B.keyid]


def test_without_release_keys_a_stored_signature_counts_whatever_it_is(
    cp: ControlPlane,
) -> None:
    """Nothing can be verified: a key on the release is signed there, as before, and
    only keys not on it are added (unchecked, as at registration)."""
    unchecked = Signing(Signer.generate(), None)
    broken = msgspec.structs.replace(
        offered_by(A),
        signatures=[*offered_by(A).signatures, *flip_signature(offered_by(B)).signatures],
    )
    assert post(cp, broken, unchecked) == Registration(created=True)
    assert post(cp, offered_by(B), unchecked) == Registration(False)
    assert post(cp, offered_by(C), unchecked) == Registration(False, (C.keyid,))


def audit_entries(cp: ControlPlane) -> list[Entry]:
    return [
        Entry(
            position=e.position,
            at=datetime.now(UTC),
            type=e.event_type,
            aggregate="",
            version=0,
            actor=e.actor or "",
            correlation_id=e.correlation_id or "",
            data=e.data,
        )
        for e in cp.queries.audit(after=0)
    ]


# -- what serves it -----------------------------------------------------------------------


def test_the_bundle_etag_says_how_many_signatures_were_added() -> None:
    digest = "sha256:" + "0a1b2c3d4e" * 6
    stored = etag_for(3, digest)  # what the desired view keeps
    assert stored == '"3-0a1b2c3d4e0a1b2c3d4e"'
    assert etag_for(3, digest, 2) == '"3-0a1b2c3d4e0a1b2c3d4e+2"'  # one function, both
    assert bundle_etag(stored, 0) == stored  # as before: no vehicle refetches
    assert bundle_etag(stored, 2) == etag_for(3, digest, 2)
    assert bundle_etag(etag_for(12, digest), 1) == etag_for(12, digest, 1)


def test_the_envelope_memory_answers_only_the_count_asked_for() -> None:
    stored = {0: sign_release(RELEASE, [A]), 1: sign_release(RELEASE, [A, B])}
    state = {"count": 0, "loads": 0}

    def load(_: str) -> tuple[Any, int]:
        state["loads"] += 1
        return to_builtins(stored[state["count"]]), state["count"]

    memory = ReleaseEnvelopes(load)
    assert memory.get(RELEASE.key, 0) == stored[0]
    assert memory.cached(RELEASE.key, 0) == stored[0]
    state["count"] = 1  # a signature added; this memory has not heard of it
    assert memory.cached(RELEASE.key, 1) is None
    assert memory.get(RELEASE.key, 1) == stored[1]
    assert memory.cached(RELEASE.key, 0) is None  # replaced by the newer
    assert memory.get(RELEASE.key, 0) == stored[1]  # an older ETag read: more is fine
    assert state["loads"] == 3
    memory.forget(RELEASE.key)
    assert len(memory) == 0
