"""Where the fleet CLI connects and with which token, and how an API answer becomes an
exit code: pure, no server."""

from __future__ import annotations

import argparse
import stat
from pathlib import Path

import httpx
import pytest

from muto.fleetctl.connection import (
    NOT_FOUND,
    REFUSED,
    UNAUTHENTICATED,
    USAGE,
    Connection,
    FleetError,
    answer,
    save_context,
)

SAVED = "http://saved.example:8080"


def args(url: str | None = None, token_file: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(url=url, token_file=token_file)


@pytest.fixture
def context(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "muto" / "context.json"
    save_context(SAVED + "/", "saved-token", path)
    return {"MUTO_CONTEXT": str(path)}


def test_the_context_is_private_even_over_a_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "context.json"
    path.write_text("{}")
    path.chmod(0o644)
    save_context(SAVED, "secret", path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_flags_then_environment_then_the_context(tmp_path: Path, context: dict[str, str]) -> None:
    token_file = tmp_path / "t"
    token_file.write_text("from-file\n")
    assert Connection.resolve(args(), context) == Connection(SAVED, "saved-token")
    env = {**context, "MUTO_URL": SAVED, "MUTO_TOKEN": "from-env"}
    assert Connection.resolve(args(), env) == Connection(SAVED, "from-env")
    flagged = Connection.resolve(args(SAVED, str(token_file)), env)
    assert flagged == Connection(SAVED, "from-file")


def test_the_login_token_never_goes_to_another_server(context: dict[str, str]) -> None:
    elsewhere = Connection.resolve(args("http://other.example"), context)
    assert elsewhere == Connection("http://other.example", None)
    by_env = Connection.resolve(args(), {**context, "MUTO_URL": "http://other.example"})
    assert by_env.token is None


def test_no_context_means_the_local_default(tmp_path: Path) -> None:
    env = {"MUTO_CONTEXT": str(tmp_path / "none.json")}
    assert Connection.resolve(args(), env) == Connection("http://127.0.0.1:8080", None)


def test_a_broken_context_or_token_file_is_a_usage_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(FleetError) as found:
        Connection.resolve(args(), {"MUTO_CONTEXT": str(broken)})
    assert found.value.exit_code == USAGE and "muto login" in found.value.message
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(FleetError, match="is empty"):
        Connection.resolve(args(token_file=str(empty)), {"MUTO_CONTEXT": str(broken) + ".no"})


def reply(status: int, code: str = "x", details: object = None) -> httpx.Response:
    body = {"error": {"code": code, "message": f"said {code}", "details": details}}
    return httpx.Response(status, json=body)


@pytest.mark.parametrize(
    ("status", "code", "exit_code"),
    [
        (404, "not_found", NOT_FOUND),
        (401, "unauthorized", UNAUTHENTICATED),
        (403, "forbidden", UNAUTHENTICATED),
        (409, "conflict", REFUSED),
        (422, "invalid", REFUSED),
        (503, "unavailable", REFUSED),
        (504, "no_answer", REFUSED),
    ],
)
def test_each_failure_keeps_the_api_code_and_gets_its_exit_code(
    status: int, code: str, exit_code: int
) -> None:
    with pytest.raises(FleetError) as found:
        answer(reply(status, code), Connection(SAVED, "t"))
    assert (found.value.code, found.value.exit_code) == (code, exit_code)
    assert found.value.line().startswith(f"error: {code}: ")


def test_details_follow_the_message_and_a_missing_token_says_how_to_give_one() -> None:
    with pytest.raises(FleetError) as found:
        answer(reply(400, "bad_selector", {"position": 6}), Connection(SAVED, "t"))
    assert found.value.message == 'said bad_selector {"position":6}'
    with pytest.raises(FleetError) as anonymous:
        answer(reply(401, "unauthorized"), Connection(SAVED, None))
    assert "--token-file" in anonymous.value.message and "MUTO_TOKEN" in anonymous.value.message


def test_a_non_json_failure_still_names_the_status() -> None:
    with pytest.raises(FleetError) as found:
        answer(httpx.Response(502, text="<html>bad gateway</html>"), Connection(SAVED, "t"))
    assert found.value.code == "http_502" and found.value.exit_code == REFUSED
