"""`muto audit replay | explain | export | verify` against a real `muto cloud serve`, as an
operator without database access types them (`--api`, `--url`, `--token-file`): the same
output as reading the databases, on SQLite and PostgreSQL; GET /audit/records and
GET /audit/verify for operators only."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.api_server import (
    BACKENDS,
    ApiServer,
    reconcile_body,
    running,
    unique,
    vehicle_body,
)
from tests.support.releases import release_envelope


@dataclass
class Audited:
    """A control plane with some history, and both ways to audit it."""

    server: ApiServer
    api: httpx.Client
    home: Path
    token_file: Path
    vehicle: str  # assigned outside any rollout, reported converged
    member: str  # a rollout's member
    rollout: str
    before_rollout: str  # an instant between the assignment and the rollout

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.muto("audit", *args, env=env)

    def muto(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("MUTO_")}
        done = subprocess.run(
            [sys.executable, "-m", "muto.cli", *args],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=self.home,
            env={**base, "MUTO_CONTEXT": str(self.home / "context.json"), **(env or {})},
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def local(self, *args: str) -> subprocess.CompletedProcess[str]:
        store = ["--data-dir", str(self.server.data_dir)]
        if self.server.database_url:
            store += ["--database-url", self.server.database_url]
        return self.run(*args, *store)

    def remote(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Connection from the environment, as the fleet verbs take it."""
        env = {"MUTO_URL": self.server.url, "MUTO_TOKEN": self.token_file.read_text().strip()}
        return self.run(*args, "--api", env=env)

    def both(self, *args: str) -> str:
        """The output of reading the databases, after checking the API gives the same."""
        local, remote = self.local(*args), self.remote(*args)
        assert (local.returncode, local.stderr) == (0, ""), local.stderr
        assert (remote.returncode, remote.stdout, remote.stderr) == (0, local.stdout, "")
        return local.stdout


def post(api: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    found: dict[str, Any] = response.json()["data"]
    return found


def make_history(api: httpx.Client) -> tuple[str, str, str, str]:
    group, stack = unique("g"), unique("stack")
    vehicle = f"{group}-solo"
    members = [f"{group}-{n}" for n in range(3)]
    post(api, "/vehicles", vehicle_body(vehicle, group=f"{group}-solo"))
    for vehicle_id in members:
        post(api, "/vehicles", vehicle_body(vehicle_id, group=group))
    for version in ("1.0.0", "2.0.0"):
        post(api, "/releases", release_envelope(stack, version))
    target = {"type": "vehicle", "vehicleId": vehicle}
    post(api, "/desired-states", {"target": target, "stack": {"name": stack, "version": "1.0.0"}})
    bundle = api.get("/desired-states/latest", params={"vehicleId": vehicle}).json()
    revision = bundle["metadata"]["revision"]
    post(api, "/reports/reconcile", reconcile_body(vehicle, unique("r"), revision=revision))
    time.sleep(0.05)  # stamps are ISO seconds and below: keep `before_rollout` apart
    before_rollout = api.get("/livez").json()["timestamp"]
    time.sleep(0.05)
    rollout = unique("ro")
    started = post(
        api,
        "/rollouts",
        {
            "selector": f"group={group}",
            "stack": stack,
            "version": "2.0.0",
            "rolloutId": rollout,
        },
    )
    member = next(m for m in started["vehicles"] if m["phase"] == "canary")
    body = reconcile_body(
        member["vehicleId"], unique("r"), revision=member["revision"], running=(stack, "2.0.0")
    )
    post(api, "/reports/reconcile", body)
    return vehicle, member["vehicleId"], rollout, before_rollout


def chained(api: httpx.Client) -> dict[str, Any]:
    """The projector chains what is logged shortly after: wait until it has all of it."""
    deadline = time.monotonic() + 60
    while True:
        found: dict[str, Any] = api.get("/audit/verify").json()["data"]
        head = api.get("/audit/records", params={"limit": 1}).json()["metadata"]["head"]
        if found["intact"] and found["headPosition"] == head:
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.2)


@pytest.fixture(scope="module", params=BACKENDS)
def audited(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Audited]:
    data = tmp_path_factory.mktemp("cloud")
    home = tmp_path_factory.mktemp("home")
    with running(request.param, data, "operator") as (server, tokens):
        secret = tokens["operator"][0]
        token_file = home / "operator.token"
        token_file.write_text(secret + "\n")
        with server.client(secret) as api:
            vehicle, member, rollout, before = make_history(api)
            chained(api)
            yield Audited(server, api, home, token_file, vehicle, member, rollout, before)


def test_export_is_the_same_through_the_api(audited: Audited) -> None:
    lines = audited.both("export").splitlines()
    assert len(lines) == audited.api.get("/audit/records").json()["metadata"]["head"]
    assert [json.loads(line)["position"] for line in lines] == list(range(1, len(lines) + 1))
    since = json.loads(lines[2])["at"]
    assert audited.both("export", "--from", since).splitlines() == [
        line for line in lines if json.loads(line)["at"] >= since
    ]


def test_explain_is_the_same_through_the_api(audited: Audited) -> None:
    told = audited.both("explain", "--vehicle", audited.vehicle)
    assert "told to run" in told and "reported converged" in told
    for args in (
        ("--vehicle", audited.vehicle, "--json"),
        ("--vehicle", audited.member),
        ("--vehicle", audited.vehicle, "--at", audited.before_rollout),
        ("--vehicle", audited.member, "--at", audited.before_rollout, "--json"),
        ("--rollout", audited.rollout),
        ("--rollout", audited.rollout, "--json"),
    ):
        assert audited.both("explain", *args)
    assert "Rollout.Started" in audited.both("explain", "--rollout", audited.rollout)


def test_verify_is_the_same_through_the_api(audited: Audited) -> None:
    found = json.loads(audited.both("verify", "--json"))
    assert found["intact"] is True and found["checked"] == found["headPosition"] > 0
    anchor = f"{found['headPosition']}:{found['headHash']}"
    assert "anchors matched at positions" in audited.both("verify", "--anchor", anchor)
    wrong = f"{found['headPosition']}:{'0' * 64}"
    local, remote = (
        audited.local("verify", "--anchor", wrong),
        audited.remote("verify", "--anchor", wrong),
    )
    assert local.returncode == remote.returncode == 1
    assert remote.stdout == local.stdout and "differs from the anchored hash" in local.stdout


def dump(path: Path) -> list[str]:
    """Every table, index and row, as SQL (sorted: indexes are created in any order)."""
    with sqlite3.connect(path) as db:
        return sorted(db.iterdump())


def test_replay_rebuilds_the_same_views_through_the_api(audited: Audited) -> None:
    for when in (["--position", "5"], ["--until", audited.before_rollout]):
        out = audited.home / unique("replay")
        local = audited.local("replay", *when, "--out", str(out / "local.db"))
        remote = audited.remote("replay", *when, "--out", str(out / "api.db"))
        assert local.returncode == remote.returncode == 0, local.stderr + remote.stderr
        assert remote.stdout == local.stdout.replace("local.db", "api.db")
        assert dump(out / "api.db") == dump(out / "local.db")


def test_a_story_page_holds_only_what_its_reader_keeps(audited: Audited) -> None:
    api = audited.api
    everything = api.get("/audit/records", params={"limit": 1000}).json()
    story = api.get("/audit/records", params={"limit": 1000, "forVehicle": audited.vehicle}).json()
    kept = [r["position"] for r in story["data"]]
    assert 0 < len(kept) < len(everything["data"])
    assert story["metadata"]["nextAfter"] is None
    first = api.get("/audit/records", params={"limit": 2, "forVehicle": audited.vehicle}).json()
    assert [r["position"] for r in first["data"]] == kept[:2]
    rest = api.get(
        "/audit/records",
        params={"after": first["metadata"]["nextAfter"], "forVehicle": audited.vehicle},
    ).json()
    assert [r["position"] for r in rest["data"]] == kept[2:]
    rollout = api.get("/audit/records", params={"limit": 1000, "forRollout": audited.rollout})
    either = api.get(
        "/audit/records",
        params={"limit": 1000, "forVehicle": audited.vehicle, "forRollout": audited.rollout},
    )
    expected = sorted({*kept, *(r["position"] for r in rollout.json()["data"])})
    assert [r["position"] for r in either.json()["data"]] == expected
    until = api.get("/audit/records", params={"until": 3}).json()
    assert [r["position"] for r in until["data"]] == [1, 2, 3]


def test_bad_requests_and_who_may_ask(audited: Audited) -> None:
    api = audited.api
    assert api.get("/audit/records", params={"limit": 1001}).status_code == 422
    assert api.get("/audit/verify", params={"anchor": "1:abc"}).status_code == 422
    vehicle_token = post(api, "/tokens", {"role": "vehicle", "vehicleId": audited.vehicle})
    with httpx.Client(
        base_url=audited.server.url,
        headers={"Authorization": f"Bearer {vehicle_token['token']}"},
    ) as vehicle:
        for path in ("/audit/records", "/audit/verify"):
            assert vehicle.get(path).status_code == 403
    for path in ("/audit/records", "/audit/verify"):
        assert httpx.get(audited.server.url + path).status_code == 401


def test_the_login_context_is_enough_and_every_verb_has_examples(audited: Audited) -> None:
    context = audited.home / unique("login") / "context.json"
    env = {"MUTO_CONTEXT": str(context)}  # no MUTO_URL, no MUTO_TOKEN: only the context
    login = audited.muto(
        "login", audited.server.url, "--token-file", str(audited.token_file), env=env
    )
    assert login.returncode == 0, login.stderr
    args = ("explain", "--vehicle", audited.vehicle)
    assert audited.muto("audit", *args, "--api", env=env).stdout == audited.local(*args).stdout
    for verb in ("replay", "explain", "export", "verify"):
        helped = audited.run(verb, "--help").stdout
        assert f"examples:\n  muto audit {verb} --data-dir" in helped
        assert f"  muto audit {verb} --api" in helped


def test_failures_through_the_api_are_one_line_with_the_fleet_exit_codes(
    audited: Audited, tmp_path: Path
) -> None:
    unknown = audited.remote("explain", "--vehicle", "no-such-vehicle")
    local = audited.local("explain", "--vehicle", "no-such-vehicle")
    assert (
        (unknown.returncode, unknown.stderr)
        == (local.returncode, local.stderr)
        == (
            2,
            "muto audit: the log holds no events for vehicle no-such-vehicle\n",
        )
    )
    mixed = audited.run("export", "--api", "--data-dir", str(audited.server.data_dir))
    assert mixed.returncode == 2 and "not both" in mixed.stderr
    anonymous = audited.run("verify", "--url", audited.server.url)
    assert anonymous.returncode == 4 and anonymous.stderr.count("\n") == 1
    bad = tmp_path / "bad.token"
    bad.write_text("not-a-token")
    refused = audited.run("export", "--url", audited.server.url, "--token-file", str(bad))
    assert refused.returncode == 4 and "unknown or revoked" in refused.stderr
    nowhere = audited.run("export", "--url", "http://127.0.0.1:9")
    assert nowhere.returncode == 5 and "cannot reach the control plane" in nowhere.stderr
