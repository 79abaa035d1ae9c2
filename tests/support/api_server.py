"""The real server, as operators run it: `muto cloud serve` in its own process (uvicorn
on a free port), on SQLite or PostgreSQL, alone or as one role of the production
topology, and builders for request bodies. The test_api_* modules and
tests/e2e/test_server_* start it through `running`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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
from tests.conftest import free_port, listens
from tests.support.services import fresh_database
from tests.support.waits import eventually

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
MUTO = [sys.executable, "-m", "muto.cli"]


class PortTaken(RuntimeError):
    """The server could not bind its port: another process has it."""


class ApiServer:
    """`muto cloud serve` on a free port, the one way tests start the real server: on
    SQLite (files in `data_dir`) or PostgreSQL, with a `role` (api, worker, all), with MQTT
    or without (`--no-mqtt`), more flags in `options`; its log is `data_dir/<name>.log`.
    Stopped by SIGTERM like systemd, or killed -9 by a fault test."""

    def __init__(
        self,
        data_dir: Path,
        database_url: str | None = None,
        *,
        role: str | None = None,
        mqtt_url: str | None = None,
        name: str = "server",
        public_url: str | None = None,
        options: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.role = role
        self.mqtt_url = mqtt_url
        self.name = name
        self.public_url = public_url
        self.options = options  # more `muto cloud serve` flags
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = False  # once: a restart keeps the port
        self._offset = 0  # where the log of the current run begins
        data_dir.mkdir(parents=True, exist_ok=True)

    @property
    def settings(self) -> Settings:
        return Settings(data_dir=self.data_dir, database_url=self.database_url, mqtt_url=None)

    def _store_args(self) -> list[str]:
        args = ["--data-dir", str(self.data_dir)]
        return args + (["--database-url", self.database_url] if self.database_url else [])

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`muto cloud <args>` on the same store (checked: a failure raises)."""
        return subprocess.run(
            [*MUTO, "cloud", *args, *self._store_args()],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
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

    def start(self, wait: str | None = "/livez") -> None:
        """Start it; with `wait`, until that path answers 200 from this very process. A
        first start whose port another test's server took meanwhile moves to another
        port; a restart keeps the port (its clients know it)."""
        tries = 1 if self.started else 5
        for attempt in range(1, tries + 1):
            self._launch()
            if not wait:
                break
            try:
                self.wait_ready(path=wait)
                break
            except PortTaken:
                if attempt == tries:
                    raise
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
        self.started = True

    def _launch(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MUTO_")}
        args = [*MUTO, "cloud", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--role", self.role] if self.role else []
        args += self._store_args()
        args += ["--mqtt-url", self.mqtt_url] if self.mqtt_url else ["--no-mqtt"]
        args += ["--public-url", self.public_url] if self.public_url else []
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*args, *self.options], stdout=log, stderr=subprocess.STDOUT, env=env
            )

    def wait_ready(self, timeout: float = 90.0, path: str = "/livez") -> None:
        """Until `path` answers 200 and this process is the one listening on the port:
        ports are picked at random by parallel test workers, and another's server could
        answer for one that has not bound yet (or could not)."""

        def answers() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                said = self.log.read_bytes()[self._offset :].decode(errors="replace")
                if "address already in use" in said.lower():
                    raise PortTaken(said[-2000:])
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {self.tail()}")
            if not listens(self.proc.pid, self.port):
                return False
            return httpx.get(f"{self.url}{path}", timeout=2).status_code == 200

        eventually(answers, lambda: f"{self.name} to answer {path}: {self.tail()}", timeout)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Signal it and wait; its exit code (None if it was not started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise
        code = self.proc.returncode
        self.proc = None
        return code

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

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
    with fresh_database() as url:
        yield url


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


@contextmanager
def operator_client(backend: str, data_dir: Path) -> Iterator[httpx.Client]:
    """A started server (`running`) and a client holding an operator token."""
    with (
        running(backend, data_dir, "operator") as (server, tokens),
        server.client(tokens["operator"][0]) as client,
    ):
        yield client


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


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The `error` object of a failure answer, after checking the status and shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"])
    found: dict[str, Any] = body["error"]
    return found
