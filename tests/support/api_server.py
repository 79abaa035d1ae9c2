"""The real server, as operators run it: `muto cloud serve` in its own process (uvicorn
on a free port), on SQLite or PostgreSQL, and builders for request bodies. The
test_api_* modules and tests/e2e/test_server_* start it through `running`.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause
from muto.cloud.settings import Settings
from muto.cloud.tokens import Role, issue_token
from muto.domain.wire import to_builtins
from tests.conftest import PG_ADMIN_URL, free_port, unavailable
from tests.support.spine import signed_release

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class ApiServer:
    """`muto cloud serve --no-mqtt` on a free port; stopped by SIGTERM like systemd."""

    def __init__(self, data_dir: Path, database_url: str | None = None) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.options: tuple[str, ...] = ()  # more `muto cloud serve` flags
        data_dir.mkdir(parents=True, exist_ok=True)

    @property
    def settings(self) -> Settings:
        return Settings(data_dir=self.data_dir, database_url=self.database_url, mqtt_url=None)

    def _store_args(self) -> list[str]:
        args = ["--data-dir", str(self.data_dir)]
        return args + (["--database-url", self.database_url] if self.database_url else [])

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "muto.cli", "cloud", *args, *self._store_args()],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )

    def issue(self, *roles: str) -> dict[str, tuple[str, str]]:
        """Tokens issued in process before the server starts (fast): `operator` or a
        vehicle id -> (secret, token id)."""
        issued = {}
        cp = ControlPlane.open(self.settings)
        try:
            for who in roles:
                role = Role.OPERATOR if who == "operator" else Role.VEHICLE
                vehicle = None if who == "operator" else who
                secret, command = issue_token(role, vehicle, Cause.of("test"))
                issued[who] = (secret, cp.execute(command).value)
        finally:
            cp.close()
        return issued

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MUTO_")}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "muto.cli", "cloud", "serve", "--no-mqtt"),
                    *("--host", "127.0.0.1", "--port", str(self.port)),
                    *self._store_args(),
                    *self.options,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not become ready: {self.tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the server and wait for it; returns its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise
        code = self.proc.returncode
        self.proc = None
        return code

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def tracebacks(self) -> list[str]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [part[:600] for part in text.split("Traceback (most recent call last)")[1:]]

    def client(self, secret: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@contextmanager
def database(backend: str) -> Iterator[str | None]:
    """None for SQLite (files in the data dir); a fresh PostgreSQL database otherwise,
    dropped afterwards."""
    if backend == "sqlite":
        yield None
        return
    import psycopg

    admin_info = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    name = f"muto_api_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin_info, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at {PG_ADMIN_URL}: {exc}")
    try:
        yield f"{PG_ADMIN_URL.rpartition('/')[0]}/{name}"
    finally:
        with psycopg.connect(admin_info, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def running(
    backend: str, data_dir: Path, *roles: str
) -> Iterator[tuple[ApiServer, dict[str, Any]]]:
    """A started server and the tokens for `roles`; stopped (SIGTERM) on the way out,
    and it must have exited 0 without logging a traceback."""
    with database(backend) as url:
        server = ApiServer(data_dir, url)
        tokens = server.issue(*roles)
        server.start()
        try:
            yield server, tokens
        finally:
            code = server.stop()
            assert code == 0, server.tail()
            assert server.tracebacks() == []


# -- request builders ---------------------------------------------------------------------

NOW = "2026-01-01T00:00:00Z"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def vehicle_body(vehicle_id: str, **labels: str) -> dict[str, Any]:
    return {
        "vehicleId": vehicle_id,
        "labels": {"model": "m3", "region": "eu", **labels},
        "attributes": {"os": "ubuntu-22.04", "rosDistro": "humble"},
    }


def release_envelope(
    stack: str, version: str = "1.0.0", *, size: int = 1, models: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A signed release as `muto release` makes it, as the JSON body of POST /releases."""
    envelope: dict[str, Any] = to_builtins(
        signed_release(stack, version, models=models, size=size).envelope
    )
    return envelope


def reconcile_body(
    vehicle_id: str,
    report_id: str,
    status: str = "converged",
    *,
    revision: str | None = None,
    running: tuple[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "schema": "muto.reconcile-report.v1",
        "reportId": report_id,
        "vehicleId": vehicle_id,
        "desiredStateRevision": revision,
        "status": status,
        "running": {"name": running[0], "version": running[1]} if running else None,
        "observedAt": NOW,
    }


def health_body(vehicle_id: str, report_id: str, status: str = "healthy") -> dict[str, Any]:
    """Any status but healthy says why (STACK_NOT_RUNNING)."""
    return {
        "schema": "muto.health-report.v1",
        "reportId": report_id,
        "vehicleId": vehicle_id,
        "status": status,
        "reasonCodes": [] if status == "healthy" else ["STACK_NOT_RUNNING"],
        "observedAt": datetime.now(UTC).isoformat(),
    }


def signed_payload(envelope: dict[str, Any]) -> dict[str, Any]:
    import json

    decoded: dict[str, Any] = json.loads(base64.b64decode(envelope["payload"]))
    return decoded


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The `error` object of a failure answer, after checking the status and shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"])
    found: dict[str, Any] = body["error"]
    return found
