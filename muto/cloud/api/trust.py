"""POST /trust/key-rotations (publish a signed release key rotation), GET the published."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from muto.cloud.api.context import body, correlation, off_loop, operator, plane
from muto.cloud.api.responses import ok
from muto.cloud.commands import Cause
from muto.cloud.commands.release_keys import publish_key_rotation
from muto.cloud.errors import NotFound
from muto.domain.desired import Envelope


async def publish(request: Request) -> Response:
    """Checked against its own new keys here, against the chain in the write (a second
    publication at once is decided on the first's chain); 409 without release keys
    configured (Signing.check_rotation)."""
    who = await operator(request)
    envelope = await body(request, Envelope)
    cp = plane(request)
    rotation = await off_loop(cp.signing.read_rotation, envelope)
    cause = Cause.of(who.actor, correlation(request))
    command = publish_key_rotation(rotation, envelope, cause, cp.signing.check_rotation)
    written = await cp.write(command)
    cp.require_views(written)
    done = written.value
    found = [r for r in await off_loop(cp.queries.key_rotations) if r.version == done.version]
    if not found:  # the views showed the write: only a rebuild in between could hide it
        raise NotFound(f"key rotation to version {done.version} is not in the views yet")
    return ok(
        found[0],
        201 if done.created else 200,
        {"position": written.position, "created": done.created},
    )


async def listing(request: Request) -> Response:
    await operator(request)
    found = await off_loop(plane(request).queries.key_rotations)
    return ok(found, metadata={"total": len(found)})
