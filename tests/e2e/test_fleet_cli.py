"""The operator's fleet CLI against a real `muto cloud serve` (SQLite), as an operator
types it: connection from flags, env or the login context; tables, JSON, YAML; the
documented exit codes; never a traceback."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from muto.cli import GROUPS
from tests.conftest import free_port
from tests.support.api_server import reconcile_body, unique
from tests.support.fleet_cli import (
    Operator,
    fleet_with_rollout,
    operator_at_a_server,
    register,
    report,
)
from tests.support.releases import release_envelope

FLEET_GROUPS = ("vehicles", "releases", "desired", "rollouts", "keys", "tokens")


@pytest.fixture(scope="module")
def op(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    with operator_at_a_server(tmp_path_factory) as found:
        yield found


def test_login_writes_a_private_context_that_later_verbs_use(op: Operator) -> None:
    vehicle_id = unique("veh")
    register(op, vehicle_id)
    context = op.home / "login" / "context.json"
    env = op.env(MUTO_CONTEXT=str(context))  # no MUTO_URL, no MUTO_TOKEN: only the context
    done = op.run("login", op.server.url, "--token-file", str(op.token_file), env=env)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(context.stat().st_mode) == 0o600
    found = json.loads(op.run("vehicles", "get", vehicle_id, "-o", "json", env=env).stdout)
    assert found["vehicleId"] == vehicle_id
    refused = op.run("login", op.server.url, "--token-file", str(op.home / "missing"), env=env)
    assert refused.returncode == 2 and "cannot read the token file" in refused.stderr


def test_json_and_yaml_are_the_api_data_unchanged_and_tables_name_each_vehicle(
    op: Operator,
) -> None:
    group = unique("g")
    ids = [f"{group}-{n}" for n in range(3)]
    register(op, *ids, group=group)
    selector = f"group={group}"
    api = op.api.get("/vehicles", params={"selector": selector}).json()["data"]
    assert op.json("vehicles", "list", "--selector", selector) == api
    as_yaml = op.ok("vehicles", "list", "--selector", selector, "-o", "yaml").stdout
    assert yaml.safe_load(as_yaml) == api
    table = op.ok("vehicles", "list", "--selector", selector).stdout
    assert all(vehicle_id in table for vehicle_id in ids)
    assert op.json("vehicles", "list", "--selector", selector, "--status", "failed") == []


def test_label_sets_and_removes_labels(op: Operator) -> None:
    vehicle_id = unique("veh")
    register(op, vehicle_id)
    labelled = op.json("vehicles", "label", vehicle_id, "ring=beta", "region-")
    assert labelled["labels"] == {"model": "m3", "ring": "beta"}
    bad = op.run("vehicles", "label", vehicle_id, "novalue", "--token-file", str(op.token_file))
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr


def test_unknown_things_are_one_line_and_exit_3(op: Operator) -> None:
    for args in (
        ("vehicles", "get", "no-such-vehicle"),
        ("rollouts", "get", "no-such-rollout"),
        ("rollouts", "status", "no-such-rollout", "--watch"),
        ("releases", "get", "nothing@1.0.0"),
    ):
        done = op.run(*args, "--token-file", str(op.token_file))
        assert done.returncode == 3, (args, done.stderr)
        assert done.stderr.startswith("error: not_found: ") and done.stderr.count("\n") == 1


def test_no_token_a_bad_token_and_no_server_each_say_how_to_fix_it(
    op: Operator, tmp_path: Path
) -> None:
    missing = op.run("vehicles", "list")
    assert missing.returncode == 4
    assert "unauthorized" in missing.stderr and "--token-file" in missing.stderr
    bad = tmp_path / "bad.token"
    bad.write_text("not-a-token")
    revoked = op.run("vehicles", "list", "--token-file", str(bad))
    assert revoked.returncode == 4 and "unknown or revoked" in revoked.stderr
    nowhere = op.run("vehicles", "list", "--url", f"http://127.0.0.1:{free_port()}")
    assert nowhere.returncode == 5
    assert "cannot reach the control plane" in nowhere.stderr and nowhere.stderr.count("\n") == 1


def test_push_uploads_hosted_artifacts_then_registers_and_a_vehicle_downloads_them(
    op: Operator,
) -> None:
    work = op.home / unique("release")
    (work / "dist").mkdir(parents=True)
    payload = os.urandom(200_000)
    (work / "dist" / "core.tar.gz").write_bytes(payload)
    stack = unique("core")
    (work / "release.yaml").write_text(
        f"stackName: {stack}\nversion: 1.0.0\n"
        "artifacts:\n  - {type: archive, ref: core.tar.gz}\nlaunch: {command: [./run.sh]}\n"
    )
    assert op.run("release", "keygen", "--out", str(work / "keys")).returncode == 0
    signing = op.run(
        "release",
        "sign",
        str(work / "release.yaml"),
        "--key",
        str(work / "keys/release.key"),
        "--artifact-dir",
        str(work / "dist"),
        "--hosted",
    )
    assert signing.returncode == 0, signing.stderr
    signed = str(work / "release.signed.json")
    nowhere = ("--artifact-dir", str(work / "nowhere"), "--token-file", str(op.token_file))
    missing = op.run("releases", "push", signed, *nowhere)  # `run` refuses a traceback
    assert missing.returncode == 2 and "nowhere" in missing.stderr, missing.stderr
    pushed = op.ok("releases", "push", signed, "--artifact-dir", str(work / "dist"), "-o", "json")
    assert "uploaded core.tar.gz" in pushed.stderr
    release = json.loads(pushed.stdout)
    (artifact,) = release["manifest"]["artifacts"]
    assert artifact["ref"] == f"artifacts/{artifact['digest']}"
    again = op.ok("releases", "push", signed, "--artifact-dir", str(work / "dist"))
    assert "already stored core.tar.gz" in again.stderr
    assert (
        op.json("releases", "get", f"{stack}@1.0.0")["manifestDigest"] == release["manifestDigest"]
    )
    assert [r["stackName"] for r in op.json("releases", "list", "--stack", stack)] == [stack]

    vehicle_id = unique("veh")
    register(op, vehicle_id)
    token = op.json("tokens", "create", "--vehicle", vehicle_id)["token"]
    url = f"{op.server.url}/{artifact['ref']}"
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}) as vehicle:
        assert vehicle.get(url).content == payload
        rest = vehicle.get(url, headers={"Range": "bytes=150000-"})
        assert (rest.status_code, rest.content) == (206, payload[150_000:])


def test_desired_assign_to_a_selector_or_to_one_vehicle(op: Operator) -> None:
    group = unique("g")
    ids = [f"{group}-{n}" for n in range(2)]
    register(op, *ids, group=group)
    stack = unique("stack")
    assert op.api.post("/releases", json=release_envelope(stack)).status_code == 201
    assigned = op.json(
        "desired", "assign", "--selector", f"group={group}", "--release", f"{stack}@1.0.0"
    )
    assert sorted(assigned["vehicles"]) == ids
    one = op.json("desired", "assign", "--vehicle", ids[0], "--release", f"{stack}@1.0.0")
    assert list(one["vehicles"]) == [ids[0]]
    unknown = op.run(
        "desired",
        "assign",
        "--selector",
        f"group={group}",
        "--release",
        "nope@9",
        "--token-file",
        str(op.token_file),
    )
    assert unknown.returncode != 0 and unknown.stderr.startswith("error: ")


def test_tokens_create_to_a_private_file_and_revoke(op: Operator) -> None:
    secret_file = op.home / "second.token"
    op.ok("tokens", "create", "--operator", "--secret-file", str(secret_file))
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert op.run("vehicles", "list", "--token-file", str(secret_file)).returncode == 0
    issued = op.json("tokens", "create", "--operator")
    op.ok("tokens", "revoke", issued["tokenId"])
    (op.home / "revoked.token").write_text(issued["token"])
    deadline = time.monotonic() + 30  # revocations reach every process within 5 s
    while (
        op.run("vehicles", "list", "--token-file", str(op.home / "revoked.token")).returncode != 4
    ):
        assert time.monotonic() < deadline


def test_an_id_never_reaches_another_resource_and_bad_input_exits_2(op: Operator) -> None:
    """Ids spliced raw into paths: `rollouts pause '../../tokens/T/revoke#'` revoked T."""
    flags = ("--token-file", str(op.token_file))
    victim = op.json("tokens", "create", "--operator")
    victim_file = op.home / unique("victim")
    victim_file.write_text(victim["token"])
    paused = op.run("rollouts", "pause", f"../../tokens/{victim['tokenId']}/revoke#", *flags)
    assert paused.returncode == 2 and "is not a rollout id" in paused.stderr
    revoked = op.run("tokens", "revoke", f"../tokens/{victim['tokenId']}", *flags)
    assert revoked.returncode == 2 and "is not a token id" in revoked.stderr
    # a revocation holds at once in the process that wrote it (this server's only one)
    assert op.run("vehicles", "list", "--token-file", str(victim_file)).returncode == 0
    as_vehicle = op.run("vehicles", "get", "../rollouts/x", "-o", "json", *flags)
    assert as_vehicle.returncode == 2 and as_vehicle.stdout == ""

    existing = op.home / unique("secret")
    existing.write_text("an older, readable file\n")
    existing.chmod(0o644)
    op.ok("tokens", "create", "--operator", "--secret-file", str(existing))
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600
    assert op.run("vehicles", "list", "--token-file", str(existing)).returncode == 0
    nowhere = op.home / "no-such-dir" / "x.token"
    refused = op.run("tokens", "create", "--operator", "--secret-file", str(nowhere), *flags)
    assert refused.returncode == 2 and "no token was issued" in refused.stderr

    malformed = op.run("login", "http://[::1", "--token-file", str(op.token_file))
    assert malformed.returncode == 2 and malformed.stderr.count("\n") == 1
    schemeless = op.run("login", "not-a-url", "--token-file", str(op.token_file))
    assert schemeless.returncode == 2 and "http://" in schemeless.stderr
    bogus = op.run("vehicles", "list", "--status", "bogus", *flags)
    assert bogus.returncode == 2 and "rolled_back" in bogus.stderr


def test_rollout_verbs_and_a_watch_that_ends_with_completed(op: Operator) -> None:
    _, stack, rollout_id = fleet_with_rollout(op)
    assert rollout_id in [r["rolloutId"] for r in op.json("rollouts", "list")]
    assert op.json("rollouts", "pause", rollout_id)["paused"] is True
    paused = op.run("rollouts", "status", rollout_id, "--token-file", str(op.token_file))
    assert paused.returncode == 13 and "canary (paused)" in paused.stdout
    assert op.json("rollouts", "resume", rollout_id)["paused"] is False
    running_now = op.run("rollouts", "status", rollout_id, "--token-file", str(op.token_file))
    assert running_now.returncode == 12

    watch = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "muto.cli",
            "rollouts",
            "status",
            rollout_id,
            "--watch",
            "--interval",
            "0.2",
            "--timeout",
            "120",
            "--token-file",
            str(op.token_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=op.home,
        env=op.env(MUTO_URL=op.server.url),
    )
    try:
        report(op, op.json("rollouts", "get", rollout_id), "canary", stack)
        deadline = time.monotonic() + 60
        while (current := op.json("rollouts", "get", rollout_id))["state"] == "canary":
            assert time.monotonic() < deadline, current
            time.sleep(0.2)
        report(op, current, "wave", stack)
        out, err = watch.communicate(timeout=120)
    finally:
        watch.kill()
    assert watch.returncode == 0, out + err
    assert "Traceback" not in err
    assert "WaveGatePassed" in out and "CanaryGatePassed" in out
    assert "completed" in out


def test_a_rolled_back_rollout_watches_until_every_rollback_is_confirmed(op: Operator) -> None:
    """A rollback has ended only when the members given it confirmed it: until then a
    status exits 14 and a watch goes on; then 10."""
    _, _, rollout_id = fleet_with_rollout(op)
    assert op.json("rollouts", "rollback", rollout_id)["state"] == "rolled_back"
    flags = ("-o", "json", "--token-file", str(op.token_file))
    still = op.run("rollouts", "status", rollout_id, *flags)
    assert still.returncode == 14, still.stderr
    rolling = json.loads(still.stdout)
    assert rolling["state"] == "rolled_back" and rolling["outstandingTotal"] >= 1
    timed_out = op.run("rollouts", "status", rollout_id, "--watch", "--interval", "0.2",
                       "--timeout", "1", *flags)  # fmt: skip
    assert timed_out.returncode == 14, timed_out.stderr
    for member in rolling["outstanding"]:  # each takes its rollback: runs nothing
        given = next(m for m in rolling["vehicles"] if m["vehicleId"] == member["vehicleId"])
        body = reconcile_body(member["vehicleId"], unique("r"), revision=given["revision"])
        assert op.api.post("/reports/reconcile", json=body).status_code == 200
    done = op.run("rollouts", "status", rollout_id, "--watch", "--interval", "0.2", *flags)
    assert done.returncode == 10, done.stderr
    last = json.loads(done.stdout.splitlines()[-1])
    assert last["state"] == "rolled_back" and last["outstandingTotal"] == 0


@pytest.mark.parametrize("group", (*FLEET_GROUPS, "login"))
def test_every_verb_has_help_with_an_example(group: str) -> None:
    from muto.cli import build_parser

    parser = build_parser(group)
    groups: Any = next(a for a in parser._actions if a.dest == "group").choices
    sub = groups[group]
    verbs: Any = next((a.choices for a in sub._actions if a.dest == "action"), None)
    for name, verb in (verbs or {group: sub}).items():
        assert "example:\n  muto " in verb.format_help(), f"muto {group} {name}"


def test_a_vehicle_running_the_agent_loads_none_of_it() -> None:
    probe = (
        "import sys; from muto.cli import build_parser; build_parser('agent'); "
        "print(sorted(m for m in sys.modules if m.startswith(('muto.fleetctl', 'rich'))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    assert set(FLEET_GROUPS) <= set(GROUPS)


def test_one_vehicle_is_named_vehicle_id_and_the_old_selector_spelling_still_works(
    op: Operator,
) -> None:
    vehicle_id = unique("veh")
    register(op, vehicle_id)
    stack = unique("stack")
    assert op.api.post("/releases", json=release_envelope(stack)).status_code == 201
    ref = {"name": stack, "version": "1.0.0"}
    for target in (
        {"type": "vehicle", "vehicleId": vehicle_id},
        {"type": "vehicle", "selector": vehicle_id},  # before vehicleId existed
    ):
        answer = op.api.post("/desired-states", json={"target": target, "stack": ref})
        assert answer.status_code == 201, answer.text
        assert list(answer.json()["data"]["vehicles"]) == [vehicle_id]
    for target in (
        {"type": "vehicle", "vehicleId": vehicle_id, "selector": vehicle_id},
        {"type": "vehicle"},
        {"selector": "model=m3", "vehicleId": vehicle_id},
    ):
        refused = op.api.post("/desired-states", json={"target": target, "stack": ref})
        assert refused.status_code == 422, (target, refused.text)
        assert refused.json()["error"]["details"]["path"] == "$.target"


def test_refresh_says_why_it_cannot_reach_a_vehicle(op: Operator) -> None:
    vehicle_id = unique("veh")
    register(op, vehicle_id)
    no_mqtt = op.run("vehicles", "refresh", vehicle_id, "--token-file", str(op.token_file))
    assert no_mqtt.returncode == 1
    assert no_mqtt.stderr.startswith("error: unavailable: ") and "--no-mqtt" in no_mqtt.stderr
    unknown = op.run("vehicles", "refresh", "no-such-vehicle", "--token-file", str(op.token_file))
    assert unknown.returncode == 3
    # what it reported so far: nothing, and the inventory says so
    assert op.json("vehicles", "get", vehicle_id)["reported"] is None


def test_audit_timeline_reads_the_trail_through_the_api(op: Operator) -> None:
    vehicle_id = unique("veh")
    register(op, vehicle_id)
    op.ok("vehicles", "label", vehicle_id, "ring=beta")
    api = op.api.get("/audit", params={"vehicleId": vehicle_id}).json()["data"]
    assert op.json("audit", "timeline", "--vehicle", vehicle_id) == api
    assert len(api) == 2
    table = op.ok("audit", "timeline", "--vehicle", vehicle_id).stdout
    assert vehicle_id in table and "ring" in table
    assert len(op.json("audit", "timeline", "--vehicle", vehicle_id, "--limit", "1")) == 1
    helped = op.run("audit", "timeline", "--help").stdout
    assert "example:\n  muto audit timeline" in helped


def test_ctrl_c_ends_a_watch_quietly(op: Operator) -> None:
    _, _, rollout_id = fleet_with_rollout(op)
    watch = subprocess.Popen(
        [sys.executable, "-m", "muto.cli", "rollouts", "status", rollout_id, "--watch",
         "--interval", "0.2", "--token-file", str(op.token_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=op.home,
        env=op.env(MUTO_URL=op.server.url),
    )  # fmt: skip
    try:
        polled = f'"path":"/rollouts/{rollout_id}"'  # the access log's compact JSON
        before = op.server.log.read_text().count(polled)
        deadline = time.monotonic() + 60
        while op.server.log.read_text().count(polled) < before + 2:  # it is in its loop
            assert time.monotonic() < deadline
            time.sleep(0.1)
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=60)
    finally:
        watch.kill()
    assert watch.returncode == 130, err
    assert "Traceback" not in err
