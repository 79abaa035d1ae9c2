"""`muto cloud` flags reach the server, and only the server speaks of them: the "no
release keys" warning belongs to the server that registers releases (a `muto cloud token
create` beside a server started with --release-key must not say it; a server without
keys still does); --artifact-dir and --max-artifact-mb bound and place hosted artifacts."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.support.api_server import running

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
