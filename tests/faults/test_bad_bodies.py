"""Scenario 12, bodies: every operation of spec/api.yaml that takes a body, on the real
server process, sent oversized (declared, and chunked without a length), malformed,
empty, of the wrong JSON type, not UTF-8, and nested ten thousand deep. Each answer is
the documented error (413 `too_large`, else 400/422 in the error shape), never a 5xx,
and the server logs no traceback. (Generated cases, negative data and stateful links:
test_schemathesis_stateful.py and tests/integration/test_schemathesis.py.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from muto.cloud.api.app import SPEC
from muto.cloud.settings import Settings
from tests.support.api_server import ApiServer, running, vehicle_body

LIMIT = Settings().max_body_bytes
PATH_VALUES = {"vehicle_id": "veh-a", "rollout_id": "ro-none", "token_id": "tok-none",
               "stack": "core", "version": "1.0.0", "digest": "sha256:" + "0" * 64}  # fmt: skip


def with_bodies() -> list[tuple[str, str]]:
    spec = yaml.safe_load(SPEC.read_text())
    found = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            # JSON bodies; an artifact upload's raw bytes have their own limits and tests
            # (tests/integration/test_api_artifacts.py)
            content = (
                operation.get("requestBody", {}).get("content", {})
                if isinstance(operation, dict)
                else {}
            )
            if "application/json" in content:
                concrete = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)
                found.append((method.upper(), concrete))
    return found


def chunks(total: int) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        piece = b" " * min(65536, total - sent)
        sent += len(piece)
        yield piece


BODIES: dict[str, tuple[Any, set[int]]] = {
    "declared oversized": (b" " * (LIMIT + 1), {413}),
    "chunked oversized": ("chunked", {413}),
    "malformed": (b"{not json", {400}),
    "empty": (b"", {400, 422}),
    "wrong JSON type": (b"[1, 2, 3]", {400, 422}),
    "not UTF-8": (b'{"vehicleId": "\xff\xfe"}', {400, 422}),
    "nested 10000 deep": (b"[" * 10_000 + b"]" * 10_000, {400, 422}),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, str]]:
    with running("sqlite", tmp_path_factory.mktemp("bodies"), "operator") as (api, tokens):
        secret = tokens["operator"][0]
        with api.client(secret) as http:
            assert http.post("/vehicles", json=vehicle_body("veh-a")).status_code == 201
        yield api, secret


@pytest.mark.parametrize(("method", "path"), with_bodies())
def test_bad_bodies_are_refused_in_the_error_shape(
    server: tuple[ApiServer, str], method: str, path: str
) -> None:
    api, secret = server
    with api.client(secret) as http:
        for name, (content, expected) in BODIES.items():
            body = chunks(LIMIT + 1) if content == "chunked" else content
            headers = {"Content-Type": "application/json"}
            if method == "PATCH":
                headers["If-Match"] = '"1"'
            answer = http.request(method, path, content=body, headers=headers)
            assert answer.status_code in expected, (name, answer.status_code, answer.text)
            error = answer.json()["error"]
            assert set(error) == {"code", "message", "details"}, name
            if answer.status_code == 413:
                assert error["code"] == "too_large"
    assert api.tracebacks() == []


def test_every_operation_with_a_body_is_covered() -> None:
    assert len(with_bodies()) == 9  # a new operation with a body gets the same rows
