"""spec/api.yaml and the code must say the same thing: the routes, which Struct each
endpoint decodes its body into, the generated schemas, and the documented failures.

Regenerate the schemas section after changing a wire type:
    .venv/bin/python -m muto.cloud.api.schema
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from muto.cloud.api import schema
from muto.cloud.api.app import ROUTES, SPEC
from tests.support.specs import load_spec

METHODS = ("get", "put", "post", "patch", "delete")
PUBLIC = {("GET", p) for p in ("/livez", "/readyz", "/healthz", "/openapi.yaml")}
BODY_CALL = re.compile(r"\bbody\(request, (\w+)\)")


def operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def code_routes() -> dict[tuple[str, str], Any]:
    return {
        (method, route.path): route.endpoint
        for route in ROUTES
        for method in route.methods or ()
        if method != "HEAD"  # Starlette adds HEAD to every GET
    }


def resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        *_, kind, name = node["$ref"].split("/")
        node = spec["components"][kind][name]
    return node


def body_ref(spec: dict[str, Any], op: dict[str, Any]) -> str | None:
    if "application/json" not in op.get("requestBody", {}).get("content", {}):
        return None  # no body, or raw bytes (an artifact upload)
    ref: str = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return ref.rsplit("/", 1)[1]


def body_struct(endpoint: Any) -> str | None:
    """The Struct the endpoint decodes its body into, read from its source: one call
    `body(request, Kind)` per endpoint that takes a body."""
    found = BODY_CALL.findall(inspect.getsource(endpoint))
    assert len(found) <= 1, f"{endpoint.__qualname__} decodes several bodies: {found}"
    return found[0] if found else None


def test_the_spec_and_the_route_table_list_the_same_operations() -> None:
    in_spec = set(operations(load_spec()))
    in_code = set(code_routes())
    assert in_code - in_spec == set(), "routes missing from spec/api.yaml"
    assert in_spec - in_code == set(), "operations in spec/api.yaml that no route serves"


def test_each_request_body_is_the_struct_the_handler_decodes() -> None:
    spec = load_spec()
    ops = operations(spec)
    bodies = {kind.__name__ for kind in schema.REQUEST_BODIES}
    for key, endpoint in code_routes().items():
        decoded, documented = body_struct(endpoint), body_ref(spec, ops[key])
        assert documented == decoded, f"{key}: the handler decodes {decoded}, spec {documented}"
        if decoded is not None:
            assert decoded in bodies, f"{decoded} is missing from schema.REQUEST_BODIES"
            assert ops[key]["requestBody"]["required"] is True


def test_the_schemas_section_is_what_msgspec_generates_now() -> None:
    assert load_spec()["components"]["schemas"] == schema.components(), (
        "spec/api.yaml is stale: run `python -m muto.cloud.api.schema`"
    )


def test_the_regenerated_file_is_byte_identical(tmp_path: Path) -> None:
    copy = tmp_path / "api.yaml"
    copy.write_text(SPEC.read_text(encoding="utf-8"), encoding="utf-8")
    assert schema.regenerate(copy) is False


def test_every_reference_resolves() -> None:
    spec = load_spec()

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                prefix, _, name = node["$ref"].rpartition("/")
                kind = prefix.removeprefix("#/components/")
                assert name in spec["components"].get(kind, {}), f"{where}: {node['$ref']}"
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}/{i}")

    walk(spec, "#")


def test_operation_ids_are_unique() -> None:
    ids = [op["operationId"] for op in operations(load_spec()).values()]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("key", sorted(code_routes()), ids=" ".join)
def test_each_operation_documents_its_failures(key: tuple[str, str]) -> None:
    spec = load_spec()
    op = operations(spec)[key]
    codes = set(op["responses"])
    assert codes & {"200", "201"}, "no success response"
    if key in PUBLIC:
        assert op.get("security") == [], "a public endpoint must say `security: []`"
        return
    assert "security" not in op, "authenticated endpoints use the global bearer scheme"
    assert "401" in codes
    assert "429" in codes, "every token is rate limited (muto/cloud/ratelimit.py)"
    unauthorized = resolve(spec, op["responses"]["401"])
    assert "WWW-Authenticate" in unauthorized["headers"]
    if "requestBody" in op:
        assert {"400", "413", "422"} <= codes, "a body can be malformed, too large or invalid"
    params = [resolve(spec, p) for p in _params(spec["paths"][key[1]]) + _params(op)]
    if any(p["in"] == "query" for p in params):
        assert "422" in codes, "a query parameter can be invalid (out of range, a NUL)"
    if any(p["in"] == "header" and "pattern" in p["schema"] for p in params):
        assert "422" in codes, "a header that does not match its pattern is a 422"
    if any(p["in"] == "path" for p in params):
        assert "404" in codes, "an unknown id is a 404"
    for status, response in op["responses"].items():
        if status.startswith(("4", "5")):
            content = resolve(spec, response)["content"]["application/json"]
            assert content["schema"]["$ref"] == "#/components/schemas/Error", status


def _params(node: dict[str, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = node.get("parameters", [])
    return params


def test_every_success_response_is_an_envelope() -> None:
    spec = load_spec()
    for key, op in operations(spec).items():
        for status, response in op["responses"].items():
            content = resolve(spec, response).get("content", {})
            if not status.startswith("2") or "application/json" not in content:
                continue
            body = resolve(spec, content["application/json"]["schema"])
            assert body["required"] == ["data", "metadata", "timestamp"], (key, status)


def test_handlers_read_the_correlation_header_only_through_its_check() -> None:
    """X-Correlation-Id ends up in an indexed column: context.correlation checks it."""
    for key, endpoint in code_routes().items():
        source = inspect.getsource(inspect.getmodule(endpoint) or endpoint)
        assert "x-correlation-id" not in source.lower(), f"{key}: use context.correlation()"
