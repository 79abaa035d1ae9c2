"""`muto cloud serve --role`: flag or MUTO_ROLE, checked before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from muto.cloud.settings import ENVIRONMENT, ROLES, Settings


def test_the_role_comes_from_the_flag_then_the_environment_then_all() -> None:
    assert Settings.from_env({}).role == "all"
    assert Settings.from_env({"MUTO_ROLE": "worker"}).role == "worker"
    assert Settings.from_env({"MUTO_ROLE": "worker"}, role="api").role == "api"
    assert "MUTO_ROLE" in ENVIRONMENT


def test_an_unknown_role_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"role must be one of all, api, worker, not 'apis'"):
        Settings.from_env({"MUTO_ROLE": "apis"})


@pytest.mark.parametrize("role", ROLES)
def test_what_each_role_does(role: str) -> None:
    settings = Settings(role=role)
    assert settings.serves_api == (role != "worker")
    assert settings.does_duties == (role != "api")


def test_api_and_worker_roles_need_postgresql(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "muto.cli",
            "cloud",
            "serve",
            "--role",
            "worker",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--role worker needs --database-url postgresql" in done.stderr


def test_a_replica_never_makes_a_signing_key_of_its_own(tmp_path: Path) -> None:
    from muto.cloud.signing import control_plane_signer

    settings = Settings(data_dir=tmp_path, database_url="postgresql+psycopg://x/y", role="api")
    with pytest.raises(FileNotFoundError, match="control-plane signing key is missing"):
        control_plane_signer(settings)
    assert not (tmp_path / "keys").exists()
