"""Hosted artifacts over HTTP: only the bytes of the digest named are stored, within the
size bound; operators upload, any vehicle downloads, one byte range resumes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from starlette.testclient import TestClient

from muto.cloud.api.app import SPEC, create_app
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause
from muto.cloud.tokens import Role, issue_token
from tests.support.spine import memory_settings, sqlite_settings

LIMIT = 64 * 1024
BLOB = bytes(range(256)) * 100  # 25600 bytes
DIGEST = f"sha256:{hashlib.sha256(BLOB).hexdigest()}"


class Api:
    def __init__(self, client: TestClient, operator: str, vehicle: str) -> None:
        self.client = client
        self.operator = {"Authorization": f"Bearer {operator}"}
        self.vehicle = {"Authorization": f"Bearer {vehicle}"}


@pytest.fixture(params=["memory", "sqlite"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    make = memory_settings if request.param == "memory" else sqlite_settings
    plane = ControlPlane.open(replace(make(tmp_path), max_artifact_bytes=LIMIT))
    secrets = []
    for role, vehicle in ((Role.OPERATOR, None), (Role.VEHICLE, "veh-1")):
        secret, command = issue_token(role, vehicle, Cause.of("test"))
        plane.execute(command)
        secrets.append(secret)
    try:
        with TestClient(create_app(plane.settings, plane=plane)) as client:
            yield Api(client, *secrets)
    finally:
        plane.close()


def test_an_upload_is_stored_once_and_reads_back(api: Api) -> None:
    first = api.client.put(f"/artifacts/{DIGEST}", content=BLOB, headers=api.operator)
    assert first.status_code == 201, first.text
    assert first.json()["data"] == {"digest": DIGEST, "size": len(BLOB)}
    again = api.client.put(f"/artifacts/{DIGEST}", content=BLOB, headers=api.operator)
    assert (again.status_code, again.json()["metadata"]) == (200, {"created": False})
    got = api.client.get(f"/artifacts/{DIGEST}", headers=api.vehicle)
    assert got.status_code == 200
    assert got.content == BLOB
    assert got.headers["accept-ranges"] == "bytes"
    assert got.headers["etag"] == f'"{DIGEST}"'


def test_bytes_that_are_not_the_named_digest_are_refused_and_not_kept(api: Api) -> None:
    wrong = api.client.put(f"/artifacts/{DIGEST}", content=BLOB[:-1] + b"x", headers=api.operator)
    assert wrong.status_code == 422
    assert wrong.json()["error"]["code"] == "invalid"
    assert wrong.json()["error"]["details"]["path"] == "body"
    assert api.client.get(f"/artifacts/{DIGEST}", headers=api.operator).status_code == 404


def test_an_artifact_over_the_limit_is_refused_and_not_kept(api: Api) -> None:
    big = b"x" * (LIMIT + 1)
    digest = f"sha256:{hashlib.sha256(big).hexdigest()}"
    declared = api.client.put(f"/artifacts/{digest}", content=big, headers=api.operator)
    assert declared.status_code == 413
    assert declared.json()["error"]["details"] == {"limit": LIMIT}

    def chunked() -> Iterator[bytes]:  # no Content-Length: the stream itself is counted
        yield big[:LIMIT]
        yield big[LIMIT:]

    streamed = api.client.put(f"/artifacts/{digest}", content=chunked(), headers=api.operator)
    assert streamed.status_code == 413
    assert api.client.head(f"/artifacts/{digest}", headers=api.operator).status_code == 404


def test_a_download_resumes_from_a_byte_offset(api: Api) -> None:
    api.client.put(f"/artifacts/{DIGEST}", content=BLOB, headers=api.operator)
    rest = api.client.get(f"/artifacts/{DIGEST}", headers={**api.vehicle, "Range": "bytes=1000-"})
    assert rest.status_code == 206
    assert rest.content == BLOB[1000:]
    assert rest.headers["content-range"] == f"bytes 1000-{len(BLOB) - 1}/{len(BLOB)}"
    past = api.client.get(
        f"/artifacts/{DIGEST}", headers={**api.vehicle, "Range": f"bytes={len(BLOB)}-"}
    )
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{len(BLOB)}"
    stale = api.client.get(
        f"/artifacts/{DIGEST}",
        headers={**api.vehicle, "Range": "bytes=1000-", "If-Range": '"other"'},
    )
    assert (stale.status_code, stale.content) == (200, BLOB)
    head = api.client.head(f"/artifacts/{DIGEST}", headers={**api.vehicle, "Range": "bytes=10-"})
    assert (head.status_code, head.headers["content-length"]) == (206, str(len(BLOB) - 10))


def test_who_may_do_what(api: Api) -> None:
    assert (
        api.client.put(f"/artifacts/{DIGEST}", content=BLOB, headers=api.vehicle).status_code == 403
    )
    assert api.client.put(f"/artifacts/{DIGEST}", content=BLOB).status_code == 401
    api.client.put(f"/artifacts/{DIGEST}", content=BLOB, headers=api.operator)
    assert api.client.get(f"/artifacts/{DIGEST}").status_code == 401
    assert api.client.get("/artifacts/core.tar.gz", headers=api.vehicle).status_code == 404


def test_a_store_that_cannot_be_written_is_a_503_naming_its_directory(tmp_path: Path) -> None:
    """As on a read-only root with no artifact volume (deploy/kubernetes before it had
    one): the upload is refused by code, with the directory and the error, never a 500;
    the rest of the API serves on, and the spec says so."""
    (tmp_path / "file").write_bytes(b"")
    root = tmp_path / "file" / "artifacts"  # a file where a directory should be
    plane = ControlPlane.open(replace(sqlite_settings(tmp_path), artifact_dir=root))
    secret, command = issue_token(Role.OPERATOR, None, Cause.of("test"))
    plane.execute(command)
    operator = {"Authorization": f"Bearer {secret}"}
    try:
        with TestClient(create_app(plane.settings, plane=plane)) as client:
            put = client.put(f"/artifacts/{DIGEST}", content=BLOB, headers=operator)
            assert put.status_code == 503, put.text
            found = put.json()["error"]
            assert found["code"] == "unavailable"
            assert f"cannot write to {root}: Not a directory (ENOTDIR)" in found["message"]
            assert client.get(f"/artifacts/{DIGEST}", headers=operator).status_code == 404
            assert client.get("/vehicles", headers=operator).status_code == 200
    finally:
        plane.close()
    spec = yaml.safe_load(SPEC.read_text())
    assert "503" in spec["paths"]["/artifacts/{digest}"]["put"]["responses"]
