"""The memories that answer polls stay exact when signatures are added to a release:
the ETag memory (a vehicle's bundle has a new ETag) and the release envelopes (kept by
release and count of added signatures, which a poll reads with its ETag). In the
process that wrote, the next read shows the addition; in another API process on the
same PostgreSQL database, once it has heard the commit; and even before it has, a poll
it answers 200 never carries an envelope older than its ETag."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from muto.cloud.api.app import create_app
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause
from muto.cloud.settings import Settings
from muto.cloud.tokens import Role, issue_token
from muto.domain.wire import to_builtins
from muto.trust import Signer, sign_release
from tests.support.releases import stack_release
from tests.support.spine import memory_settings, postgres_settings, sqlite_settings
from tests.support.waits import eventually

RELEASE = stack_release("core", "1.0.0")
A, B = Signer.generate(), Signer.generate()
POLL = {"vehicleId": "v1"}


class Served:
    """One API process: a control plane and its app, with an operator token."""

    def __init__(self, plane: ControlPlane, client: TestClient, op: dict[str, str]) -> None:
        self.plane, self.client, self.op = plane, client, op

    def post(self, path: str, body: Any) -> Any:
        return self.client.post(path, json=body, headers=self.op)

    def poll(self, etag: str | None = None) -> Any:
        headers = {**self.op, **({"If-None-Match": etag} if etag else {})}
        return self.client.get("/desired-states/latest", params=POLL, headers=headers)


@contextmanager
def served(settings: Settings, stack: ExitStack) -> Iterator[Served]:
    plane = ControlPlane.open(settings)
    stack.callback(plane.close)
    secret, command = issue_token(Role.OPERATOR, None, Cause.of("test"))
    plane.execute(command)
    client = stack.enter_context(TestClient(create_app(plane.settings, plane=plane)))
    yield Served(plane, client, {"Authorization": f"Bearer {secret}"})


def keyids(answer: Any) -> list[str]:
    return [s["keyid"] for s in answer.json()["data"]["release"]["signatures"]]


def on_v1_signed_by_a(api: Served) -> str:
    """v1 assigned core@1.0.0, registered with A's signature; polled once (so both
    memories hold it). Returns the bundle's ETag."""
    assert api.post("/vehicles", {"vehicleId": "v1"}).status_code == 201
    assert api.post("/releases", to_builtins(sign_release(RELEASE, [A]))).status_code == 201
    assign = {
        "target": {"type": "vehicle", "vehicleId": "v1"},
        "stack": {"name": "core", "version": "1.0.0"},
    }
    assert api.post("/desired-states", assign).status_code == 201
    first = api.poll()
    assert first.status_code == 200 and keyids(first) == [A.keyid]
    etag: str = first.headers["etag"]
    assert api.poll(etag).status_code == 304
    assert api.plane.caches.etags.recent("v1") == etag
    assert api.plane.caches.releases.cached(RELEASE.key) is not None
    return etag


def add_b(api: Served) -> None:
    added = api.post("/releases", to_builtins(sign_release(RELEASE, [B])))
    assert added.status_code == 200, added.text
    assert added.json()["metadata"]["added"] == [B.keyid]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_the_writing_process_serves_the_added_signature_on_the_next_poll(
    tmp_path: Path, kind: str
) -> None:
    settings = (memory_settings if kind == "memory" else sqlite_settings)(tmp_path)
    with ExitStack() as stack, served(settings, stack) as api:
        etag = on_v1_signed_by_a(api)
        add_b(api)
        assert api.plane.caches.etags.recent("v1") is None  # the commit emptied it
        assert api.plane.caches.releases.cached(RELEASE.key) is None  # and evicted this
        after = api.poll(etag)
        assert after.status_code == 200
        assert keyids(after) == [A.keyid, B.keyid]
        assert after.headers["etag"] == etag[:-1] + '+1"'
        assert api.poll(after.headers["etag"]).status_code == 304


@pytest.mark.postgres
def test_another_api_process_serves_it_once_it_has_heard(tmp_path: Path, postgres_url: str) -> None:
    settings = postgres_settings(postgres_url, tmp_path)
    with ExitStack() as stack, served(settings, stack) as a, served(settings, stack) as b:
        etag = on_v1_signed_by_a(a)
        assert b.poll(etag).status_code == 304  # b remembers the vehicle's ETag too
        assert b.plane.caches.etags.recent("v1") == etag
        assert b.poll().status_code == 200  # and keeps the release's envelope
        assert b.plane.caches.releases.cached(RELEASE.key) is not None
        changes = b.plane.caches.changes
        assert changes is not None and b.plane.caches.live()
        heard = changes.heard
        add_b(a)
        eventually(lambda: changes.heard > heard, "b hears the release's new signature")
        assert b.plane.caches.releases.cached(RELEASE.key) is None
        after = b.poll(etag)
        assert after.status_code == 200
        assert keyids(after) == [A.keyid, B.keyid]
        assert b.poll(after.headers["etag"]).status_code == 304


@pytest.mark.postgres
def test_a_process_that_has_not_heard_yet_never_serves_an_envelope_older_than_its_etag(
    tmp_path: Path, postgres_url: str
) -> None:
    settings = postgres_settings(postgres_url, tmp_path)
    with ExitStack() as stack, served(settings, stack) as a, served(settings, stack) as b:
        etag = on_v1_signed_by_a(a)
        assert b.poll().status_code == 200  # b's memory: the envelope with A's alone
        assert b.plane.caches.releases.cached(RELEASE.key) is not None
        b.plane.views.releases.signed.listeners.clear()  # b hears nothing of it
        changes = b.plane.caches.changes
        assert changes is not None
        changes.announcers.clear()
        add_b(a)
        assert b.plane.caches.releases.cached(RELEASE.key) is not None  # still the old one
        after = b.poll()  # no If-None-Match: read from the view, its ETag says +1
        assert after.status_code == 200
        assert after.headers["etag"] == etag[:-1] + '+1"'
        assert keyids(after) == [A.keyid, B.keyid]  # not the remembered envelope
        assert b.plane.caches.releases.cached(RELEASE.key, 1) is not None
