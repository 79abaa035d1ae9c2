"""POST /releases (signed; content immutable, signatures may be added),
GET /releases[/{stack}/{version}]."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from muto.cloud.api.context import body, correlation, off_loop, operator, plane, principal
from muto.cloud.api.responses import ok
from muto.cloud.commands import Cause, register_release
from muto.domain.desired import Envelope


async def register(request: Request) -> Response:
    who = await operator(request)
    envelope = await body(request, Envelope)
    cp = plane(request)
    # Off the loop: the keys in force may be read from the view, and it verifies Ed25519.
    release, digest, refusal = await off_loop(cp.signing.open_or_refusal, envelope)
    cause = Cause.of(who.actor, correlation(request))
    command = register_release(
        release, digest, envelope, cause, check=cp.signing.check_signatures, refusal=refusal
    )
    written = await cp.write(command)
    cp.require_views(written)
    done = written.value
    return ok(
        await off_loop(cp.queries.release, release.stack_name, release.version),
        201 if done.created else 200,
        {"position": written.position, "created": done.created, "added": list(done.added)},
    )


async def listing(request: Request) -> Response:
    await operator(request)
    found = await off_loop(plane(request).queries.releases, request.query_params.get("stack"))
    return ok(found, metadata={"total": len(found)})


async def one(request: Request) -> Response:
    await principal(request)  # vehicles may read releases too: they are signed and public
    params = request.path_params
    return ok(await off_loop(plane(request).queries.release, params["stack"], params["version"]))
