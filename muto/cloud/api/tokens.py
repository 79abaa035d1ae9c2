"""POST /tokens, POST /tokens/{id}/revoke: provisioning credentials (operators only).

The secret is returned once, in the response to the request that issued it; only its
hash is stored."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from muto.cloud.api.context import body, correlation, off_loop, operator, plane
from muto.cloud.api.responses import ok
from muto.cloud.commands import Cause
from muto.cloud.tokens import Role, issue_token, revoke_token
from muto.domain.requests import TokenRequest


async def issue(request: Request) -> Response:
    who = await operator(request)
    wanted = await body(request, TokenRequest)
    cp = plane(request)
    if wanted.vehicle_id is not None:
        await off_loop(cp.queries.vehicle, wanted.vehicle_id)  # 404: not registered
    cause = Cause.of(who.actor, correlation(request))
    secret, command = issue_token(Role(wanted.role), wanted.vehicle_id, cause)
    written = await cp.write(command)
    return ok(
        {
            "tokenId": written.value,
            "token": secret,
            "role": wanted.role,
            "vehicleId": wanted.vehicle_id,
        },
        201,
        {"position": written.position},
    )


async def revoke(request: Request) -> Response:
    who = await operator(request)
    token_id = request.path_params["token_id"]
    cause = Cause.of(who.actor, correlation(request))
    written = await plane(request).write(revoke_token(token_id, cause))
    return ok({"tokenId": token_id, "revoked": True}, metadata={"position": written.position})
