"""`muto cloud` flags reach the server, and only the server speaks of them: the "no
release keys" warning belongs to the server that registers releases (a `muto cloud token
create` beside a server started with --release-key must not say it; a server without
keys still does); --artifact-dir and --max-artifact-mb bound and place hosted artifacts;
--release-threshold is the k of --release-key a release must carry to be registered."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
import time
from pathlib import Path

import httpx

from muto.trust.keys import Signer
from tests.conftest import free_port
from tests.support.api_server import ApiServer, error_of, running, unique
from tests.support.releases import signed, stack_release

WARNING = "no release keys configured"


def test_token_create_does_not_warn_about_release_keys(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "muto.cli",
            "cloud",
            "token",
            "create",
            "--operator",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip()
    assert WARNING not in done.stderr


def test_a_server_without_release_keys_says_so(tmp_path: Path) -> None:
    with running("sqlite", tmp_path / "data", "operator") as (server, _):
        pass
    assert WARNING in server.tail(20_000)


def test_serve_takes_the_artifact_limit_and_directory_from_its_flags(tmp_path: Path) -> None:
    data, store = tmp_path / "data", tmp_path / "elsewhere"
    secret = subprocess.run(
        [sys.executable, "-m", "muto.cli", "cloud", "token", "create", "--operator",
         "--data-dir", str(data)],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout.strip()  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "muto.cli", "cloud", "serve", "--no-mqtt", "--port", str(port),
         "--data-dir", str(data), "--artifact-dir", str(store), "--max-artifact-mb", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline and server.poll() is None
            time.sleep(0.1)
        auth = {"Authorization": f"Bearer {secret}"}
        small, big = b"s" * 1000, b"b" * (2 << 20)
        for blob, status in ((small, 201), (big, 413)):
            digest = f"sha256:{hashlib.sha256(blob).hexdigest()}"
            answer = httpx.put(f"{url}/artifacts/{digest}", content=blob, headers=auth, timeout=60)
            assert answer.status_code == status, answer.text
        assert answer.json()["error"]["details"] == {"limit": 1 << 20}
        assert [p.name for p in (store / "sha256").rglob("*") if p.is_file()] == [
            hashlib.sha256(small).hexdigest()
        ]
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0


def test_a_release_under_the_threshold_is_refused_and_a_k_signed_one_registered(
    tmp_path: Path,
) -> None:
    """Three release keys, k = 2 (as `muto agent trust --threshold 2` on the vehicles):
    a release signed by one key is refused, naming the count, and stores nothing, so
    the same version signed by two is registered (it was burned before: registered
    with one signature, and the same digest again was a no-op)."""
    keys = [Signer.generate() for _ in range(3)]
    flags: list[str] = ["--release-threshold", "2"]
    for n, key in enumerate(keys):
        (tmp_path / f"k{n}.pub").write_text(key.public_pem)
        flags += ["--release-key", str(tmp_path / f"k{n}.pub")]
    server = ApiServer(tmp_path / "data", options=tuple(flags))
    secret = server.issue("operator")["operator"][0]
    server.start()
    try:
        with server.client(secret) as op:
            release = stack_release(unique("app"), "1.0.0")
            once = op.post("/releases", json=signed(release, keys[0]).body())
            refused = error_of(once, 422)
            assert refused["code"] == "VERIFY_SIGNATURE_FAILED"
            assert "1 valid signature(s) from trusted keys, need 2" in refused["message"]
            stranger = op.post("/releases", json=signed(release, keys[0], Signer.generate()).body())
            assert error_of(stranger, 422)["code"] == "VERIFY_SIGNATURE_FAILED"
            gone = op.get(f"/releases/{release.stack_name}/1.0.0")
            assert gone.status_code == 404, gone.text
            twice = op.post("/releases", json=signed(release, keys[0], keys[2]).body())
            assert twice.status_code == 201, twice.text
            stored = op.get(f"/releases/{release.stack_name}/1.0.0").json()["data"]
            assert len(stored["envelope"]["signatures"]) == 2
    finally:
        assert server.stop() == 0, server.tail()
    assert server.tracebacks() == []
