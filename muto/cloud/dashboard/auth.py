"""How a browser presents the operator token: a login form posts it once; the answer
sets it in an HttpOnly, SameSite=Strict cookie scoped to the dashboard's path, checked
on every page exactly like a bearer token (revocation included). Nothing else is kept:
no server-side session, nothing written."""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from muto.cloud.api.context import OPEN, off_loop
from muto.cloud.api.responses import read_body
from muto.cloud.bootstrap import ControlPlane
from muto.cloud.tokens import MISS, Principal, Role

COOKIE = "muto_dashboard"
PREFIX = "/ui"
MAX_FORM_BYTES = 4096
COOKIE_SECONDS = 8 * 3600  # a working day; the token itself may live longer


class NotSignedIn(Exception):
    """No cookie, or a token that is unknown or revoked."""


class NotOperator(Exception):
    """A vehicle token: the dashboard shows the whole fleet, so it needs an operator."""


async def viewer(request: Request) -> Principal:
    cp: ControlPlane = request.state.plane
    if not cp.settings.auth:
        return OPEN
    secret = request.cookies.get(COOKIE, "")
    if not secret:
        raise NotSignedIn("sign in with an operator token to see the fleet")
    found = cp.auth.cached(secret)  # most page loads: a token seen seconds ago
    if found is MISS:
        found = await off_loop(cp.auth.authenticate, secret)
    if not isinstance(found, Principal):
        raise NotSignedIn("that token is unknown or revoked: sign in again")
    if found.role is not Role.OPERATOR:
        raise NotOperator("the dashboard needs an operator token, not a vehicle token")
    return found


async def posted_token(request: Request) -> tuple[str, str]:
    """(token, next page) from the urlencoded login form."""
    raw = await read_body(request, MAX_FORM_BYTES)
    form = parse_qs(raw.decode("utf-8", "replace"), max_num_fields=4)
    token = (form.get("token") or [""])[0].strip()
    return token, safe_next((form.get("next") or [PREFIX + "/"])[0])


def safe_next(target: str) -> str:
    """Only a dashboard page: never an open redirect to another site."""
    if target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return PREFIX + "/"


def same_origin(request: Request) -> bool:
    """A form posted from another site (login CSRF) carries its own Origin."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return origin == f"{request.url.scheme}://{request.url.netloc}"


def remember(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=COOKIE_SECONDS,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def forget(response: Response) -> None:
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
