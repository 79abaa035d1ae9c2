"""The mistakes made starting the control plane end every `muto cloud` command that
opens it (serve, token, seed) with exit 2 and one line on stderr naming the setting and
the cause, as a bad --role does: never a traceback (the review saw 26 to 148 lines and
exit 3 from uvicorn's lifespan)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.support.services import database_url, fresh_database, postgres_admin

DATABASE = "muto cloud: database_url (--database-url, MUTO_DATABASE_URL): "
DATA_DIR = "muto cloud: data_dir (--data-dir, MUTO_DATA_DIR): "
COMMANDS = {
    "serve": ["serve", "--no-mqtt", "--host", "127.0.0.1"],
    "token": ["token", "create", "--operator"],
    "seed": ["seed"],
}


def refused(command: str, data_dir: Path, url: str, role: str | None = None) -> str:
    """What `muto cloud <command>` said on its way out: one line, exit 2."""
    args = [*COMMANDS[command], "--data-dir", str(data_dir), "--database-url", url]
    args += ["--port", str(free_port())] if command == "serve" else []
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUTO_")}
    env |= {"MUTO_ROLE": role} if role else {}  # every command reads it; token has no --role
    done = subprocess.run(
        [sys.executable, "-m", "muto.cli", "cloud", *args],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("url", "scheme"),
    [("postgresql://postgres@127.0.0.1/muto", "postgresql"), ("postgres://db/muto", "postgres")],
)
def test_a_url_without_the_psycopg_driver_is_named(
    tmp_path: Path, command: str, url: str, scheme: str
) -> None:
    said = refused(command, tmp_path, url)
    assert said == f"{DATABASE}use postgresql+psycopg://, not {scheme}://"
    assert list(tmp_path.iterdir()) == []  # refused before anything was opened


def test_a_url_of_another_database_or_none_is_named(tmp_path: Path) -> None:
    said = refused("serve", tmp_path, "mysql://db/muto")
    assert said.startswith(f"{DATABASE[:-2]} must be postgresql+psycopg://")
    said = refused("token", tmp_path, "postgresql+psycopg://db:port/muto")
    assert said.startswith(f"{DATABASE[:-2]} is not a database URL: ")


@pytest.mark.parametrize("command", ["serve", "token"])
def test_a_port_nothing_listens_on_is_named(tmp_path: Path, command: str) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/muto"
    said = refused(command, tmp_path, url, role="api" if command == "serve" else None)
    assert said.startswith(DATABASE), said
    assert "Connection refused" in said


@pytest.mark.postgres
@pytest.mark.parametrize("command", ["serve", "token"])
def test_a_database_that_does_not_exist_is_named(tmp_path: Path, command: str) -> None:
    with postgres_admin():  # the server is there (CI fails, elsewhere skips, if not)
        pass
    name = f"muto_absent_{uuid.uuid4().hex[:8]}"
    said = refused(command, tmp_path, database_url(name), role="api")
    assert said.startswith(DATABASE), said
    assert f'database "{name}" does not exist' in said


@pytest.mark.postgres
@pytest.mark.parametrize("command", ["serve", "token"])
def test_an_api_process_without_the_signing_key_is_named(tmp_path: Path, command: str) -> None:
    with fresh_database() as url:
        said = refused(command, tmp_path, url, role="api")
    key = tmp_path / "keys" / "control-plane.key"
    assert said.startswith(f"{DATA_DIR}{key}: the control-plane signing key is missing"), said
    assert not key.exists()
