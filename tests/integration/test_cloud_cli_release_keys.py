"""The "no release keys" warning belongs to the server that registers releases: a
`muto cloud token create` beside a server started with --release-key must not say it
(it never sees the server's flags), and a server without keys still does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.integration.test_api_harness import running

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
