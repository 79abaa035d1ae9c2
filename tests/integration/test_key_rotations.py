"""Release key rotations on the control plane (docs/trust.md, "Rotating release keys"):
published by an operator (POST /trust/key-rotations: checked against its own new keys
and the keys in force, versions only rising, the same one again a no-op), served in
every vehicle's bundle (`keyRotations`, with a new ETag), and the release keys in force
(the configured ones, rotated) checked again when a release is assigned or rolled out,
not only when it is registered: after a key is retired or the threshold raised, a
release every vehicle would refuse is refused up front (the reviewer's trust_keys.sh)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgspec
import pytest
from starlette.testclient import TestClient

from muto.cloud.api.app import create_app
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause
from muto.cloud.settings import Settings
from muto.cloud.tokens import Role, issue_token
from muto.domain.desired import Envelope
from muto.domain.wire import decode, to_builtins
from muto.trust.config import TrustConfig
from muto.trust.keys import Signer
from muto.trust.keyset import KeySet
from muto.trust.rotation import KeyRotation, follow_chain, sign_key_rotation
from tests.support.releases import signed, stack_release

A, B, C = Signer.generate(), Signer.generate(), Signer.generate()


def rotation(version: int, new: list[Signer], by: list[Signer], threshold: int = 1) -> Any:
    """The JSON body of POST /trust/key-rotations: `new` keys, signed by `by`."""
    keys = KeySet(keys=[s.public_pem for s in new], threshold=threshold)
    return to_builtins(sign_key_rotation(KeyRotation(version=version, release_keys=keys), by))


@dataclass
class Api:
    client: TestClient
    plane: ControlPlane
    op: dict[str, str]

    def post(self, path: str, body: Any, **headers: str) -> Any:
        return self.client.post(path, json=body, headers={**self.op, **headers})

    def publish(self, body: Any) -> Any:
        return self.post("/trust/key-rotations", body)

    def register(self, version: str, *signers: Signer) -> None:
        answer = self.post(
            "/releases", to_builtins(signed(stack_release("app", version), *signers).envelope)
        )
        assert answer.status_code in (200, 201), answer.text

    def assign(self, version: str) -> Any:
        stack = {"name": "app", "version": version}
        return self.post(
            "/desired-states", {"target": {"type": "vehicle", "vehicleId": "v1"}, "stack": stack}
        )

    def rollout(self, version: str) -> Any:
        return self.post("/rollouts", {"selector": "model=m9", "stack": "app", "version": version})

    def poll(self, etag: str | None = None) -> Any:
        headers = {**self.op, **({"If-None-Match": etag} if etag else {})}
        return self.client.get("/desired-states/latest?vehicleId=v1", headers=headers)


Serve = Callable[..., Iterator[Api]]


@pytest.fixture
def serve(store_settings: Settings, tmp_path: Path) -> Iterator[Callable[..., Api]]:
    """Serve the control plane trusting these release keys (`--release-key`, one file
    each) at `threshold`; serving again is a restart on the same store."""
    opened: list[tuple[ControlPlane, TestClient]] = []
    secret: list[str] = []

    def open_(*keys: Signer, threshold: int = 1) -> Api:
        for plane, client in opened:  # the previous process stops first
            client.__exit__(None, None, None)
            plane.close()
        opened.clear()
        files = []
        for signer in keys:
            path = tmp_path / f"{signer.keyid[:12]}.pub"
            path.write_text(signer.public_pem)
            files.append(path)
        settings = replace(store_settings, release_keys=tuple(files), release_threshold=threshold)
        plane = ControlPlane.open(settings)
        if not secret:
            token, command = issue_token(Role.OPERATOR, None, Cause.of("test"))
            plane.execute(command)
            secret.append(token)
        client = TestClient(create_app(settings, plane=plane))
        client.__enter__()
        opened.append((plane, client))
        api = Api(client, plane, {"Authorization": f"Bearer {secret[0]}"})
        if api.client.get("/vehicles/v1", headers=api.op).status_code != 200:
            answer = api.post("/vehicles", {"vehicleId": "v1", "labels": {"model": "m9"}})
            assert answer.status_code == 201, answer.text
        return api

    yield open_
    for plane, client in opened:
        client.__exit__(None, None, None)
        plane.close()


def events(api: Api, kind: str) -> int:
    found = api.client.get("/audit?limit=1000", headers=api.op).json()["data"]
    return sum(1 for e in found if e["eventType"].startswith(kind))


def test_a_rotation_is_published_once_and_listed(serve: Callable[..., Api]) -> None:
    api = serve(A)
    first = api.publish(rotation(2, [B], [A, B]))
    assert first.status_code == 201, first.text
    assert first.json()["data"]["version"] == 2
    assert first.json()["data"]["keyIds"] == [B.keyid]
    assert first.json()["metadata"]["created"] is True
    # The same rotation again (even with its signatures in another order): nothing stored.
    again = api.publish(rotation(2, [B], [B, A]))
    assert again.status_code == 200, again.text
    assert again.json()["metadata"] == {"position": None, "created": False}
    assert events(api, "ReleaseKeys.") == 1
    listed = api.client.get("/trust/key-rotations", headers=api.op).json()
    assert [r["version"] for r in listed["data"]] == [2]
    assert listed["metadata"] == {"total": 1}


def test_a_rotation_that_does_not_follow_the_chain_is_refused(serve: Callable[..., Api]) -> None:
    api = serve(A)
    # Not signed by the keys in force (A): a stolen new key cannot rotate the fleet.
    alone = api.publish(rotation(2, [B], [B]))
    assert alone.status_code == 422, alone.text
    error = alone.json()["error"]
    assert error["code"] == "VERIFY_SIGNATURE_FAILED"
    assert "in force (version 1)" in error["message"], error
    # Not signed by its own new keys: nothing proves they work.
    unproven = api.publish(rotation(2, [B], [A]))
    assert unproven.status_code == 422
    assert "its new keys" in unproven.json()["error"]["message"]
    assert api.publish(rotation(4, [B], [A, B])).status_code == 201
    # Another rotation under a published version conflicts; a lower one is stale.
    other = api.publish(rotation(4, [C], [B, C]))
    assert other.status_code == 409, other.text
    stale = api.publish(rotation(3, [C], [B, C]))
    assert stale.status_code == 422, stale.text
    assert stale.json()["error"]["code"] == "STALE_REVISION"
    assert "version 3" in stale.json()["error"]["message"]
    assert "version 4" in stale.json()["error"]["message"]
    # Not a rotation's envelope at all.
    odd = api.publish({**rotation(5, [C], [B, C]), "payloadType": "application/json"})
    assert odd.status_code == 422
    assert events(api, "ReleaseKeys.") == 1


def test_the_bundle_carries_the_rotations_under_a_new_etag(serve: Callable[..., Api]) -> None:
    api = serve(A)
    api.register("1.0.0", A, B)
    assert api.assign("1.0.0").status_code == 201
    before = api.poll()
    assert before.status_code == 200
    assert "keyRotations" not in before.json()["data"]  # older agents refuse the field
    etag = before.headers["etag"]
    assert api.poll(etag).status_code == 304
    published = rotation(2, [B], [A, B])
    assert api.publish(published).status_code == 201
    after = api.poll(etag)  # the vehicle's next poll: the bundle changed
    assert after.status_code == 200, after.text
    assert after.json()["data"]["keyRotations"] == [published]
    assert after.headers["etag"] != etag
    assert api.poll(after.headers["etag"]).status_code == 304
    assert api.publish(rotation(3, [C], [B, C])).status_code == 201
    third = api.poll(after.headers["etag"])
    assert third.status_code == 200
    assert [r["payload"] for r in third.json()["data"]["keyRotations"]] == [
        published["payload"],
        rotation(3, [C], [B, C])["payload"],
    ]


def test_a_release_of_retired_keys_is_refused_at_assignment_and_rollout(
    serve: Callable[..., Api],
) -> None:
    api = serve(A)
    api.register("1.0.0", A)
    assert api.assign("1.0.0").status_code == 201
    assert api.publish(rotation(2, [B], [A, B])).status_code == 201
    api.register("1.1.0", B)  # registration checks against the keys in force: B
    refused = api.assign("1.0.0")
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "VERIFY_SIGNATURE_FAILED"
    assert error["message"].startswith("app@1.0.0: 0 valid signature(s)"), error
    assert "need 1" in error["message"] and "version 2" in error["message"]
    started = api.rollout("1.0.0")
    assert started.status_code == 422, started.text
    assert "app@1.0.0" in started.json()["error"]["message"]
    assert api.assign("1.1.0").status_code == 201
    # A restart keeps the keys in force: the chain is in the log.
    api = serve(A)
    assert api.assign("1.0.0").status_code == 422
    assert api.assign("1.1.0").status_code == 201


def test_a_restart_with_a_key_retired_or_a_higher_threshold_refuses_old_releases(
    serve: Callable[..., Api],
) -> None:
    api = serve(A)
    api.register("1.0.0", A)
    api = serve(B)  # the operator retired A by configuration
    api.register("1.1.0", B)
    retired = api.assign("1.0.0")
    assert retired.status_code == 422, retired.text
    assert "app@1.0.0: 0 valid signature(s)" in retired.json()["error"]["message"]
    api = serve(A, B, threshold=2)
    short = api.rollout("1.1.0")
    assert short.status_code == 422, short.text
    message = short.json()["error"]["message"]
    assert message.startswith("app@1.1.0: 1 valid signature(s)") and "need 2" in message
    assert api.assign("1.1.0").status_code == 422
    # Completed with the second signature, it is assigned (the verdict is per envelope).
    api.register("1.1.0", A, B)
    assert api.assign("1.1.0").status_code == 201


def test_without_release_keys_no_rotation_is_published(serve: Callable[..., Api]) -> None:
    """The review's HIGH: a cloud without `--release-key` took any self-signed first
    rotation, which every vehicle then refused in every bundle for good. It has nothing
    to check one against: 409, saying what to configure; nothing stored."""
    api = serve()
    refused = api.publish(rotation(2, [B], [A, B]))
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "conflict"
    assert "no release keys are configured (--release-key)" in error["message"]
    assert "--release-threshold (at least the vehicles' threshold)" in error["message"]
    assert error["details"] == {"setting": "--release-key"}
    assert events(api, "ReleaseKeys.") == 0
    assert api.client.get("/trust/key-rotations", headers=api.op).json()["data"] == []


def test_a_cloud_configured_with_a_later_set_of_the_chain_follows_it(
    serve: Callable[..., Api],
) -> None:
    """The review's v2 {B} (signed A, B), v3 {C} (signed B, C): restarted with
    `--release-key C` (docs/trust.md: any later key set of the chain), the keys in force
    are C at version 3 (it said it did not follow the chain at version 2); the next
    rotation is checked against them."""
    api = serve(A)
    assert api.publish(rotation(2, [B], [A, B])).status_code == 201
    api.register("0.9.0", B)
    assert api.publish(rotation(3, [C], [B, C])).status_code == 201
    api = serve(C)
    api.register("1.0.0", C)
    assert api.assign("1.0.0").status_code == 201
    old = api.assign("0.9.0")
    assert old.status_code == 422, old.text
    assert "key set version 3" in old.json()["error"]["message"]
    stale = api.publish(rotation(4, [A], [B, A]))  # B is retired
    assert stale.status_code == 422 and "in force (version 3)" in stale.json()["error"]["message"]
    assert api.publish(rotation(4, [A], [C, A])).status_code == 201


def test_the_way_back_from_a_rotation_the_fleet_could_not_follow(
    serve: Callable[..., Api],
) -> None:
    """docs/trust.md, "The way back": the cloud at threshold 1 of {A, B} publishes a
    rotation to {C} signed by A alone, which vehicles at threshold 2 refuse. The next
    rotation, to {D}, signed by C (the cloud's keys in force), by A and B (the vehicles')
    and by D, is published, and a vehicle on {A, B} at 2 walks the bundle's chain past
    the refused one to D."""
    D = Signer.generate()
    api = serve(A, B, threshold=1)
    assert api.publish(rotation(2, [C], [A, C])).status_code == 201
    back = api.publish(rotation(3, [D], [C, A, B, D]))
    assert back.status_code == 201, back.text
    old = to_builtins(signed(stack_release("app", "1.0.0"), A, B).envelope)
    assert api.post("/releases", old).status_code == 422  # the keys in force are D's now
    api.register("2.0.0", D)
    assert api.assign("2.0.0").status_code == 201
    served = api.poll().json()["data"]["keyRotations"]
    chain = [decode(msgspec.json.encode(r), Envelope) for r in served]
    vehicle = TrustConfig(
        release_keys=KeySet(keys=[A.public_pem, B.public_pem], threshold=2),
        control_plane_keys=KeySet(keys=[C.public_pem]),
    )
    walked = follow_chain(vehicle, chain)
    assert walked.config.release_keys_version == 3
    assert walked.config.release_keys.trusted().keys() == {D.keyid}
    assert walked.refused is None  # the refused rotation is behind the keys in force
