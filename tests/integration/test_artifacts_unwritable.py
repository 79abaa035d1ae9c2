"""The real server with an artifact store it cannot write, as the review found it on the
shipped Kubernetes manifests (a read-only root, no artifact volume) and as a full disk
leaves it: every upload is a 503 `unavailable` naming the directory and the error
(never a 500 `internal`), nothing of it is kept, the process says so in its log and
stays ready, and uploads work again once the store is writable, without a restart.

The store is a real tmpfs the test mounts (tests/faults/disk.py: root and mount(8);
without them the test skips on a developer's machine and fails in CI), remounted
read-only, then filled."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import httpx

from tests.faults.disk import fill, make_room, small_fs
from tests.support.api_server import ApiServer, error_of


def blob(n: int) -> tuple[bytes, str]:
    data = os.urandom(64 * 1024) + bytes([n])  # whole in the socket buffers either way
    return data, f"sha256:{hashlib.sha256(data).hexdigest()}"


def remount(fs: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(fs)], check=True)


def refused(http: httpx.Client, root: Path, n: int, cause: str) -> None:
    data, digest = blob(n)
    found = error_of(http.put(f"/artifacts/{digest}", content=data), 503)
    assert found["code"] == "unavailable"
    assert f"cannot write to {root}: {cause}; nothing was kept" in found["message"]
    assert http.head(f"/artifacts/{digest}").status_code == 404
    assert not list((root / "incoming").glob("*.part"))


def stored(http: httpx.Client, n: int) -> None:
    data, digest = blob(n)
    assert http.put(f"/artifacts/{digest}", content=data).status_code == 201
    assert http.get(f"/artifacts/{digest}").content == data


def test_an_unwritable_artifact_store_answers_503_and_recovers(tmp_path: Path) -> None:
    with small_fs(tmp_path / "fs", 8) as fs:
        root = fs / "artifacts"
        server = ApiServer(tmp_path / "data", options=("--artifact-dir", str(root)))
        secret = server.issue("operator")["operator"][0]
        remount(fs, "ro")
        server.start()
        try:
            assert f"hosted artifacts cannot be stored: {root} is not writable" in server.tail()
            with server.client(secret) as http:
                refused(http, root, 1, "Read-only file system (EROFS)")
                assert http.get("/readyz").status_code == 200  # all else still serves
                remount(fs, "rw")
                stored(http, 2)
                fill(fs)
                refused(http, root, 3, "No space left on device (ENOSPC)")
                make_room(fs)
                stored(http, 4)
        finally:
            remount(fs, "rw")
            assert server.stop() == 0, server.tail()
        assert server.tracebacks() == []
        assert "unhandled error" not in server.tail()
