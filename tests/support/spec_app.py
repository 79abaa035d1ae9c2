"""The API as schemathesis calls it in process: the app behind a proxy it can bind at
collection time, a control plane seeded with what the spec's examples name (vehicle
veh-0001 in region eu, release core@1.0.0), and which of schemathesis' checks do not
apply to an answer. Used by tests/integration/test_schemathesis.py (operations one at a
time) and tests/faults/test_schemathesis_stateful.py (walks)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance
from starlette.types import ASGIApp, Receive, Scope, Send

from muto.cloud.api.app import create_app
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause
from muto.cloud.settings import Settings
from muto.cloud.tokens import Role, issue_token
from tests.support.releases import signed_release
from tests.support.spine import register_fleet, registration


def seeded(settings_: Settings) -> tuple[ControlPlane, str]:
    cp = ControlPlane.open(settings_)
    register_fleet(
        cp, [registration(f"veh-{i:04d}", model=("m3", "m5")[i % 2]) for i in range(1, 5)]
    )
    cp.execute(signed_release("core", "1.0.0").register())
    secret, command = issue_token(Role.OPERATOR, None, Cause.of("test"))
    cp.execute(command)
    return cp, secret


def serve(settings_: Settings) -> Iterator[tuple[ASGIApp, str]]:
    cp, secret = seeded(replace(settings_, mqtt_url=None))
    APP.target = create_app(cp.settings, plane=cp)
    try:
        yield APP.target, secret
    finally:
        asgi.shutdown_lifespans()  # the app's lifespan, started by its first request
        APP.target = None  # the app's lifespan, started by its first request
        cp.close()


# Operations that refuse some schema-valid requests by design, so "schema-valid request
# rejected" is not a finding there: a selector is a string with a grammar (400 with its
# position); a target may select nobody, or an incompatible vehicle (422); a release
# envelope's payload must be base64 of a StackRelease (422), a key rotation's of a
# KeyRotation signed by the keys in force (422). Everywhere else the spec
# says exactly what the server accepts (#14 item 11: 5.0 is an integer, a vehicle token
# request needs `vehicleId`, a report that is not a success needs a reason code).
SEMANTIC = {
    "GET /vehicles",
    "POST /releases",
    "POST /desired-states",
    "POST /rollouts",
    "POST /trust/key-rotations",
}


class Proxy:
    """The ASGI app the cases call in process: schemathesis binds the schema to an app
    at collection time, the fixtures open the control plane later."""

    target: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.target is not None, "no app: the fixture did not run"
        await self.target(scope, receive, send)


APP = Proxy()
# The apps under test run without an MQTT broker: a refresh has no way to a vehicle, and
# its documented answer is 503 `unavailable` (spec/api.yaml). Only that answer is let
# through the server-error check; any other 5xx there is still a finding.
NO_BROKER = "POST /vehicles/{vehicle_id}/refresh"


def key_refused(response: Any) -> bool:
    """A write refused for its Idempotency-Key (by design: generated cases reuse a key
    with another body, or resend a token request): a 422 or 409 naming the header."""
    if response.status_code not in (409, 422):
        return False
    details = response.json()["error"]["details"]
    return isinstance(details, dict) and details.get("path") == "header.Idempotency-Key"


def excluded_checks(case: schemathesis.Case, response: Any) -> list[Any]:
    semantic = case.operation.label in SEMANTIC or key_refused(response)
    excluded: list[Any] = [positive_data_acceptance] if semantic else []
    if case.operation.label == NO_BROKER and response.status_code == 503:
        assert response.json()["error"]["code"] == "unavailable", response.text
        excluded.append(not_a_server_error)
    return excluded


def check(case: schemathesis.Case, token: str) -> None:
    response = case.call(headers={"Authorization": f"Bearer {token}"})
    case.validate_response(response, excluded_checks=excluded_checks(case, response))
