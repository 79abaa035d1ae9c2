"""The request-path caches never serve a stale answer in the process that changed the
state: a new assignment invalidates a vehicle's remembered ETag, a revocation evicts the
remembered token at once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from muto.cloud.api.app import create_app
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause
from muto.cloud.tokens import MISS, Authenticator, Principal, Role, issue_token, revoke_token
from muto.domain.wire import to_builtins
from tests.support.releases import signed_release
from tests.support.spine import memory_settings


def client(tmp_path: Path) -> tuple[TestClient, dict[str, str]]:
    c, op, _ = client_and_plane(tmp_path)
    return c, op


def client_and_plane(tmp_path: Path) -> tuple[TestClient, dict[str, str], ControlPlane]:
    plane = ControlPlane.open(memory_settings(tmp_path))
    secret, command = issue_token(Role.OPERATOR, None, Cause.of("test"))
    plane.execute(command)
    app = create_app(plane.settings, plane=plane)
    return TestClient(app), {"Authorization": f"Bearer {secret}"}, plane


def v1_on_core_1_0_0(c: TestClient, op: dict[str, str]) -> dict[str, Any]:
    """Vehicle v1 registered, core 1.0.0 and 1.1.0 published, 1.0.0 assigned to v1;
    returns the assignment's body (change its version to assign 1.1.0)."""
    c.post("/vehicles", json={"vehicleId": "v1", "labels": {"model": "m3"}}, headers=op)
    for version in ("1.0.0", "1.1.0"):
        signed = signed_release(version=version)
        c.post("/releases", json=to_builtins(signed.envelope), headers=op)
    assign: dict[str, Any] = {
        "target": {"type": "vehicle", "selector": "v1"},
        "stack": {"name": "core", "version": "1.0.0"},
    }
    assert c.post("/desired-states", json=assign, headers=op).status_code == 201
    return assign


def test_a_poll_right_after_a_new_assignment_gets_the_new_revision(tmp_path: Path) -> None:
    c, op = client(tmp_path)
    with c:
        assign = v1_on_core_1_0_0(c, op)
        first = c.get("/desired-states/latest", params={"vehicleId": "v1"}, headers=op)
        etag = first.headers["etag"]
        again = c.get(
            "/desired-states/latest",
            params={"vehicleId": "v1"},
            headers={**op, "If-None-Match": etag},
        )
        assert again.status_code == 304  # answered from the remembered ETag
        assign["stack"]["version"] = "1.1.0"
        assert c.post("/desired-states", json=assign, headers=op).status_code == 201
        after = c.get(
            "/desired-states/latest",
            params={"vehicleId": "v1"},
            headers={**op, "If-None-Match": etag},
        )
        assert after.status_code == 200
        assert after.json()["metadata"]["sequence"] == 2


def test_between_an_assignments_commit_and_its_announcement_the_memory_holds_off(
    tmp_path: Path,
) -> None:
    """The notifier publishes once the desired view's commit is visible; the ETag memory
    hears of it a moment later, when the projector announces. In that moment the memory
    must neither answer with the old ETag nor remember it again (a vehicle woken by the
    notify would get a 304 and wait for its next poll)."""
    c, op, plane = client_and_plane(tmp_path)
    etags, desired, store = plane.caches.etags, plane.views.desired, plane.views.store
    poll = {"vehicleId": "v1"}
    with c:
        assign = v1_on_core_1_0_0(c, op)
        etag = c.get("/desired-states/latest", params=poll, headers=op).headers["etag"]
        assert etags.recent("v1") == etag
        in_between: list[tuple[str | None, str | None]] = []
        writing = store.writing

        @contextmanager
        def observed() -> Iterator[Any]:
            with writing() as session:
                yield session
            if "v1" in desired.assigned.pending:  # committed, not announced yet
                answered = etags.recent("v1")
                etags.remember("v1", etag, etags.generation())  # a read of the old row
                in_between.append((answered, etags.recent("v1")))

        store.writing = observed  # type: ignore[method-assign]
        try:
            assign["stack"]["version"] = "1.1.0"
            assert c.post("/desired-states", json=assign, headers=op).status_code == 201
        finally:
            del store.writing
        assert in_between == [(None, None)]
        after = c.get("/desired-states/latest", params=poll, headers={**op, "If-None-Match": etag})
        assert after.status_code == 200 and after.json()["metadata"]["sequence"] == 2


def test_a_token_used_just_before_its_revocation_is_refused_at_once(tmp_path: Path) -> None:
    c, op = client(tmp_path)
    with c:
        c.post("/vehicles", json={"vehicleId": "v1"}, headers=op)
        issued = c.post("/tokens", json={"role": "vehicle", "vehicleId": "v1"}, headers=op).json()[
            "data"
        ]
        vehicle = {"Authorization": f"Bearer {issued['token']}"}
        assert c.get("/vehicles/v1", headers=vehicle).status_code == 200  # now cached
        assert c.post(f"/tokens/{issued['tokenId']}/revoke", headers=op).status_code == 200
        assert c.get("/vehicles/v1", headers=vehicle).status_code == 401


def test_a_poll_the_memory_cannot_answer_is_checked_against_the_view(tmp_path: Path) -> None:
    """A poll the ETag memory does not know (another process's vehicle, a restart): its
    ETag is compared with the view's; 304 only when it is the current one."""
    c, op, plane = client_and_plane(tmp_path)
    with c:
        c.post("/vehicles", json={"vehicleId": "v1", "labels": {"model": "m3"}}, headers=op)
        for version in ("1.0.0", "1.1.0"):
            envelope = signed_release(version=version).body()
            c.post("/releases", json=envelope, headers=op)
        assign = {
            "target": {"type": "vehicle", "selector": "v1"},
            "stack": {"name": "core", "version": "1.0.0"},
        }
        c.post("/desired-states", json=assign, headers=op)
        old = c.get("/desired-states/latest", params={"vehicleId": "v1"}, headers=op)
        assign["stack"]["version"] = "1.1.0"
        c.post("/desired-states", json=assign, headers=op)
        new = c.get("/desired-states/latest", params={"vehicleId": "v1"}, headers=op)
        current, stale = new.headers["etag"], old.headers["etag"]
        for asked, status in ((current, 304), (f"{stale}, {current}", 304), (stale, 200)):
            plane.caches.etags.clear()  # as in a process that has not seen it yet
            polled = c.get(
                "/desired-states/latest",
                params={"vehicleId": "v1"},
                headers={**op, "If-None-Match": asked},
            )
            assert polled.status_code == status, asked
            assert polled.headers["etag"] == current


class RevokedWhileReading(Authenticator):
    """An authenticator whose view read is overtaken by the token's revocation: the
    read answers "valid", and the revocation commits before the answer is cached."""

    def __init__(self, plane: ControlPlane, token_id: str) -> None:
        super().__init__(plane.views)
        self.plane, self.token_id, self.raced = plane, token_id, False
        plane.views.tokens.revoked.append(self.forget)

    def _lookup(self, key: str) -> Principal | None:
        found = super()._lookup(key)
        if not self.raced:
            self.raced = True
            self.plane.execute(revoke_token(self.token_id, Cause.of("test")))
        return found


def test_a_token_read_before_its_revocation_committed_is_not_cached(tmp_path: Path) -> None:
    plane = ControlPlane.open(memory_settings(tmp_path))
    try:
        secret, command = issue_token(Role.OPERATOR, None, Cause.of("test"))
        token_id = plane.execute(command).value
        auth = RevokedWhileReading(plane, token_id)
        assert auth.authenticate(secret) is not None  # the read was before the revocation
        assert auth.cached(secret) is MISS  # but it was not kept
        assert auth.authenticate(secret) is None
    finally:
        plane.close()
