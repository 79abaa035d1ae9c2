"""The operator at a real `muto cloud serve` (SQLite), for the fleet CLI's end-to-end
tests: runs `muto ...` as an operator types it, and builds a fleet with a rollout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.api_server import ApiServer, reconcile_body, running, unique, vehicle_body
from tests.support.releases import release_envelope


class Operator:
    """Runs `muto ...` in a clean environment with the server's URL and a token file."""

    def __init__(self, server: ApiServer, secret: str, home: Path) -> None:
        self.server = server
        self.home = home
        self.token_file = home / "operator.token"
        self.token_file.write_text(secret + "\n")
        self.api = server.client(secret)

    def env(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("MUTO_")}
        return {**base, "MUTO_CONTEXT": str(self.home / "context.json"), **extra}

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "muto.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.home,
            env=env if env is not None else self.env(MUTO_URL=self.server.url),
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self.run(*args, "--token-file", str(self.token_file))
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "-o", "json").stdout)


@contextmanager
def operator_at_a_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """A real server (SQLite) and an operator with its token: a test module's `op`."""
    data = tmp_path_factory.mktemp("cloud")
    with running("sqlite", data, "operator") as (server, tokens):
        found = Operator(server, tokens["operator"][0], tmp_path_factory.mktemp("home"))
        with found.api:  # closed with the server: its socket is not left to the collector
            yield found


def register(op: Operator, *vehicle_ids: str, **labels: str) -> None:
    for vehicle_id in vehicle_ids:
        assert op.api.post("/vehicles", json=vehicle_body(vehicle_id, **labels)).status_code == 201


def report(op: Operator, rollout: dict[str, Any], phase: str, stack: str) -> None:
    for member in rollout["vehicles"]:
        if member["phase"] == phase:
            body = reconcile_body(
                member["vehicleId"],
                unique("r"),
                revision=member["revision"],
                running=(stack, "2.0.0"),
            )
            assert op.api.post("/reports/reconcile", json=body).status_code == 200


def fleet_with_rollout(op: Operator) -> tuple[str, str, str]:
    group, stack = unique("g"), unique("stack")
    register(op, f"{group}-eu", group=group, region="eu")
    register(op, f"{group}-us", group=group, region="us")
    register(op, f"{group}-us2", group=group, region="us")
    for version in ("1.0.0", "2.0.0"):
        assert op.api.post("/releases", json=release_envelope(stack, version)).status_code == 201
    rollout_id = unique("ro")
    started = op.json(
        "rollouts",
        "create",
        "--selector",
        f"group={group}",
        "--release",
        f"{stack}@2.0.0",
        "--rollout-id",
        rollout_id,
        "--bake",
        "1",
    )
    assert started["state"] == "canary"
    assert started["thresholds"]["bakeSec"] == 1
    return group, stack, rollout_id
