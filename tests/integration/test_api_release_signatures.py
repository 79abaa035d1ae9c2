"""Signatures added to a registered release, through the real server (`muto cloud serve`,
on SQLite and PostgreSQL): a release registered with fewer signatures than later needed
is completed by POSTing the same release signed by more keys, never re-versioned. Each
new signature is verified as at registration (a bad one refuses them all, 422
VERIFY_SIGNATURE_FAILED); the same signatures again change nothing; other content under
the version is still 409. What vehicles fetch carries every signature: the bundle's ETag
changes, so a vehicle holding the earlier bundle fetches it again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from muto.domain.desired import Envelope
from muto.domain.wire import to_builtins
from muto.trust import KeySet, Signer, sign_release
from muto.trust.dsse import cosign
from muto.trust.releases import open_release
from tests.support.api_server import (
    BACKENDS,
    ApiServer,
    database,
    error_of,
    unique,
    vehicle_body,
)
from tests.support.releases import stack_release
from tests.support.trust_kit import flip_signature


def keyids(release: dict[str, Any]) -> list[str]:
    return [s["keyid"] for s in release["envelope"]["signatures"]]


def poll(client: httpx.Client, vehicle_id: str, etag: str | None = None) -> httpx.Response:
    headers = {"If-None-Match": etag} if etag else {}
    return client.get("/desired-states/latest", params={"vehicleId": vehicle_id}, headers=headers)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_release_registered_under_a_lower_threshold_is_completed_not_burned(
    tmp_path: Path, backend: str
) -> None:
    a, b, c, stranger = (Signer.generate() for _ in range(4))
    keys: list[str] = []
    for n, key in enumerate((a, b, c)):
        pem = tmp_path / f"k{n}.pub"
        pem.write_text(key.public_pem)
        keys += ["--release-key", str(pem)]
    release = stack_release(unique("app"), "1.0.0")
    path = f"/releases/{release.stack_name}/1.0.0"
    with database(backend) as url:
        server = ApiServer(tmp_path / "data", url, options=(*keys, "--release-threshold", "1"))
        secret = server.issue("operator")["operator"][0]
        server.start()
        try:
            with server.client(secret) as op:
                first = op.post("/releases", json=to_builtins(sign_release(release, [a])))
                assert first.status_code == 201, first.text
                assert first.json()["metadata"]["added"] == []
                assert op.post("/vehicles", json=vehicle_body("car-1")).status_code == 201
                assign = {
                    "target": {"type": "vehicle", "vehicleId": "car-1"},
                    "stack": {"name": release.stack_name, "version": "1.0.0"},
                }
                assert op.post("/desired-states", json=assign).status_code == 201
                before = poll(op, "car-1")
                assert before.status_code == 200
                assert before.json()["data"]["release"] == first.json()["data"]["envelope"]
                etag = before.headers["etag"]
                assert poll(op, "car-1", etag).status_code == 304  # now remembered
        finally:
            assert server.stop() == 0, server.tail()

        # The fleet now needs two of the three keys: so does the cloud.
        server.options = (*keys, "--release-threshold", "2")
        server.start()
        try:
            with server.client(secret) as op:
                # One key's signature alone registers nothing new...
                other = stack_release(unique("app"), "1.0.0")
                alone = op.post("/releases", json=to_builtins(sign_release(other, [b])))
                assert error_of(alone, 422)["code"] == "VERIFY_SIGNATURE_FAILED"
                # ...but adds itself to the release registered with this digest.
                added = op.post("/releases", json=to_builtins(sign_release(release, [b])))
                assert added.status_code == 200, added.text
                body = added.json()
                assert body["metadata"]["created"] is False
                assert body["metadata"]["added"] == [b.keyid]
                assert isinstance(body["metadata"]["position"], int)
                assert keyids(body["data"]) == [a.keyid, b.keyid]
                assert body["data"]["manifestDigest"] == first.json()["data"]["manifestDigest"]
                assert (
                    body["data"]["envelope"]["payload"]
                    == first.json()["data"]["envelope"]["payload"]
                )

                # The next read, from memory or not, has both.
                assert keyids(op.get(path).json()["data"]) == [a.keyid, b.keyid]
                after = poll(op, "car-1", etag)
                assert after.status_code == 200, "the old ETag still matched"
                assert after.headers["etag"] != etag
                assert [s["keyid"] for s in after.json()["data"]["release"]["signatures"]] == [
                    a.keyid,
                    b.keyid,
                ]
                assert (
                    after.json()["data"]["desiredState"] == before.json()["data"]["desiredState"]
                )  # the same signed document: only the release gained a signature
                assert poll(op, "car-1", after.headers["etag"]).status_code == 304

                # The same signatures again, or fewer: a no-op, as before.
                both = sign_release(release, [a, b])
                for again in (both, sign_release(release, [a]), sign_release(release, [b])):
                    same = op.post("/releases", json=to_builtins(again))
                    assert same.status_code == 200, same.text
                    assert same.json()["metadata"] == {
                        "position": None,
                        "created": False,
                        "added": [],
                    }

                # A new signature that does not verify refuses the others with it.
                for bad in (
                    cosign(cosign(both, stranger), c),  # an untrusted key
                    _flip_last(cosign(both, c)),  # a forged one
                ):
                    refused = op.post("/releases", json=to_builtins(bad))
                    found = error_of(refused, 422)
                    assert found["code"] == "VERIFY_SIGNATURE_FAILED", found
                assert keyids(op.get(path).json()["data"]) == [a.keyid, b.keyid]

                # Other content under the version: still a conflict.
                changed = stack_release(release.stack_name, "1.0.0", size=2)
                conflict = op.post("/releases", json=to_builtins(sign_release(changed, [a, b, c])))
                assert error_of(conflict, 409)["code"] == "conflict"

                # The audit trail shows who added what.
                audit = op.get("/audit", params={"limit": 1000}).json()["data"]
                signed_events = [e for e in audit if e["eventType"] == "Release.Signed"]
                assert len(signed_events) == 1
                assert signed_events[0]["data"]["key"] == release.key
                assert [s["keyid"] for s in signed_events[0]["data"]["signatures"]] == [b.keyid]
        finally:
            assert server.stop() == 0, server.tail()
        assert server.tracebacks() == []


def _flip_last(envelope: Any) -> Any:
    """The envelope with its last signature forged (one bit of it flipped)."""
    last = flip_signature(msgspec.structs.replace(envelope, signatures=envelope.signatures[-1:]))
    return msgspec.structs.replace(
        envelope, signatures=[*envelope.signatures[:-1], *last.signatures]
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_broken_signature_stored_at_registration_gives_way_to_its_keys_valid_one(
    tmp_path: Path, backend: str
) -> None:
    """A's valid signature registers the release (threshold 1) with B's broken one
    beside it, stored as pushed. B's valid signature is then added in its place (before,
    it was a no-op forever: B "had signed"), and the bundle a vehicle needing both keys
    fetches, under a new ETag, carries A's and B's valid signatures only."""
    a, b = Signer.generate(), Signer.generate()
    keys: list[str] = []
    for n, key in enumerate((a, b)):
        pem = tmp_path / f"k{n}.pub"
        pem.write_text(key.public_pem)
        keys += ["--release-key", str(pem)]
    release = stack_release(unique("app"), "1.0.0")
    path = f"/releases/{release.stack_name}/1.0.0"
    signed_by_a = sign_release(release, [a])
    broken_b = flip_signature(sign_release(release, [b])).signatures
    pushed = msgspec.structs.replace(signed_by_a, signatures=[*signed_by_a.signatures, *broken_b])
    with database(backend) as url:
        server = ApiServer(tmp_path / "data", url, options=(*keys, "--release-threshold", "1"))
        secret = server.issue("operator")["operator"][0]
        server.start()
        try:
            with server.client(secret) as op:
                first = op.post("/releases", json=to_builtins(pushed))
                assert first.status_code == 201, first.text
                assert keyids(first.json()["data"]) == [a.keyid, b.keyid]  # as pushed
                assert op.post("/vehicles", json=vehicle_body("car-1")).status_code == 201
                assign = {
                    "target": {"type": "vehicle", "vehicleId": "car-1"},
                    "stack": {"name": release.stack_name, "version": "1.0.0"},
                }
                assert op.post("/desired-states", json=assign).status_code == 201
                etag = poll(op, "car-1").headers["etag"]

                added = op.post("/releases", json=to_builtins(sign_release(release, [b])))
                assert added.status_code == 200, added.text
                assert added.json()["metadata"]["added"] == [b.keyid]
                both = to_builtins(sign_release(release, [a, b]))
                assert added.json()["data"]["envelope"] == both
                assert op.get(path).json()["data"]["envelope"] == both
                after = poll(op, "car-1", etag)
                assert after.status_code == 200, "the old ETag still matched"
                assert after.json()["data"]["release"] == both  # not the broken one beside
                vehicle = KeySet(keys=[a.public_pem, b.public_pem], threshold=2)
                served = msgspec.convert(after.json()["data"]["release"], Envelope)
                assert open_release(served, vehicle)[0] == release

                again = op.post("/releases", json=to_builtins(pushed))  # B's valid one stays
                assert again.status_code == 200, again.text
                assert again.json()["metadata"]["added"] == []
                assert op.get(path).json()["data"]["envelope"] == both
        finally:
            assert server.stop() == 0, server.tail()
        assert server.tracebacks() == []
