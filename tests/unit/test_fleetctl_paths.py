"""What the fleet CLI sends for what an operator types: every id one percent-encoded path
segment (an id spliced in raw once revoked the operator's own token), a malformed URL a
usage error, `--secret-file` private and checked before a token is issued, `--status`
one of the values the API shows. `muto` runs in-process against an httpx MockTransport
that records each request; an exception escaping `main` is the traceback an operator
would have seen."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from muto.cli import main
from muto.fleetctl.connection import USAGE, Connection, FleetError, answer, api_path, save_context
from muto.fleetctl.rollouts import exit_code, outcome

URL = "http://control.example:8080/api"  # a path prefix too: paths stay under it
TOKEN = {"tokenId": "0123abcd", "token": "muto_0123abcd_secret", "role": "operator"}
VEHICLE = {"vehicleId": "veh:1.a", "labels": {}, "lastStatus": "failed", "presence": "stale"}


class Api:
    """The control plane as a MockTransport: a token for POST /tokens, one vehicle for
    GET /vehicles, 404 for anything else (as the real server answers an unknown id)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.raw_path.split(b"?")[0]
        if (request.method, path) == ("POST", b"/api/tokens"):
            return httpx.Response(201, json={"data": {**TOKEN, "vehicleId": None}})
        if (request.method, path) == ("GET", b"/api/vehicles"):
            return httpx.Response(200, json={"data": [VEHICLE], "metadata": {}})
        if (request.method, path) == ("GET", b"/api/vehicles/veh%3A1.a"):
            return httpx.Response(200, json={"data": VEHICLE})
        body = {"error": {"code": "not_found", "message": "Not Found", "details": None}}
        return httpx.Response(404, json=body)

    def sent(self) -> list[tuple[str, bytes]]:
        return [(r.method, r.url.raw_path) for r in self.requests]


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Api]:
    found = Api()
    real = httpx.Client

    def client(**kwargs: Any) -> httpx.Client:
        return real(transport=httpx.MockTransport(found), **kwargs)

    monkeypatch.setattr(httpx, "Client", client)
    for name in ("MUTO_URL", "MUTO_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MUTO_CONTEXT", str(tmp_path / "context.json"))
    (tmp_path / "op.token").write_text("operator-secret\n")
    monkeypatch.chdir(tmp_path)
    yield found


def muto(*argv: str) -> int:
    """`muto ARGV --url URL --token-file op.token`; argparse's own refusals exit 2 too."""
    try:
        return main([*argv, "--url", URL, "--token-file", "op.token"])
    except SystemExit as exc:
        return int(exc.code or 0)


# --- ids ---------------------------------------------------------------------------


def test_each_id_is_one_percent_encoded_segment() -> None:
    assert api_path("tokens", "../../rollouts/ro-1/pause#", "revoke") == (
        "/tokens/..%2F..%2Frollouts%2Fro-1%2Fpause%23/revoke"
    )
    assert api_path("vehicles", "x?y") == "/vehicles/x%3Fy"
    assert api_path("vehicles", "a%2Fb") == "/vehicles/a%252Fb"  # sent as typed
    # quote() keeps dots, and URL resolution drops the segments '.' and '..'
    assert api_path("tokens", "..", "revoke") == "/tokens/%2E%2E/revoke"
    assert api_path("tokens", ".", "revoke") == "/tokens/%2E/revoke"
    assert api_path("vehicles", "veh-1.a") == "/vehicles/veh-1.a"
    with pytest.raises(FleetError) as empty:
        api_path("tokens", "", "revoke")
    assert empty.value.exit_code == USAGE


@pytest.mark.parametrize(
    "argv",
    [
        ("rollouts", "pause", "../../tokens/0123abcd/revoke#"),  # revoked the operator's token
        ("rollouts", "get", ".."),
        ("rollouts", "resume", "ro/1"),
        ("rollouts", "rollback", "ro#1"),
        ("rollouts", "status", "ro?1"),
        ("vehicles", "get", "../rollouts/seed-rollout-1"),  # printed a rollout as a vehicle
        ("vehicles", "get", "x?y"),  # looked up x
        ("vehicles", "refresh", "../tokens/0123abcd"),
        ("vehicles", "label", "a/b", "k=v"),
        ("vehicles", "get", ""),
        ("releases", "get", "../vehicles/x@1.0.0"),
        ("releases", "get", "core@1.0.0/../../tokens"),
        ("tokens", "revoke", "../rollouts/ro-1/pause#"),  # was POST /rollouts/ro-1/pause
        ("tokens", "revoke", ".."),  # raw: POST /api/revoke
        ("tokens", "revoke", "x?y"),  # raw: token x, with a query
    ],
)
def test_an_id_the_api_forbids_is_refused_before_any_request(
    api: Api, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    assert muto(*argv) == 2
    assert api.sent() == []
    assert "id" in capsys.readouterr().err


def test_an_allowed_id_with_reserved_characters_reaches_its_own_resource(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    assert muto("vehicles", "get", "veh:1.a", "-o", "json") == 0
    assert api.sent() == [("GET", b"/api/vehicles/veh%3A1.a")]
    assert json.loads(capsys.readouterr().out) == VEHICLE
    assert muto("releases", "get", "core@1.0.0") == 3
    assert api.sent()[-1] == ("GET", b"/api/releases/core/1.0.0")


# --- URLs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://[::1", "not-a-url", "127.0.0.1:8080", "ftp://h", "http://", "http://h:99999"]
)
def test_a_malformed_login_url_is_a_usage_error(
    api: Api, capsys: pytest.CaptureFixture[str], tmp_path: Path, url: str
) -> None:
    code = main(["login", url, "--token-file", "op.token"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and repr(url) in err
    assert api.sent() == [] and not (tmp_path / "context.json").exists()


def test_a_malformed_url_from_a_flag_the_environment_or_the_context_is_a_usage_error(
    api: Api, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert main(["vehicles", "list", "--url", "http://[::1", "--token-file", "op.token"]) == 2
    assert "--url: 'http://[::1'" in capsys.readouterr().err
    monkeypatch.setenv("MUTO_URL", "not-a-url")
    assert main(["vehicles", "list", "--token-file", "op.token"]) == 2
    assert "MUTO_URL: 'not-a-url'" in capsys.readouterr().err
    monkeypatch.delenv("MUTO_URL")
    save_context("http://[::1", "t", tmp_path / "context.json")
    assert main(["vehicles", "list"]) == 2
    assert "context.json: 'http://[::1'" in capsys.readouterr().err
    assert api.sent() == []


# --- tokens create --secret-file ---------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_existing_readable_secret_file_ends_0600_with_only_the_secret(
    api: Api, tmp_path: Path
) -> None:
    target = tmp_path / "op2.token"
    target.write_text("something older and longer than the secret\n")
    target.chmod(0o644)
    assert muto("tokens", "create", "--operator", "--secret-file", str(target)) == 0
    assert mode(target) == 0o600
    assert target.read_text() == TOKEN["token"] + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["op.token", "op2.token"]  # no temp


def test_through_a_symlink_the_file_it_names_is_replaced(api: Api, tmp_path: Path) -> None:
    target = tmp_path / "real.token"
    target.write_text("old\n")
    target.chmod(0o644)
    (tmp_path / "link.token").symlink_to(target.name)
    assert muto("tokens", "create", "--operator", "--secret-file", "link.token") == 0
    assert (tmp_path / "link.token").is_symlink()
    assert mode(target) == 0o600 and target.read_text() == TOKEN["token"] + "\n"


@pytest.mark.parametrize("fmt", ["table", "json", "yaml"])
def test_with_a_secret_file_no_format_prints_the_secret(
    api: Api, capsys: pytest.CaptureFixture[str], tmp_path: Path, fmt: str
) -> None:
    target = tmp_path / "new.token"
    assert muto("tokens", "create", "--operator", "--secret-file", str(target), "-o", fmt) == 0
    assert target.read_text() == TOKEN["token"] + "\n"
    out, err = capsys.readouterr()
    assert TOKEN["token"] not in out + err
    if fmt == "table":
        assert out == ""
        return
    shown = json.loads(out) if fmt == "json" else yaml.safe_load(out)
    assert shown == {
        "tokenId": TOKEN["tokenId"],
        "role": "operator",
        "vehicleId": None,
        "secretFile": str(target),
    }


@pytest.mark.parametrize("where", ["/nonexistent/dir/x", "a-file/x", "."])
def test_a_secret_file_that_cannot_be_written_is_refused_before_a_token_is_issued(
    api: Api, capsys: pytest.CaptureFixture[str], tmp_path: Path, where: str
) -> None:
    (tmp_path / "a-file").write_text("")  # a file, not a directory (refused even as root)
    before = sorted(os.listdir(tmp_path))
    assert muto("tokens", "create", "--operator", "--secret-file", where) == 2
    assert api.sent() == []  # nothing issued, so no secret lost
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write the secret to {where}") and err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_write_failing_after_the_token_was_issued_names_the_token_to_revoke(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    assert muto("tokens", "create", "--operator", "--secret-file", "/dev/full") == 2
    assert api.sent() == [("POST", b"/api/tokens")]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and TOKEN["tokenId"] in err
    assert f"muto tokens revoke {TOKEN['tokenId']}" in err


# --- vehicles list --status --------------------------------------------------------


def test_an_unknown_status_is_refused_naming_the_known_ones(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    assert muto("vehicles", "list", "--status", "bogus") == 2
    assert api.sent() == []
    err = capsys.readouterr().err
    for known in ("converged", "blocked", "rejected", "rolled_back", "failed", "online", "stale"):
        assert known in err
    assert muto("vehicles", "list", "--status", "stale", "-o", "json") == 0
    assert json.loads(capsys.readouterr().out) == [VEHICLE]
    assert muto("vehicles", "list", "--status", "offline", "-o", "json") == 0
    assert json.loads(capsys.readouterr().out) == []


def test_a_rollout_rolled_back_ends_when_its_rollbacks_are_confirmed() -> None:
    def rollout(state: str, outstanding: int = 0, paused: bool = False) -> dict[str, Any]:
        return {"state": state, "outstandingTotal": outstanding, "paused": paused}

    assert outcome(rollout("rolled_back", outstanding=2)) is None  # a watch goes on
    assert exit_code(rollout("rolled_back", outstanding=2)) == 14
    assert exit_code(rollout("aborted", outstanding=1)) == 14
    assert exit_code(rollout("rolled_back")) == 10
    assert exit_code(rollout("aborted")) == 11
    assert exit_code(rollout("completed")) == 0
    assert exit_code(rollout("wave", outstanding=5)) == 12
    assert exit_code(rollout("wave", outstanding=5, paused=True)) == 13


def test_a_proxys_own_page_is_said_without_its_html() -> None:
    """haproxy's 503 while every replica is unready (the second pass printed its HTML)."""
    page = "<html><body><h1>503 Service Unavailable</h1>No server is available</body></html>"
    response = httpx.Response(503, text=page, headers={"content-type": "text/html"})
    with pytest.raises(FleetError) as refused:
        answer(response, Connection(url="http://127.0.0.1:1", token=None))
    said = str(refused.value)
    assert "<" not in said and "503 Service Unavailable from a proxy" in said
    plain = httpx.Response(502, text="upstream says no")
    with pytest.raises(FleetError) as refused:
        answer(plain, Connection(url="http://127.0.0.1:1", token=None))
    assert "upstream says no" in str(refused.value)
