"""Release key rotation on the vehicle: the agent follows the KeyRotations a bundle
carries (`keyRotations`, oldest first) before it verifies the release, on the agent rig
with the real trust store on disk.

A rotation newer than the trusted key set is verified against the keys in force and
persisted, then journaled (ReleaseKeysRotated); an older one is skipped; one that does
not verify rejects the bundle (reported once, logged once) and leaves trust.json as it
was; a restart keeps the rotated keys, whatever `--trust` file it is given.
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


def test_a_forged_rotation_rejects_the_bundle_and_leaves_the_trust_store_as_it_was(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A rotation its new key signed alone (not the key the vehicle trusts): the bundle
    whose release that key signed is rejected, journaled, reported and logged once, and
    trust.json is byte-identical; the known-good release keeps running."""

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
        (rejection,) = [
            r.event for r in rig.journal.records() if isinstance(r.event, ev.DesiredRejected)
        ]
        assert rejection.code == ReasonCode.VERIFY_SIGNATURE_FAILED
        assert "key rotation to version 2" in rejection.detail
        said = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
        assert len(said) == 1
        assert "dsr_2" in said[0] and "VERIFY_SIGNATURE_FAILED" in said[0]
        assert "key rotation to version 2" in said[0]
        await rig.deliver()
        assert rig.cloud.reconcile_reports() == [
            ("dsr_1", "converged", []),
            ("dsr_2", "rejected", ["VERIFY_SIGNATURE_FAILED"]),  # once
        ]

    run(scenario)


def test_a_rotation_that_verifies_stays_applied_when_the_next_one_fails(
    tmp_path: Path,
) -> None:
    """Each rotation is trust metadata of its own: the chain stops at the forged one,
    those before it stay (persisted and journaled), and the bundle is rejected."""

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


def test_a_restart_keeps_the_rotated_keys_and_warns_of_the_trust_file_it_ignores(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`muto agent run --trust FILE` again with the file of the first start: the trust
    store's rotated keys stay, and a warning names both key sets and the way keys change."""

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
        with caplog.at_level(logging.WARNING, logger="muto.agent"):
            rig = await on_disk(tmp_path / "data", rig)
        assert rig.agent.parts.trust.config.release_keys.keys == [new.public_pem]
        (warning,) = [r.getMessage() for r in caplog.records if "--trust" in r.getMessage()]
        assert f"release keys 1 of [{old.keyid}]" in warning
        assert f"trusts 1 of [{new.keyid}]" in warning
        assert "KeyRotation" in warning and "control-plane" not in warning
        # The cloud stops serving the rotation: the release signed by the new key still
        # verifies, on the keys the restart read from disk.
        rig.cloud.serve(rig.signers.bundle(C, 3, release_signer=new))
        assert (await rig.reconcile()).kind == "converged"
        assert rig.runtime.applied[-1] == C.key

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


def test_a_rotation_that_is_no_key_rotation_rejects_the_bundle() -> None:
    """A release envelope passed off as a rotation: its payload type is bound into what
    was signed, so it is refused before anything is believed of it."""

    async def scenario() -> None:
        rig = make_rig()
        await rig.agent.start(loop=False)
        await converged_on(rig, A, 1)
        impostor = signed(B, rig.signers.release).envelope
        rig.cloud.serve(with_rotations(rig.signers.bundle(B, 2), impostor))
        assert (await rig.reconcile()).kind == "converged"  # still A's
        (rejection,) = [
            r.event for r in rig.journal.records() if isinstance(r.event, ev.DesiredRejected)
        ]
        assert rejection.code == ReasonCode.VERIFY_SIGNATURE_FAILED
        assert "payloadType" in rejection.detail
        assert rig.runtime.applied == [A.key] and rotated(rig) == []

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
