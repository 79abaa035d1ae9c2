"""A rollout starts only if its rollback can be taken (docs/rollouts.md, "Rollback"):
after a key rotation retired the keys that signed the release the members would be
rolled back to, every member would refuse that rollback (VERIFY_SIGNATURE_FAILED) and
stay on the failing release, `rolling_back` for good. POST /rollouts checks each release
its rollback would restore, as the start computes it, against the release keys in force,
and refuses before any canary is assigned; "run nothing" needs no signature."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from muto.cloud.api.app import create_app
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause
from muto.cloud.rollouts import UncheckedRollbacks, start_rollout
from muto.cloud.settings import Settings
from muto.cloud.tokens import Role, issue_token
from muto.domain.model.rollout import Rollout
from muto.domain.requests import RolloutRequest
from muto.domain.wire import to_builtins
from muto.trust.keys import Signer
from muto.trust.keyset import KeySet
from muto.trust.rotation import KeyRotation, sign_key_rotation
from tests.support.releases import signed, stack_release
from tests.support.spine import cause

OLD, NEW = Signer.generate(), Signer.generate()


@dataclass
class Api:
    client: TestClient
    plane: ControlPlane
    op: dict[str, str]

    def post(self, path: str, body: Any) -> Any:
        return self.client.post(path, json=body, headers=self.op)

    def get(self, path: str) -> Any:
        answer = self.client.get(path, headers=self.op)
        assert answer.status_code == 200, answer.text
        return answer.json()["data"]

    def push(self, version: str, *signers: Signer) -> None:
        envelope = signed(stack_release("app", version), *signers).envelope
        answer = self.post("/releases", to_builtins(envelope))
        assert answer.status_code in (200, 201), answer.text

    def rollout(self, selector: str, version: str) -> Any:
        return self.post("/rollouts", {"selector": selector, "stack": "app", "version": version})

    def retire_old_key(self) -> None:
        keys = KeySet(keys=[NEW.public_pem], threshold=1)
        body = to_builtins(sign_key_rotation(KeyRotation(version=2, release_keys=keys), [OLD, NEW]))
        answer = self.post("/trust/key-rotations", body)
        assert answer.status_code == 201, answer.text


@pytest.fixture
def api(store_settings: Settings, tmp_path: Path) -> Iterator[Api]:
    """The control plane trusting OLD (`--release-key`); vehicles on model m1 ran
    app@1.0.0 (signed by OLD), one on m2 ran nothing."""
    key = tmp_path / "old.pub"
    key.write_text(OLD.public_pem)
    settings = replace(store_settings, release_keys=(key,), release_threshold=1)
    plane = ControlPlane.open(settings)
    token, command = issue_token(Role.OPERATOR, None, Cause.of("test"))
    plane.execute(command)
    with TestClient(create_app(settings, plane=plane)) as client:
        found = Api(client, plane, {"Authorization": f"Bearer {token}"})
        for vehicle_id, model in (("v1", "m1"), ("v2", "m1"), ("v3", "m2")):
            body = {"vehicleId": vehicle_id, "labels": {"model": model, "region": "eu"}}
            assert found.post("/vehicles", body).status_code == 201
        found.push("1.0.0", OLD)
        given = found.post(
            "/desired-states",
            {"target": {"selector": "model=m1"}, "stack": {"name": "app", "version": "1.0.0"}},
        )
        assert given.status_code == 201, given.text
        yield found
    plane.close()


def test_a_rollout_whose_rollback_the_keys_in_force_refuse_is_not_started(api: Api) -> None:
    api.retire_old_key()
    api.push("2.0.0", NEW)
    refused = api.rollout("model=m1", "2.0.0")
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "VERIFY_SIGNATURE_FAILED"
    message = error["message"]
    assert "app@1.0.0: 0 valid signature(s)" in message, message
    assert "[the rollback of 2 vehicle(s)]" in message, message
    assert "muto releases push" in message, message
    # Nothing touched: no rollout, every member still on its release.
    assert api.get("/rollouts") == []
    for vehicle_id in ("v1", "v2"):
        assert api.get(f"/vehicles/{vehicle_id}")["desiredRelease"] == "app@1.0.0"
    # Re-signed by the keys in force and pushed again: its rollback can be taken.
    api.push("1.0.0", NEW)
    started = api.rollout("model=m1", "2.0.0")
    assert started.status_code == 201, started.text
    rollout_id = started.json()["data"]["rolloutId"]
    stored: Rollout = api.plane.log.repository.get(Rollout.create_id(rollout_id))
    assert stored.previous_releases == {"v1": "app@1.0.0", "v2": "app@1.0.0"}


def test_a_rollback_to_run_nothing_needs_no_signature(api: Api) -> None:
    """v3 ran nothing before: its rollback says "run nothing", which no key signs."""
    api.retire_old_key()
    api.push("2.0.0", NEW)
    started = api.rollout("model=m2", "2.0.0")
    assert started.status_code == 201, started.text


def test_the_start_refuses_a_rollback_target_not_checked(api: Api) -> None:
    """What the API relies on: given the releases it checked, the start raises, storing
    nothing, when a member's rollback would restore another (its history changed since
    the check), naming each with the members it would restore it to."""
    cp = api.plane
    api.push("2.0.0", OLD)
    request = RolloutRequest(selector="model=m1", stack="app", version="2.0.0", rollout_id="ro")
    with pytest.raises(UncheckedRollbacks) as raised:
        cp.execute(start_rollout(request, ["v1"], ["v2"], cause(), cp.sign, cp.clock, frozenset()))
    assert raised.value.targets == {"app@1.0.0": ["v1", "v2"]}
    assert api.get("/rollouts") == []
    checked = frozenset({"app@1.0.0"})
    cp.execute(start_rollout(request, ["v1"], ["v2"], cause(), cp.sign, cp.clock, checked))
    assert [r["rolloutId"] for r in api.get("/rollouts")] == ["ro"]
