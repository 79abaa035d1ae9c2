"""The dashboard's answers without a browser: sign-in and its cookie, refusals that say
why, unknown ids, bad filters, and nothing that writes. tests/e2e/test_dashboard_browser.py
watches a real rollout in Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from muto.cloud.api.app import create_app
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.commands import Cause, record_reconcile
from muto.cloud.dashboard.auth import COOKIE
from muto.cloud.seed import seed_demo_fleet
from muto.cloud.tokens import Role, issue_token, revoke_token
from muto.domain.reasons import ReasonCode
from muto.domain.reports import ReconcileStatus
from tests.support.spine import reconcile_report, sqlite_settings

ORIGIN = "http://testserver"


@dataclass
class Site:
    client: TestClient
    plane: ControlPlane
    operator: str
    vehicle: str

    def sign_in(self, token: str, nxt: str = "/ui/") -> None:
        answer = self.client.post(
            "/ui/login",
            data={"token": token, "next": nxt},
            headers={"Origin": ORIGIN},
            follow_redirects=False,
        )
        assert answer.status_code == 303, answer.text


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    settings = sqlite_settings(tmp_path)
    seed_demo_fleet(settings)
    plane = ControlPlane.open(settings)
    secrets = []
    for role, vehicle in ((Role.OPERATOR, None), (Role.VEHICLE, "vehicle-v3-eu-west-01")):
        secret, command = issue_token(role, vehicle, Cause.of("test"))
        plane.execute(command)
        secrets.append(secret)
    try:
        with TestClient(create_app(settings, plane=plane)) as client:
            yield Site(client, plane, *secrets)
    finally:
        plane.close()


PAGES = (
    "/ui/",
    "/ui/vehicles/vehicle-v3-eu-west-01",
    "/ui/releases",
    "/ui/rollouts",
    "/ui/rollouts/seed-rollout-1",
    "/ui/audit",
)


@pytest.mark.parametrize("path", PAGES)
def test_a_page_without_sign_in_answers_401_with_the_sign_in_form(site: Site, path: str) -> None:
    answer = site.client.get(path)
    assert answer.status_code == 401
    assert "sign in with an operator token" in answer.text
    assert 'name="token"' in answer.text
    assert f'name="next" value="{path}"' in answer.text


def test_sign_in_sets_an_httponly_strict_cookie_for_the_dashboard_only(site: Site) -> None:
    answer = site.client.post(
        "/ui/login",
        data={"token": site.operator, "next": "/ui/rollouts"},
        headers={"Origin": ORIGIN},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/rollouts"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={site.operator};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    for path in PAGES:
        page = site.client.get(path)
        assert page.status_code == 200, path
        assert page.headers["cache-control"] == "no-store"
        assert "script-src" not in page.headers["content-security-policy"]  # 'self' only


def test_a_wrong_or_vehicle_token_is_refused_at_sign_in(site: Site) -> None:
    for token in ("muto_0000_nope", site.vehicle):
        answer = site.client.post(
            "/ui/login", data={"token": token, "next": "/ui/"}, headers={"Origin": ORIGIN}
        )
        assert answer.status_code == 401
        assert "that is not a valid operator token" in answer.text
        assert COOKIE not in answer.headers.get("set-cookie", "")


def test_a_vehicle_token_in_the_cookie_gets_403(site: Site) -> None:
    site.client.cookies.set(COOKIE, site.vehicle, path="/ui")
    answer = site.client.get("/ui/")
    assert answer.status_code == 403
    assert "needs an operator token, not a vehicle token" in answer.text


def test_a_revoked_token_signs_the_browser_out(site: Site) -> None:
    site.sign_in(site.operator)
    assert site.client.get("/ui/").status_code == 200
    token_id = site.plane.auth.authenticate(site.operator).token_id  # type: ignore[union-attr]
    site.plane.execute(revoke_token(token_id, Cause.of("test")))
    answer = site.client.get("/ui/")
    assert answer.status_code == 401
    assert "unknown or revoked" in answer.text


def test_a_form_from_another_site_and_a_foreign_next_are_refused(site: Site) -> None:
    foreign = site.client.post(
        "/ui/login",
        data={"token": site.operator, "next": "/ui/"},
        headers={"Origin": "http://evil.example"},
    )
    assert foreign.status_code == 403
    assert COOKIE not in foreign.headers.get("set-cookie", "")
    answer = site.client.post(
        "/ui/login",
        data={"token": site.operator, "next": "//evil.example/ui/"},
        headers={"Origin": ORIGIN},
        follow_redirects=False,
    )
    assert answer.headers["location"] == "/ui/"


def test_unknown_ids_and_bad_filters_say_so(site: Site) -> None:
    site.sign_in(site.operator)
    vehicle = site.client.get("/ui/vehicles/nobody-here")
    assert vehicle.status_code == 404
    assert "vehicle &#39;nobody-here&#39; is not registered" in vehicle.text
    rollout = site.client.get("/ui/rollouts/no-such-rollout")
    assert rollout.status_code == 404
    assert "rollout &#39;no-such-rollout&#39; does not exist" in rollout.text
    bad = site.client.get("/ui/", params={"selector": "region="})
    assert bad.status_code == 400
    assert "selector:" in bad.text


def test_the_fleet_page_filters_by_selector_status_and_reason(site: Site) -> None:
    site.sign_in(site.operator)
    page = site.client.get("/ui/", params={"selector": "model=vehicle-v3", "status": "converged"})
    assert page.status_code == 200
    assert page.text.count('<tr data-vehicle="') == 12
    assert "12 vehicle(s) match" in page.text
    none = site.client.get("/ui/", params={"reason": "DENY_OUTSIDE_WINDOW"})
    assert "0 vehicle(s) match" in none.text  # the seed's blocked vehicle converged later
    blocked = reconcile_report(
        "vehicle-v4-us-east-02",
        "dashboard-blocked-1",
        ReconcileStatus.BLOCKED,
        reason_codes=[ReasonCode.DENY_MOVING, ReasonCode.DENY_AUTONOMOUS_MODE],
    )
    site.plane.execute(record_reconcile(blocked, "vehicle:vehicle-v4-us-east-02"))
    found = site.client.get("/ui/", params={"reason": "DENY_MOVING"})
    assert "1 vehicle(s) match" in found.text
    assert '<tr data-vehicle="vehicle-v4-us-east-02">' in found.text
    assert "DENY_AUTONOMOUS_MODE</span> <b>1</b>" in found.text  # the counts by reason
    bad = site.client.get("/ui/", params={"reason": "%_"})
    assert bad.status_code == 400 and "is not a reason code" in bad.text


def test_a_filter_value_the_page_does_not_know_is_refused_naming_what_it_may_be(
    site: Site,
) -> None:
    site.sign_in(site.operator)
    bad = site.client.get("/ui/", params={"status": "bogus"})
    assert bad.status_code == 400
    assert "status: &#39;bogus&#39; is not one of converged, blocked" in bad.text
    assert "vehicle(s) match" not in bad.text  # refused, not an empty match
    bad = site.client.get("/ui/", params={"selector": "model=vehicle-v3", "presence": "away"})
    assert bad.status_code == 400
    assert "presence: &#39;away&#39; is not one of online, stale, offline, unknown" in bad.text
    for name in ("status", "presence", "reason"):  # any, as the form sends it
        assert site.client.get("/ui/", params={name: ""}).status_code == 200


def test_every_count_on_the_fleet_page_is_a_link_that_filters(site: Site) -> None:
    site.sign_in(site.operator)
    page = site.client.get("/ui/", params={"selector": "model=vehicle-v3"})
    counts = page.text.split('id="counts">', 1)[1].split("</section>", 1)[0]
    assert '<span class="count">' not in counts
    presence = '<a class="count" href="?selector=model%3Dvehicle-v3&amp;presence=unknown">'
    assert presence + "unknown <b>12</b></a>" in counts  # the seed: never seen on MQTT
    followed = site.client.get("/ui/?selector=model%3Dvehicle-v3&presence=unknown")
    assert followed.status_code == 200 and "12 vehicle(s) match" in followed.text
    assert '<option value="unknown" selected>' in followed.text
    none = site.client.get("/ui/", params={"presence": "online"})
    assert none.status_code == 200 and "0 vehicle(s) match" in none.text


def test_nothing_on_the_dashboard_writes(site: Site) -> None:
    site.sign_in(site.operator)
    before = site.plane.log.position()
    for path in PAGES:
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            answer = site.client.request(method, path, headers={"Origin": ORIGIN})
            assert answer.status_code == 405, (method, path)
    assert site.plane.log.position() == before


def test_page_values_are_escaped(site: Site) -> None:
    site.sign_in(site.operator)
    page = site.client.get("/ui/", params={"selector": "<script>alert(1)</script>"})
    assert "<script>alert(1)</script>" not in page.text
