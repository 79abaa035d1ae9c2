"""Every endpoint against the real server process, on SQLite and PostgreSQL: the happy
path and the documented failures, auth, pagination, ETag polling, idempotent reports,
read-your-writes. One server per backend; each test works on vehicles of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from muto.cloud.api.app import SPEC
from tests.support.api_server import (
    BACKENDS,
    ApiServer,
    error_of,
    health_body,
    reconcile_body,
    running,
    unique,
    vehicle_body,
)
from tests.support.releases import release_envelope, signed_payload


@dataclass
class Api:
    server: ApiServer
    op: httpx.Client  # operator token
    a: httpx.Client  # vehicle token of veh-a
    b: httpx.Client  # vehicle token of veh-b
    tokens: dict[str, tuple[str, str]]

    def register(self, vehicle_id: str, **labels: str) -> dict[str, Any]:
        response = self.op.post("/vehicles", json=vehicle_body(vehicle_id, **labels))
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    def release(self, stack: str, version: str = "1.0.0", **kw: Any) -> dict[str, Any]:
        response = self.op.post("/releases", json=release_envelope(stack, version, **kw))
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    def assign(self, selector: str, stack: str, version: str = "1.0.0") -> dict[str, Any]:
        body = {"target": {"selector": selector}, "stack": {"name": stack, "version": version}}
        response = self.op.post("/desired-states", json=body)
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    def audit(self, **query: Any) -> list[dict[str, Any]]:
        response = self.op.get("/audit", params={"limit": 5000, **query})
        assert response.status_code == 200, response.text
        entries: list[dict[str, Any]] = response.json()["data"]
        return entries


@pytest.fixture(scope="module", params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data_dir = tmp_path_factory.mktemp(request.param)
    roles = ("operator", "veh-a", "veh-b", "veh-revoked")
    with running(request.param, data_dir, *roles) as (server, tokens):
        clients = [server.client(tokens[who][0]) for who in roles[:3]]
        try:
            found = Api(server, *clients, tokens=tokens)
            found.register("veh-a")
            found.register("veh-b")
            yield found
        finally:
            for client in clients:
                client.close()


# -- the server's own surface -------------------------------------------------------------


def test_health_needs_no_token_and_reports_readiness(api: Api) -> None:
    with api.server.client() as anonymous:
        body = anonymous.get("/healthz").json()
    assert set(body) == {"data", "metadata", "timestamp"}
    assert body["data"]["status"] == "ready"
    assert body["data"]["mqttConnected"] is None  # --no-mqtt


def test_the_server_serves_the_spec_it_is_tested_against(api: Api) -> None:
    with api.server.client() as anonymous:
        response = anonymous.get("/openapi.yaml")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/yaml")
    assert response.content == SPEC.read_bytes()


def test_unknown_paths_and_methods_answer_in_the_error_shape(api: Api) -> None:
    assert error_of(api.op.get("/nowhere"), 404)["code"] == "not_found"
    gone = api.op.delete("/vehicles")
    assert error_of(gone, 405)["code"] == "method_not_allowed"
    assert sorted(m.strip() for m in gone.headers["allow"].split(",")) == ["GET", "HEAD", "POST"]


# -- auth ---------------------------------------------------------------------------------


def test_without_a_token_every_endpoint_but_health_and_spec_is_401(api: Api) -> None:
    with api.server.client() as anonymous:
        for method, path in [
            ("GET", "/vehicles"),
            ("POST", "/vehicles"),
            ("GET", "/vehicles/veh-a"),
            ("GET", "/releases/core/1.0.0"),
            ("GET", "/desired-states/latest?vehicleId=veh-a"),
            ("POST", "/reports/health"),
            ("GET", "/rollouts"),
            ("POST", "/rollouts/ro-x/pause"),
            ("GET", "/audit"),
        ]:
            response = anonymous.request(method, path, json={})
            assert error_of(response, 401)["code"] == "unauthorized", (method, path)
            assert response.headers["www-authenticate"] == "Bearer"
        unknown = anonymous.get("/vehicles", headers={"Authorization": "Bearer muto_nope_x"})
        assert error_of(unknown, 401)["message"] == "unknown or revoked token"


def test_a_vehicle_token_acts_only_on_its_own_vehicle(api: Api) -> None:
    assert api.a.get("/vehicles/veh-a").status_code == 200
    assert error_of(api.a.get("/vehicles/veh-b"), 403)["code"] == "forbidden"
    assert error_of(api.a.get("/desired-states/latest?vehicleId=veh-b"), 403)
    report = health_body("veh-b", unique("h"))
    assert error_of(api.a.post("/reports/health", json=report), 403)
    # operator endpoints are closed to vehicles
    assert error_of(api.a.get("/vehicles"), 403)
    assert error_of(api.a.post("/vehicles", json=vehicle_body("veh-z")), 403)
    assert error_of(api.a.get("/audit"), 403)


def test_a_revoked_token_is_refused(api: Api) -> None:
    secret, token_id = api.tokens["veh-revoked"]
    assert api.server.cli("token", "revoke", "--token-id", token_id).returncode == 0
    with api.server.client(secret) as revoked:
        assert error_of(revoked.get("/vehicles/veh-revoked"), 401)["code"] == "unauthorized"


# -- vehicles -----------------------------------------------------------------------------


def test_register_is_idempotent_and_conflicts_on_other_labels(api: Api) -> None:
    vehicle_id = unique("reg")
    first = api.op.post("/vehicles", json=vehicle_body(vehicle_id, ring="beta"))
    assert first.status_code == 201
    assert first.json()["metadata"]["created"] is True
    again = api.op.post("/vehicles", json=vehicle_body(vehicle_id, ring="beta"))
    assert again.status_code == 200
    version = first.json()["metadata"]["version"]
    assert again.json()["metadata"] == {"position": None, "version": version, "created": False}
    other = api.op.post("/vehicles", json=vehicle_body(vehicle_id, ring="stable"))
    assert error_of(other, 409)["code"] == "conflict"
    # read-your-writes: the write is visible to the very next read
    assert api.op.get(f"/vehicles/{vehicle_id}").json()["data"]["labels"]["ring"] == "beta"
    assert error_of(api.op.get("/vehicles/nobody"), 404)["code"] == "not_found"


def test_bad_bodies_are_400_422_and_413(api: Api) -> None:
    malformed = api.op.post("/vehicles", content=b'{"vehicleId": ')
    assert error_of(malformed, 400)["code"] == "malformed_json"
    bad_id = api.op.post("/vehicles", json={"vehicleId": "has space"})
    assert error_of(bad_id, 422)["details"] == {"path": "$.vehicleId"}
    bad_label = api.op.post("/vehicles", json={"vehicleId": "ok", "labels": {"model": "m3 x"}})
    assert error_of(bad_label, 422)["details"]["path"] == "$.labels[...]"
    unknown = api.op.post("/vehicles", json={"vehicleId": "ok", "colour": "red"})
    assert error_of(unknown, 422)["details"] == {"path": "$.colour"}
    assert "colour" in error_of(unknown, 422)["message"]
    huge = api.op.post("/vehicles", content=b" " * (1024 * 1024 + 1))
    assert error_of(huge, 413)["details"] == {"limit": 1024 * 1024}
    long_correlation = api.op.post(
        "/vehicles", json=vehicle_body(unique("c")), headers={"X-Correlation-Id": "c" * 129}
    )
    assert error_of(long_correlation, 422)["details"] == {"path": "header.X-Correlation-Id"}


def test_patch_merges_and_honours_if_match(api: Api) -> None:
    vehicle_id = unique("patch")
    version = api.register(vehicle_id, ring="beta")["version"]
    patched = api.op.patch(
        f"/vehicles/{vehicle_id}",
        json={"labels": {"ring": None, "depot": "north"}, "attributes": {"os": "ubuntu-24.04"}},
        headers={"If-Match": f'"{version}"'},
    )
    assert patched.status_code == 200, patched.text
    data = patched.json()["data"]
    assert data["labels"] == {"model": "m3", "region": "eu", "depot": "north"}
    assert data["attributes"]["os"] == "ubuntu-24.04"
    assert patched.json()["metadata"]["version"] == data["version"] == version + 1
    stale = api.op.patch(
        f"/vehicles/{vehicle_id}", json={"labels": {}}, headers={"If-Match": f'"{version}"'}
    )
    assert error_of(stale, 409)["details"] == {
        "expectedVersion": version,
        "actualVersion": version + 1,
    }
    garbled = api.op.patch(f"/vehicles/{vehicle_id}", json={}, headers={"If-Match": "W/x"})
    assert error_of(garbled, 422)["details"] == {"path": "header.If-Match"}
    assert error_of(api.op.patch("/vehicles/nobody", json={}), 404)
    # the label index follows the patch
    found = api.op.get("/vehicles", params={"selector": "depot=north"}).json()["data"]
    assert [v["vehicleId"] for v in found] == [vehicle_id]


def test_listing_pages_with_a_cursor_and_counts_the_total(api: Api) -> None:
    batch = unique("batch")
    ids = sorted(api.register(f"{batch}-{i}", batch=batch)["vehicleId"] for i in range(5))
    seen, cursor, pages = [], None, 0
    while True:
        params = {"selector": f"batch={batch} AND region=eu", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = api.op.get("/vehicles", params=params).json()
        assert page["metadata"]["total"] == 5
        assert page["metadata"]["limit"] == 2
        seen += [v["vehicleId"] for v in page["data"]]
        pages += 1
        cursor = page["metadata"]["nextCursor"]
        if cursor is None:
            break
    assert seen == ids
    assert pages == 3


def test_a_bad_selector_or_limit_is_refused_with_where(api: Api) -> None:
    bad = api.op.get("/vehicles", params={"selector": "region=eu AND =m3"})
    assert error_of(bad, 400) == {
        "code": "bad_selector",
        "message": "expected a key at position 14 (found '=')",
        "details": {"position": 14},
    }
    for limit in ("0", "1001", "ten", "²"):
        refused = api.op.get("/vehicles", params={"limit": limit})
        assert error_of(refused, 422)["details"] == {"path": "query.limit"}, limit
    nul = api.op.get("/vehicles", params={"cursor": "a\x00b"})
    assert error_of(nul, 422)["details"] == {"path": "query"}


# -- releases -----------------------------------------------------------------------------


def test_releases_are_immutable(api: Api) -> None:
    stack = unique("stack")
    envelope = release_envelope(stack)
    created = api.op.post("/releases", json=envelope)
    assert created.status_code == 201
    digest = created.json()["data"]["manifestDigest"]
    assert digest.startswith("sha256:")
    # the same release again is a no-op
    same = api.op.post("/releases", json=envelope)
    assert same.status_code == 200
    assert same.json()["metadata"] == {"position": None, "created": False, "added": []}
    # signed by another key, its signature is added (content unchanged)
    resigned = release_envelope(stack)
    cosigned = api.op.post("/releases", json=resigned)
    assert cosigned.status_code == 200
    assert cosigned.json()["metadata"]["created"] is False
    assert cosigned.json()["metadata"]["added"] == [resigned["signatures"][0]["keyid"]]
    both = {**envelope, "signatures": envelope["signatures"] + resigned["signatures"]}
    other = api.op.post("/releases", json=release_envelope(stack, size=2))
    assert error_of(other, 409)["details"]["registeredDigest"] == digest
    fetched = api.b.get(f"/releases/{stack}/1.0.0")  # vehicles may read releases
    assert fetched.status_code == 200
    assert fetched.json()["data"]["envelope"] == both
    assert fetched.json()["data"]["manifestDigest"] == digest
    listed = api.op.get("/releases", params={"stack": stack}).json()
    assert [r["version"] for r in listed["data"]] == ["1.0.0"]
    assert listed["metadata"]["total"] == 1
    assert error_of(api.op.get(f"/releases/{stack}/9.9.9"), 404)


def test_a_release_envelope_must_carry_a_release(api: Api) -> None:
    envelope = release_envelope(unique("stack"))
    not_base64 = api.op.post("/releases", json={**envelope, "payload": "%%%"})
    assert error_of(not_base64, 422)["details"] == {"path": "$.payload"}
    wrong_type = api.op.post("/releases", json={**envelope, "payloadType": "text/plain"})
    assert error_of(wrong_type, 422)["code"] == "VERIFY_SIGNATURE_FAILED"
    missing = api.op.post("/releases", json={"payload": envelope["payload"]})
    assert error_of(missing, 422)["details"]["path"] == "$.payloadType"  # the missing field


# -- desired state ------------------------------------------------------------------------


def test_desired_state_polling_with_etag(api: Api) -> None:
    stack = unique("poll")
    api.release(stack, "1.0.0")
    api.release(stack, "2.0.0")
    api.op.patch("/vehicles/veh-a", json={"labels": {"poll": stack}})
    first = api.assign(f"poll={stack}", stack, "1.0.0")
    assert list(first["vehicles"]) == ["veh-a"]
    latest = api.a.get("/desired-states/latest", params={"vehicleId": "veh-a"})
    assert latest.status_code == 200
    assert latest.headers["cache-control"] == "no-cache"
    etag = latest.headers["etag"]
    bundle = latest.json()["data"]
    document = signed_payload(bundle["desiredState"])
    assert document["stack"]["name"] == stack and document["stack"]["version"] == "1.0.0"
    assert document["revision"] == first["desiredStateRevision"]
    assert signed_payload(bundle["release"])["stackName"] == stack
    same = api.a.get(
        "/desired-states/latest", params={"vehicleId": "veh-a"}, headers={"If-None-Match": etag}
    )
    assert same.status_code == 304
    assert same.headers["etag"] == etag
    assert same.content == b""
    # a new assignment changes the ETag; the very next poll sees it (read-your-writes)
    second = api.assign(f"poll={stack}", stack, "2.0.0")
    newer = api.a.get(
        "/desired-states/latest", params={"vehicleId": "veh-a"}, headers={"If-None-Match": etag}
    )
    assert newer.status_code == 200
    assert newer.headers["etag"] != etag
    assert newer.json()["metadata"]["sequence"] == second["vehicles"]["veh-a"]
    assert newer.json()["metadata"]["sequence"] == first["vehicles"]["veh-a"] + 1


def test_desired_state_failures(api: Api) -> None:
    stack = unique("ds")
    api.release(stack, models=("m9",))
    fresh = unique("ds-veh")
    api.register(fresh, ds=stack)
    none_yet = api.op.get("/desired-states/latest", params={"vehicleId": fresh})
    assert error_of(none_yet, 404)["code"] == "not_found"
    missing = api.op.get("/desired-states/latest")
    assert error_of(missing, 422)["details"] == {"path": "query.vehicleId"}

    def post(selector: str, name: str, **stack_ref: Any) -> httpx.Response:
        ref = {"name": name, "version": "1.0.0", **stack_ref}
        return api.op.post("/desired-states", json={"target": {"selector": selector}, "stack": ref})

    assert error_of(post("ds=nobody", stack), 422)["details"] == {"selector": "ds=nobody"}
    incompatible = error_of(post(f"ds={stack}", stack), 422)
    assert incompatible["details"] == [{"vehicleId": fresh, "reasonCodes": ["INCOMPATIBLE_MODEL"]}]
    assert error_of(post(f"ds={stack}", unique("none")), 404)
    wrong_digest = post(f"ds={stack}", stack, manifestDigest="sha256:" + "1" * 64)
    assert error_of(wrong_digest, 409)
    assert error_of(post("ds=", stack), 400)["details"] == {"position": 3}
    bad_window = api.op.post(
        "/desired-states",
        json={
            "target": {"selector": f"ds={stack}"},
            "stack": {"name": stack, "version": "1.0.0"},
            "policy": {"applyWindow": {"startLocal": "25:00", "endLocal": "04:00"}},
        },
    )
    assert error_of(bad_window, 422)["details"] == {"path": "$.policy.applyWindow.startLocal"}


# -- reports ------------------------------------------------------------------------------


def test_a_reconcile_report_delivered_twice_is_one_event(api: Api) -> None:
    report_id = unique("rep")
    body = reconcile_body("veh-b", report_id, running=("core", "1.0.0"))
    first = api.b.post("/reports/reconcile", json=body)
    assert first.status_code == 200, first.text
    assert first.json()["data"] == {"reportId": report_id, "recorded": True}
    again = api.b.post("/reports/reconcile", json=body)
    assert again.json()["data"] == {"reportId": report_id, "recorded": False}
    assert again.json()["metadata"]["duplicate"] is True
    recorded = [
        e
        for e in api.audit(vehicleId="veh-b")
        if e["eventType"] == "Vehicle.ReconcileReported"
        and e["data"]["report"]["reportId"] == report_id
    ]
    assert len(recorded) == 1
    vehicle = api.op.get("/vehicles/veh-b").json()["data"]
    assert vehicle["lastStatus"] == "converged"
    assert vehicle["runningRelease"] == "core@1.0.0"


def test_report_failures(api: Api) -> None:
    unknown = api.op.post("/reports/reconcile", json=reconcile_body("ghost", unique("r")))
    assert error_of(unknown, 404)
    naive = {**reconcile_body("veh-a", unique("r")), "observedAt": "2026-01-01T00:00:00"}
    assert error_of(api.a.post("/reports/reconcile", json=naive), 422)["details"] == {
        "path": "$.observedAt"
    }
    bad_status = {**reconcile_body("veh-a", unique("r")), "status": "great"}
    assert error_of(api.a.post("/reports/reconcile", json=bad_status), 422)["details"] == {
        "path": "$.status"
    }
    nul_id = {**health_body("veh-a", "x"), "reportId": "a\x00b"}
    assert error_of(api.a.post("/reports/health", json=nul_id), 422)["details"] == {
        "path": "$.reportId"
    }


def test_only_health_transitions_become_events(api: Api) -> None:
    vehicle_id = unique("health")
    api.register(vehicle_id)
    statuses = ["healthy", "healthy", "degraded", "degraded", "healthy"]
    transitions = []
    for status in statuses:
        response = api.op.post("/reports/health", json=health_body(vehicle_id, unique("h"), status))
        assert response.status_code == 200, response.text
        transitions.append(response.json()["data"]["transition"])
    assert transitions == [True, False, True, False, True]
    events = [
        e for e in api.audit(vehicleId=vehicle_id) if e["eventType"] == "Vehicle.HealthChanged"
    ]
    assert len(events) == 3
    assert api.op.get(f"/vehicles/{vehicle_id}").json()["data"]["health"] == "healthy"


# -- audit --------------------------------------------------------------------------------


def test_the_audit_timeline_filters_and_pages(api: Api) -> None:
    correlation = unique("corr")
    vehicle_id = unique("audited")
    api.op.post(
        "/vehicles", json=vehicle_body(vehicle_id), headers={"X-Correlation-Id": correlation}
    )
    api.op.patch(
        f"/vehicles/{vehicle_id}",
        json={"labels": {"x": "1"}},
        headers={"X-Correlation-Id": correlation},
    )
    threaded = api.audit(correlationId=correlation)
    assert [e["eventType"] for e in threaded] == ["Vehicle.Registered", "Vehicle.Updated"]
    assert {e["vehicleId"] for e in threaded} == {vehicle_id}
    assert {e["actor"] for e in threaded} == {f"operator:{api.tokens['operator'][1]}"}
    first = api.op.get("/audit", params={"limit": 1, "correlationId": correlation}).json()
    assert first["metadata"]["nextAfter"] == threaded[0]["position"]
    rest = api.op.get(
        "/audit", params={"after": first["metadata"]["nextAfter"], "correlationId": correlation}
    ).json()
    assert [e["position"] for e in rest["data"]] == [threaded[1]["position"]]
    assert rest["metadata"]["nextAfter"] is None
    assert error_of(api.op.get("/audit", params={"after": "-1"}), 422)["details"] == {
        "path": "query.after"
    }
