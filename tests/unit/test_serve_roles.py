"""`muto cloud serve --role`: flag or MUTO_ROLE, checked before anything starts."""

from __future__ import annotations

import os
import re
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


@pytest.mark.parametrize(
    ("environ", "overrides", "named"),
    [
        (
            {},
            {"head_timeout_s": 0.0},
            "head_timeout_s (--head-timeout, MUTO_HEAD_TIMEOUT_S) must be more than 0, not 0.0",
        ),
        (
            {"MUTO_KEEP_ALIVE_S": "-1"},
            {},
            "keep_alive_s (--keep-alive, MUTO_KEEP_ALIVE_S) must be more than 0, not -1.0",
        ),
        (
            {},
            {"max_connections": 0},
            "max_connections (--max-connections, MUTO_MAX_CONNECTIONS) must be at least 1",
        ),
        (
            {},
            {"vehicle_burst": 0},
            "vehicle_burst (--vehicle-burst, MUTO_VEHICLE_BURST) must be at least 1",
        ),
        (
            {"MUTO_VEHICLE_RATE_PER_S": "-0.5"},
            {},
            "vehicle_rate_per_s (--vehicle-rate, MUTO_VEHICLE_RATE_PER_S) must be at least 0",
        ),
        ({"MUTO_MAX_CONNECTIONS": "lots"}, {}, "MUTO_MAX_CONNECTIONS must be a number, not 'lots'"),
        # NaN compares false with every bound; inf is no deadline or no limit at all.
        (
            {"MUTO_HEAD_TIMEOUT_S": "nan"},
            {},
            "head_timeout_s (--head-timeout, MUTO_HEAD_TIMEOUT_S) must be a finite number, not nan",
        ),
        (
            {},
            {"vehicle_rate_per_s": float("nan")},
            "vehicle_rate_per_s (--vehicle-rate, MUTO_VEHICLE_RATE_PER_S) must be a finite number",
        ),
        (
            {"MUTO_OPERATOR_RATE_PER_S": "inf"},
            {},
            "operator_rate_per_s (--operator-rate, MUTO_OPERATOR_RATE_PER_S) must be a finite",
        ),
    ],
)
def test_a_number_out_of_bounds_is_refused_by_name(
    environ: dict[str, str], overrides: dict[str, float], named: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        Settings.from_env(environ, **overrides)


@pytest.mark.parametrize(
    "command", [["serve", "--head-timeout", "0"], ["token", "create", "--operator"]]
)
def test_a_bad_number_ends_a_cloud_command_by_name(tmp_path: Path, command: list[str]) -> None:
    env = {**os.environ, "MUTO_KEEP_ALIVE_S": "0"} if command[0] == "token" else None
    done = subprocess.run(
        [sys.executable, "-m", "muto.cli", "cloud", *command, "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2, done.stderr
    named = "head_timeout_s (--head-timeout" if command[0] == "serve" else "keep_alive_s ("
    assert f"muto cloud: {named}" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # refused before anything was opened


def test_the_bounds_allow_the_defaults_and_no_rate_limit() -> None:
    assert Settings.from_env({}, operator_rate_per_s=0.0).operator_rate_per_s == 0.0


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


def test_postgresql_connections_carry_the_link_bounds_and_the_operators_own_win() -> None:
    from sqlalchemy.engine import make_url

    from muto.cloud.settings import DATABASE_LINK

    given = "postgresql+psycopg://muto:pw@db:5432/fleet?connect_timeout=30"
    settings = Settings(database_url=given)
    for url in (settings.events_url, settings.views_url):
        query = make_url(url).query
        assert query == {**DATABASE_LINK, "connect_timeout": "30"}
        assert make_url(url).password == "pw"
    assert Settings(data_dir=Path("d")).events_url == "sqlite:///d/events.db"  # untouched
