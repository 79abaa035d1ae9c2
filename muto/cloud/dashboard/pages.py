"""Pages: fleet, vehicle, releases, rollouts, rollout, audit; plus sign-in and sign-out.

Every page reads the views through the control plane, as the API does; none writes.
Failures are pages too: not signed in (401, with the sign-in form), a vehicle token
(403), an unknown vehicle or rollout (404 naming it), a bad filter (400 saying why).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from muto.cloud.api.context import off_loop, plane
from muto.cloud.api.schema import Rollout
from muto.cloud.dashboard import reads
from muto.cloud.dashboard.auth import (
    PREFIX,
    NotOperator,
    NotSignedIn,
    forget,
    posted_token,
    remember,
    same_origin,
    viewer,
)
from muto.cloud.errors import NotFound
from muto.cloud.queries import Queries, rollouts
from muto.domain.rollout_rules import stored_share
from muto.domain.selectors import SelectorError, parse_selector

HERE = Path(__file__).parent
templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
)
templates.env.globals["stored_share"] = stored_share  # one rule for every reader
# No inline script, nothing from elsewhere, never framed, never cached; the Origin of
# the sign-in post survives (with no-referrer Chromium sends `Origin: null`). Inline styles
# only for the progress bars' widths.
CSP = "; ".join(
    (
        "default-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    )
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
REASON = re.compile(r"[A-Z][A-Z0-9_]{0,63}")  # spec/reason-codes.yaml's shape
STATUSES = ("converged", "blocked", "rejected", "rolled_back", "failed", "none")
PRESENCES = reads.PRESENCES
Page = Callable[[Request], Awaitable[Response]]


def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    context.setdefault("signed_in", True)
    context.setdefault("auth", plane(request).settings.auth)
    return templates.TemplateResponse(
        request, name, {"prefix": PREFIX, **context}, status_code=status, headers=HEADERS
    )


def refused(request: Request, message: str, status: int) -> Response:
    nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return render(request, "login.html", status, message=message, next=nxt, signed_in=status == 403)


def page(handler: Page) -> Page:
    """Sign-in first, then the page; its expected failures become pages that say so."""

    async def guarded(request: Request) -> Response:
        try:
            await viewer(request)
        except NotSignedIn as exc:
            return refused(request, str(exc), 401)
        except NotOperator as exc:
            return refused(request, str(exc), 403)
        try:
            return await handler(request)
        except NotFound as exc:
            return render(request, "missing.html", 404, message=exc.message)

    guarded.__name__ = handler.__name__
    guarded.__doc__ = handler.__doc__
    return guarded


# -- sign-in --------------------------------------------------------------------------


async def sign_in(request: Request) -> Response:
    return await (login(request) if request.method == "POST" else login_form(request))


async def login_form(request: Request) -> Response:
    return render(
        request,
        "login.html",
        message="",
        next=request.query_params.get("next", PREFIX + "/"),
        signed_in=False,
    )


async def login(request: Request) -> Response:
    if not same_origin(request):
        return render(request, "login.html", 403, message="a form from another site", next="")
    token, nxt = await posted_token(request)
    cp = plane(request)
    who = await off_loop(cp.auth.authenticate, token) if token else None
    if who is None or who.role.value != "operator":
        message = "that is not a valid operator token" if token else "enter an operator token"
        return render(request, "login.html", 401, message=message, next=nxt, signed_in=False)
    response = RedirectResponse(nxt, status_code=303)
    remember(response, request, token)
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse(PREFIX + "/login", status_code=303)
    forget(response)
    return response


# -- pages ----------------------------------------------------------------------------


@page
async def fleet(request: Request) -> Response:
    q = request.query_params
    raw, reason = q.get("selector", ""), q.get("reason") or None
    status, presence = q.get("status") or None, q.get("presence") or None
    try:
        selector, error = (parse_selector(raw) if raw.strip() else None), ""
    except SelectorError as exc:
        selector, error = None, f"selector: {exc}"
    error = error or bad_filter(status, presence, reason)
    shown: dict[str, Any] = {"filters": dict(q), "statuses": STATUSES, "presences": PRESENCES}
    if error:  # refused, as the CLI refuses it (exit 2), never an empty match
        return render(request, "fleet.html", 400, error=error, fleet=None, **shown)
    queries = plane(request).queries
    found = await off_loop(reads.fleet, queries, selector, status, reason, presence)
    return render(request, "fleet.html", fleet=found, error="", **shown)


def bad_filter(status: str | None, presence: str | None, reason: str | None) -> str:
    """What is wrong with the fleet page's filters, naming the parameter ("": nothing)."""
    if status is not None and status not in STATUSES:
        return f"status: {status!r} is not one of {', '.join(STATUSES)}"
    if presence is not None and presence not in PRESENCES:
        return f"presence: {presence!r} is not one of {', '.join(PRESENCES)}"
    if reason is not None and not REASON.fullmatch(reason):
        return f"reason: {reason!r} is not a reason code"
    return ""


@page
async def vehicle(request: Request) -> Response:
    vehicle_id = request.path_params["vehicle_id"]
    return render(
        request, "vehicle.html", **await off_loop(_vehicle, plane(request).queries, vehicle_id)
    )


def _vehicle(queries: Queries, vehicle_id: str) -> dict[str, Any]:
    memberships = reads.vehicle_rollouts(queries, vehicle_id)
    rollout_ids = [m["rollout_id"] for m in memberships]
    return {
        "vehicle": queries.vehicle(vehicle_id),
        "memberships": memberships,
        "timeline": reads.vehicle_timeline(queries, vehicle_id, rollout_ids),
    }


@page
async def releases(request: Request) -> Response:
    found = await off_loop(plane(request).queries.releases)
    return render(request, "releases.html", releases=found)


@page
async def rollout_list(request: Request) -> Response:
    found = await off_loop(_rollouts, plane(request).queries)
    return render(request, "rollouts.html", rollouts=found)


def _rollouts(queries: Queries) -> list[Rollout]:
    return [queries.rollout(r.rollout_id) for r in rollouts(queries, 50)]


@page
async def rollout(request: Request) -> Response:
    found = await off_loop(plane(request).queries.rollout, request.path_params["rollout_id"])
    return render(request, "rollout.html", rollout=found)


@page
async def audit(request: Request) -> Response:
    raw = request.query_params.get("before", "")
    before = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 11 else None
    q = request.query_params
    vehicle_id, rollout_id = q.get("vehicle") or None, q.get("rollout") or None
    queries = plane(request).queries
    entries = await off_loop(reads.audit_page, queries, before, vehicle_id, rollout_id)
    return render(
        request, "audit.html", entries=entries, vehicle_id=vehicle_id, rollout_id=rollout_id
    )


def mount() -> Mount:
    return Mount(
        PREFIX,
        routes=[
            Route("/", fleet, methods=["GET"]),
            Route("/login", sign_in, methods=["GET", "POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/vehicles/{vehicle_id}", vehicle, methods=["GET"]),
            Route("/releases", releases, methods=["GET"]),
            Route("/rollouts", rollout_list, methods=["GET"]),
            Route("/rollouts/{rollout_id}", rollout, methods=["GET"]),
            Route("/audit", audit, methods=["GET"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
    )
