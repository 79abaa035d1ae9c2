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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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

T = TypeVar("T")


def together(*calls: Callable[[], T]) -> list[T]:
    """Each call's result, in order. They run at once: every `muto` command here is a
    process of its own (about a second, most of it imports) and none depends on another
    given in the same batch."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return [f.result() for f in [pool.submit(call) for call in calls]]


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
        return self.each_both(args)[0]

    def each_both(self, *commands: tuple[str, ...]) -> list[str]:
        """`both` for each of `commands`, all run at once."""
        runs = together(
            *(
                lambda a=args, way=way: way(*a)
                for args in commands
                for way in (self.local, self.remote)
            )
        )
        return [
            self.same(local, remote) for local, remote in zip(runs[::2], runs[1::2], strict=True)
        ]

    @staticmethod
    def same(
        local: subprocess.CompletedProcess[str], remote: subprocess.CompletedProcess[str]
    ) -> str:
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
    vehicle, rollout = ("--vehicle", audited.vehicle), ("--rollout", audited.rollout)
    asked = [
        vehicle,
        (*vehicle, "--json"),
        ("--vehicle", audited.member),
        (*vehicle, "--at", audited.before_rollout),
        ("--vehicle", audited.member, "--at", audited.before_rollout, "--json"),
        rollout,
        (*rollout, "--json"),
    ]
    outputs = audited.each_both(*(("explain", *args) for args in asked))
    told = dict(zip(asked, outputs, strict=True))
    assert all(told.values())
    assert "told to run" in told[vehicle] and "reported converged" in told[vehicle]
    assert "Rollout.Started" in told[rollout]


def test_verify_is_the_same_through_the_api(audited: Audited) -> None:
    found = json.loads(audited.both("verify", "--json"))
    assert found["intact"] is True and found["checked"] == found["headPosition"] > 0
    anchor = f"{found['headPosition']}:{found['headHash']}"
    wrong = f"{found['headPosition']}:{'0' * 64}"
    matched_local, matched_remote, local, remote = together(
        lambda: audited.local("verify", "--anchor", anchor),
        lambda: audited.remote("verify", "--anchor", anchor),
        lambda: audited.local("verify", "--anchor", wrong),
        lambda: audited.remote("verify", "--anchor", wrong),
    )
    assert "anchors matched at positions" in audited.same(matched_local, matched_remote)
    assert local.returncode == remote.returncode == 1
    assert remote.stdout == local.stdout and "differs from the anchored hash" in local.stdout


def dump(path: Path) -> list[str]:
    """Every table, index and row, as SQL (sorted: indexes are created in any order)."""
    with sqlite3.connect(path) as db:
        return sorted(db.iterdump())


def test_replay_rebuilds_the_same_views_through_the_api(audited: Audited) -> None:
    whens = [("--position", "5"), ("--until", audited.before_rollout)]
    outs = [audited.home / unique("replay") for _ in whens]
    runs = together(
        *(
            lambda w=when, o=out, way=way, db=db: way("replay", *w, "--out", str(o / db))
            for when, out in zip(whens, outs, strict=True)
            for way, db in ((audited.local, "local.db"), (audited.remote, "api.db"))
        )
    )
    for out, local, remote in zip(outs, runs[::2], runs[1::2], strict=True):
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
    args = ("explain", "--vehicle", audited.vehicle)
    verbs = ("replay", "explain", "export", "verify")
    login, local, *helps = together(
        lambda: audited.muto(
            "login", audited.server.url, "--token-file", str(audited.token_file), env=env
        ),
        lambda: audited.local(*args),
        *(lambda v=verb: audited.run(v, "--help") for verb in verbs),
    )
    assert login.returncode == 0, login.stderr
    assert audited.muto("audit", *args, "--api", env=env).stdout == local.stdout
    for verb, shown in zip(verbs, helps, strict=True):
        helped = shown.stdout
        assert f"examples:\n  muto audit {verb} --data-dir" in helped
        assert f"  muto audit {verb} --api" in helped


def test_failures_through_the_api_are_one_line_with_the_fleet_exit_codes(
    audited: Audited, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.token"
    bad.write_text("not-a-token")
    unknown, local, mixed, anonymous, refused, nowhere = together(
        lambda: audited.remote("explain", "--vehicle", "no-such-vehicle"),
        lambda: audited.local("explain", "--vehicle", "no-such-vehicle"),
        lambda: audited.run("export", "--api", "--data-dir", str(audited.server.data_dir)),
        lambda: audited.run("verify", "--url", audited.server.url),
        lambda: audited.run("export", "--url", audited.server.url, "--token-file", str(bad)),
        lambda: audited.run("export", "--url", "http://127.0.0.1:9"),
    )
    assert (
        (unknown.returncode, unknown.stderr)
        == (local.returncode, local.stderr)
        == (
            2,
            "muto audit: the log holds no events for vehicle no-such-vehicle\n",
        )
    )
    assert mixed.returncode == 2 and "not both" in mixed.stderr
    assert anonymous.returncode == 4 and anonymous.stderr.count("\n") == 1
    assert refused.returncode == 4 and "unknown or revoked" in refused.stderr
    assert nowhere.returncode == 5 and "cannot reach the control plane" in nowhere.stderr
