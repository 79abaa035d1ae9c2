"""Release key rotation on the vehicle: the agent follows the KeyRotations a bundle
carries (`keyRotations`, oldest first) before it verifies the release, on the agent rig
with the real trust store on disk.

A rotation newer than the trusted key set is verified against the keys in force and
persisted, then journaled (ReleaseKeysRotated); an older one is skipped; one that does
not verify is passed over, said once (ReleaseKeysRotationRefused, a warning) and leaves
trust.json as it was, and the walk goes on (a later rotation the keys in force signed is
the way back); the bundle is judged by the keys in force: a rollback
signed by them still runs, a release signed by keys the vehicle could not follow is
rejected by the release check. Keys provisioned at a later set of the chain fast-forward
to its version. A restart keeps the rotated keys, whatever `--trust` file it is given.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest

from muto.agent.agent import Agent
from muto.agent.journal import events as ev
from muto.agent.trust import Trust, provision
from muto.domain.desired import DesiredStateBundle, Envelope
from muto.domain.reasons import ReasonCode
from muto.domain.wire import decode, encode
from muto.trust import KeyRotation, KeySet, Signer, TrustStore, sign_key_rotation
from muto.trust.store import TrustFile
from tests.support.agent_rig import A, B, C, Rig, converged_on, make_rig, run
from tests.support.releases import signed


def rotation(
    version: int, new: Sequence[Signer], signers: Sequence[Signer], k: int = 1
) -> Envelope:
    keys = KeySet(keys=[s.public_pem for s in new], threshold=k)
    return sign_key_rotation(KeyRotation(version=version, release_keys=keys), signers)


def with_rotations(bundle: DesiredStateBundle, *rotations: Envelope) -> DesiredStateBundle:
    return msgspec.structs.replace(bundle, key_rotations=list(rotations))


def trusting(rig: Rig, trust: Trust) -> Rig:
    """`rig` with another trust port (the rig's own is a MemoryTrust of its signers)."""
    parts = dataclasses.replace(rig.agent.parts, trust=trust)
    return dataclasses.replace(rig, agent=Agent(rig.agent.settings, parts))


async def on_disk(data: Path, rig: Rig | None = None) -> Rig:
    """A started agent whose trust store is `data`/trust.json, provisioned from the
    rig's signers on the first start (`muto agent run --trust FILE`)."""
    rig = rig.restart() if rig is not None else make_rig()
    data.mkdir(exist_ok=True)
    given = data.parent / "trust-given.json"
    if not given.exists():
        given.write_bytes(encode(rig.signers.trust))
    rig = trusting(rig, provision(data, given))
    await rig.agent.start(loop=False)
    return rig


def rotated(rig: Rig) -> list[ev.ReleaseKeysRotated]:
    return [r.event for r in rig.journal.records() if isinstance(r.event, ev.ReleaseKeysRotated)]


def count(rig: Rig, kind: type[ev.Event]) -> int:
    return sum(isinstance(r.event, kind) for r in rig.journal.records())


def refusals(rig: Rig) -> list[ev.ReleaseKeysRotationRefused]:
    return [
        r.event for r in rig.journal.records() if isinstance(r.event, ev.ReleaseKeysRotationRefused)
    ]


def said(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_a_vehicle_follows_a_rotation_to_the_key_that_signs_its_next_release(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        rig = await on_disk(tmp_path / "data")
        old, new = rig.signers.release, Signer.generate()
        await converged_on(rig, A, 1)
        to_new = rotation(2, [new], [old, new])
        rig.cloud.serve(with_rotations(rig.signers.bundle(B, 2, release_signer=new), to_new))
        assert (await rig.reconcile()).kind == "converged"
        assert rig.runtime.applied == [A.key, B.key]
        config = TrustStore(tmp_path / "data/trust.json").config  # as persisted
        assert config.release_keys.keys == [new.public_pem]
        assert config.release_keys_version == 2
        (event,) = rotated(rig)
        assert (event.version, event.key_ids, event.threshold) == (2, [new.keyid], 1)
        kinds = [type(r.event) for r in rig.journal.records()]
        assert kinds.index(ev.ReleaseKeysRotated) < kinds.index(ev.DesiredVerified, 3)
        await rig.deliver()
        assert rig.cloud.reconcile_reports()[-1] == ("dsr_2", "converged", [])

    run(scenario)


def test_a_chain_of_rotations_is_applied_in_order_by_a_vehicle_two_behind() -> None:
    """On the simulator's MemoryTrust: each rotation is verified against the keys the one
    before it put in force (the second is signed by none of the vehicle's keys), and a
    2-of-2 set must be met by both its keys."""

    async def scenario() -> None:
        rig = make_rig()
        await rig.agent.start(loop=False)
        await converged_on(rig, A, 1)
        first, second = rig.signers.release, Signer.generate()
        third, fourth = Signer.generate(), Signer.generate()
        to_2 = rotation(2, [second], [first, second])
        to_3 = rotation(3, [third, fourth], [second, third, fourth], k=2)
        bundle = msgspec.structs.replace(
            rig.signers.bundle(B, 2), release=signed(B, third, fourth).envelope
        )
        rig.cloud.serve(with_rotations(bundle, to_2, to_3))
        assert (await rig.reconcile()).kind == "converged"
        assert [(e.version, e.threshold) for e in rotated(rig)] == [(2, 1), (3, 2)]
        assert rotated(rig)[1].key_ids == sorted([third.keyid, fourth.keyid])
        assert rig.agent.parts.trust.config.release_keys_version == 3
        assert rig.runtime.applied == [A.key, B.key]

    run(scenario)


def test_a_forged_rotation_is_refused_once_and_the_release_check_judges_the_bundle(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A rotation its new key signed alone (not the key the vehicle trusts): refused,
    journaled and logged once, trust.json byte-identical; the bundle whose release that
    key signed is rejected by the release check (keys in force, version 1), reported
    once; the known-good release keeps running."""

    async def scenario() -> None:
        rig = await on_disk(tmp_path / "data")
        await converged_on(rig, A, 1)
        store = tmp_path / "data/trust.json"
        before = store.read_bytes()
        thief = Signer.generate()
        forged = rotation(2, [thief], [thief])
        rig.cloud.serve(with_rotations(rig.signers.bundle(B, 2, release_signer=thief), forged))
        with caplog.at_level(logging.WARNING, logger="muto.agent"):
            for _ in range(3):  # fetched in full and judged again at every poll
                assert (await rig.reconcile()).kind == "converged"  # still A's
        assert store.read_bytes() == before
        assert rotated(rig) == [] and rig.runtime.applied == [A.key]
        (refusal,) = refusals(rig)
        assert (refusal.version, refusal.code, refusal.in_force) == (
            2,
            ReasonCode.VERIFY_SIGNATURE_FAILED,
            1,
        )
        assert "valid signature(s) from trusted keys" in refusal.detail
        (rejection,) = [
            r.event for r in rig.journal.records() if isinstance(r.event, ev.DesiredRejected)
        ]
        assert rejection.code == ReasonCode.VERIFY_SIGNATURE_FAILED
        assert "key rotation" not in rejection.detail  # the release's own check
        (refused,) = said(caplog, "rotation to version 2 refused")
        assert "VERIFY_SIGNATURE_FAILED" in refused and "in force stay (version 1)" in refused
        (rejected,) = said(caplog, "rejected")
        assert "dsr_2" in rejected and "VERIFY_SIGNATURE_FAILED" in rejected
        await rig.deliver()
        assert rig.cloud.reconcile_reports() == [
            ("dsr_1", "converged", []),
            ("dsr_2", "rejected", ["VERIFY_SIGNATURE_FAILED"]),  # once
        ]

    run(scenario)


def test_a_rotation_the_vehicles_cannot_follow_does_not_stop_a_rollback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The review's HIGH: a self-signed rotation published by mistake rides in every
    bundle from then on (the chain only grows). The fleet's rollback to the release it ran,
    signed by the keys in force, still runs, and so does the next release they sign; the
    refusal is said once, not at every poll or bundle (it rejected every bundle for
    good)."""

    async def scenario() -> None:
        rig = await on_disk(tmp_path / "data")
        await converged_on(rig, A, 1)
        await converged_on(rig, B, 2)
        stray = Signer.generate()
        bad = rotation(2, [stray], [stray])  # signed by its own key alone
        with caplog.at_level(logging.WARNING, logger="muto.agent"):
            rig.cloud.serve(with_rotations(rig.signers.bundle(A, 3), bad))  # the rollback
            for _ in range(2):
                assert (await rig.reconcile()).kind == "converged"
            rig.cloud.serve(with_rotations(rig.signers.bundle(C, 4), bad))  # a new ETag
            assert (await rig.reconcile()).kind == "converged"
        assert rig.runtime.applied == [A.key, B.key, A.key, C.key]
        assert [e.version for e in refusals(rig)] == [2]  # once
        assert len(said(caplog, "refused")) == 1 and said(caplog, "rejected") == []
        assert count(rig, ev.DesiredRejected) == 0 and rotated(rig) == []
        assert TrustStore(tmp_path / "data/trust.json").config.release_keys_version == 1
        await rig.deliver()
        assert [r[:2] for r in rig.cloud.reconcile_reports()] == [
            ("dsr_1", "converged"),
            ("dsr_2", "converged"),
            ("dsr_3", "converged"),
            ("dsr_4", "converged"),
        ]

    run(scenario)


def test_keys_provisioned_at_a_later_set_of_the_chain_fast_forward_to_its_version(
    tmp_path: Path,
) -> None:
    """The review's v2 {b} (signed a, b), v3 {c} (signed b, c): a vehicle provisioned
    today with c (`muto agent trust --release-key c.pub`, version 1) takes version 3 from
    the chain (it could not follow v2, signed by keys it never had) and runs c's release;
    no `--release-keys-version` is needed."""

    async def scenario() -> None:
        rig = await on_disk(tmp_path / "data")  # provisioned with rig.signers.release: c
        a, b, c = Signer.generate(), Signer.generate(), rig.signers.release
        chain = (rotation(2, [b], [a, b]), rotation(3, [c], [b, c]))
        rig.cloud.serve(with_rotations(rig.signers.bundle(A, 1), *chain))
        assert (await rig.reconcile()).kind == "converged"
        assert rig.runtime.applied == [A.key]
        config = TrustStore(tmp_path / "data/trust.json").config
        assert (config.release_keys_version, config.release_keys.keys) == (3, [c.public_pem])
        assert [(e.version, e.key_ids) for e in rotated(rig)] == [(3, [c.keyid])]
        assert refusals(rig) == []
        # The next rotation, signed by c and d, is followed from there.
        d = Signer.generate()
        rig.cloud.serve(
            with_rotations(
                rig.signers.bundle(B, 2, release_signer=d), *chain, rotation(4, [d], [c, d])
            )
        )
        assert (await rig.reconcile()).kind == "converged"
        assert rig.runtime.applied == [A.key, B.key]
        assert [e.version for e in rotated(rig)] == [3, 4]

    run(scenario)


def test_the_way_back_passes_over_the_rotation_the_vehicle_could_not_follow(
    tmp_path: Path,
) -> None:
    """The stray rotation stays in every bundle (the chain only grows); the next one,
    signed by the keys the vehicle still trusts (and by its own), is applied past it,
    and the release its keys sign runs. The stray one is not said again: the keys in
    force are past its version."""

    async def scenario() -> None:
        rig = await on_disk(tmp_path / "data")
        await converged_on(rig, A, 1)
        stray, fresh = Signer.generate(), Signer.generate()
        bad = rotation(2, [stray], [stray])
        rig.cloud.serve(with_rotations(rig.signers.bundle(A, 1), bad))
        assert (await rig.reconcile()).kind == "converged"
        assert [e.version for e in refusals(rig)] == [2]
        back = rotation(3, [fresh], [stray, rig.signers.release, fresh])
        rig.cloud.serve(with_rotations(rig.signers.bundle(B, 2, release_signer=fresh), bad, back))
        assert (await rig.reconcile()).kind == "converged"
        assert [e.version for e in rotated(rig)] == [3] and len(refusals(rig)) == 1
        assert TrustStore(tmp_path / "data/trust.json").config.release_keys_version == 3
        assert rig.runtime.applied == [A.key, B.key]

    run(scenario)


def test_a_rotation_that_verifies_stays_applied_when_the_next_one_fails(
    tmp_path: Path,
) -> None:
    """Each rotation is trust metadata of its own: the walk passes over the forged one,
    those before it stay (persisted and journaled), and the release signed by the
    forger's key is rejected by the keys in force (version 2)."""

    async def scenario() -> None:
        rig = await on_disk(tmp_path / "data")
        await converged_on(rig, A, 1)
        second, thief = Signer.generate(), Signer.generate()
        chain = (
            rotation(2, [second], [rig.signers.release, second]),
            rotation(3, [thief], [thief]),
        )
        rig.cloud.serve(with_rotations(rig.signers.bundle(B, 2, release_signer=thief), *chain))
        assert (await rig.reconcile()).kind == "converged"
        assert [e.version for e in rotated(rig)] == [2]
        assert TrustStore(tmp_path / "data/trust.json").config.release_keys_version == 2
        assert count(rig, ev.DesiredRejected) == 1 and rig.runtime.applied == [A.key]
        assert [(e.version, e.in_force) for e in refusals(rig)] == [(3, 2)]

    run(scenario)


def test_a_rotation_already_applied_is_skipped(tmp_path: Path) -> None:
    """The cloud serves every rotation ever published: those at or below the trusted
    version change nothing, journal nothing, and are not even verified (the first one
    here no longer opens under the keys in force)."""

    async def scenario() -> None:
        rig = await on_disk(tmp_path / "data")
        first, second, third = rig.signers.release, Signer.generate(), Signer.generate()
        chain = (rotation(2, [second], [first, second]), rotation(3, [third], [second, third]))
        await converged_on(rig, A, 1)
        rig.cloud.serve(with_rotations(rig.signers.bundle(B, 2, release_signer=third), *chain))
        assert (await rig.reconcile()).kind == "converged"
        store = tmp_path / "data/trust.json"
        after_rotation = store.read_bytes()
        rig.cloud.serve(with_rotations(rig.signers.bundle(C, 3, release_signer=third), *chain))
        assert (await rig.reconcile()).kind == "converged"
        assert [e.version for e in rotated(rig)] == [2, 3]  # not again
        assert rig.runtime.applied == [A.key, B.key, C.key]
        config = TrustStore(store).config
        assert config == decode(after_rotation, TrustFile).config  # only `trusted` moved
        assert (config.release_keys_version, config.release_keys.keys) == (3, [third.public_pem])

    run(scenario)


def test_a_restart_keeps_the_rotated_keys_and_says_nothing_of_the_provisioned_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`muto agent run --trust FILE` again with the file of the first start, as every
    unit does at every start: the trust store's rotated keys stay, and the file's release
    keys, which differ by design after a rotation, are not warned about (a debug line
    says why: it warned at every start of every vehicle). Its control-plane keys still
    are compared."""

    async def scenario() -> None:
        rig = await on_disk(tmp_path / "data")
        old, new = rig.signers.release, Signer.generate()
        await converged_on(rig, A, 1)
        rig.cloud.serve(
            with_rotations(
                rig.signers.bundle(B, 2, release_signer=new), rotation(2, [new], [old, new])
            )
        )
        assert (await rig.reconcile()).kind == "converged"
        with caplog.at_level(logging.DEBUG, logger="muto.agent"):
            rig = await on_disk(tmp_path / "data", rig)
        assert rig.agent.parts.trust.config.release_keys.keys == [new.public_pem]
        warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert not [r for r in warned if "--trust" in r.getMessage()]
        (debug,) = said(caplog, "release keys not compared")
        assert "key set version 2" in debug
        # The cloud stops serving the rotation: the release signed by the new key still
        # verifies, on the keys the restart read from disk.
        rig.cloud.serve(rig.signers.bundle(C, 3, release_signer=new))
        assert (await rig.reconcile()).kind == "converged"
        assert rig.runtime.applied[-1] == C.key
        # A file naming another control-plane key is still said.
        other = msgspec.structs.replace(
            rig.signers.trust, control_plane_keys=KeySet(keys=[Signer.generate().public_pem])
        )
        (tmp_path / "trust-given.json").write_bytes(encode(other))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="muto.agent"):
            await on_disk(tmp_path / "data", rig)
        (warning,) = said(caplog, "--trust")
        assert "control-plane keys" in warning and "release keys" not in warning

    run(scenario)


def test_a_trust_file_that_matches_the_store_is_ignored_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        rig = await on_disk(tmp_path / "data")
        with caplog.at_level(logging.WARNING, logger="muto.agent"):
            await on_disk(tmp_path / "data", rig)
        assert not [r for r in caplog.records if "--trust" in r.getMessage()]

    run(scenario)


def test_a_rotation_that_is_no_key_rotation_is_refused_and_changes_nothing() -> None:
    """A release envelope passed off as a rotation: its payload type is bound into what
    was signed, so it is refused before anything is believed of it (no version to name);
    the bundle, signed by the keys in force, is accepted."""

    async def scenario() -> None:
        rig = make_rig()
        await rig.agent.start(loop=False)
        await converged_on(rig, A, 1)
        impostor = signed(B, rig.signers.release).envelope
        rig.cloud.serve(with_rotations(rig.signers.bundle(B, 2), impostor))
        assert (await rig.reconcile()).kind == "converged"
        (refusal,) = refusals(rig)
        assert (refusal.version, refusal.code) == (None, ReasonCode.VERIFY_SIGNATURE_FAILED)
        assert "payloadType" in refusal.detail
        assert rig.runtime.applied == [A.key, B.key] and rotated(rig) == []
        assert count(rig, ev.DesiredRejected) == 0

    run(scenario)


def test_a_rejection_is_logged_once_naming_revision_code_and_detail(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The pass's verdict stays the running release's (`converged`), so the agent's own
    line says nothing of a rejected document: the intake says it, once, as journaled."""

    async def scenario() -> None:
        rig = make_rig()
        await rig.agent.start(loop=False)
        await converged_on(rig, A, 1)
        rig.cloud.serve(rig.signers.bundle(B, 2, release_signer=Signer.generate()))
        with caplog.at_level(logging.WARNING, logger="muto.agent"):
            for _ in range(3):
                assert (await rig.reconcile()).kind == "converged"
        (said,) = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
        assert "revision dsr_2" in said and "VERIFY_SIGNATURE_FAILED" in said
        assert "valid signature(s) from trusted keys" in said

    run(scenario)
